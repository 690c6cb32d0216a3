"""Building blocks the methods share: which layers to prompt, prompts, gates, translators, embeddings.

A method folder imports only from here, ``base``, ``config``, ``head``, ``embedding`` and the
backbone API, never from another method (tests/test_architecture.py)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..backbones import Tower, TowerState
from ..backbones.prompt_attention import PromptAttentionRecord
from ..backbones.towers import run_layers
from ..data.missing import CASES, missing_case
from .base import MultimodalClassifier
from .config import ConfigError, PromptLayersConfig


def interaction_layers(config: PromptLayersConfig, text_layers: int, vision_layers: int) -> tuple[list[int], list[int]]:
    """The (text, vision) layer index of every prompted step, checked against the towers."""
    if config.text_layers is not None:
        text, vision = list(config.text_layers), list(config.vision_layers)
    else:
        n = config.num_steps
        if n > text_layers:
            raise ConfigError("num_steps", f"{n} steps but the text tower has only {text_layers} layers")
        text = list(range(text_layers - n, text_layers))
        # Same relative depth: text layer i ends at fraction (i+1)/L_t of the tower.
        vision = [math.floor((i + 1) * vision_layers / text_layers + 0.5) - 1 for i in text]
        if any(b <= a for a, b in zip(vision, vision[1:])):
            raise ConfigError(
                "num_steps",
                f"{n} steps do not map onto distinct layers of a {vision_layers}-layer "
                "vision tower; give text_layers and vision_layers explicitly",
            )
    for key, layers, depth in (("text_layers", text, text_layers), ("vision_layers", vision, vision_layers)):
        if layers[-1] >= depth:
            raise ConfigError(key, f"layer {layers[-1]} is out of range for a {depth}-layer tower")
    return text, vision


def gaussian_prompt(length: int, width: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(length, width) * std)


def prompt_list(steps: int, length: int, width: int, std: float) -> nn.ParameterList:
    return nn.ParameterList(gaussian_prompt(length, width, std) for _ in range(steps))


def prompt_gates(steps: int, heads: int, enabled: bool) -> nn.Parameter | None:
    """One gate per prompted layer and attention head, all starting at 0 (None when gating is off)."""
    return nn.Parameter(torch.zeros(steps, heads)) if enabled else None


def translator(source: int, target: int, hidden: int) -> nn.Sequential:
    """A non-linear map from one tower's width to the other's (PMF's query translator)."""
    return nn.Sequential(nn.Linear(source, hidden), nn.ReLU(), nn.Linear(hidden, target))


def batched(prompt: torch.Tensor, batch: int) -> torch.Tensor:
    """A (L, W) prompt shared by the batch as (B, L, W); a per-sample (B, L, W) prompt as it is."""
    return prompt if prompt.dim() == 3 else prompt.expand(batch, -1, -1)


class MissingCasePrompts(nn.Module):
    """One learned prompt per missing case (:data:`mitp.data.missing.CASES`), added to a tower's prompts.

    Zero at init, so a missing-aware method starts where its plain version does."""

    def __init__(self, length: int, width: int):
        super().__init__()
        self.prompts = nn.Parameter(torch.zeros(len(CASES), length, width))

    def forward(self, modality_mask: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, L, W): each sample's case prompt (every sample complete when ``modality_mask`` is None)."""
        if modality_mask is None:
            case = torch.zeros(batch, dtype=torch.long, device=self.prompts.device)
        else:
            case = missing_case(modality_mask.bool()).to(self.prompts.device)
        return self.prompts[case]


def embedding(tower: Tower, state: TowerState) -> torch.Tensor:
    """The tower's joint-space embedding of the states after its last layer."""
    return tower.project(tower.pool(state))


def run_prompted(
    tower: Tower,
    state: TowerState,
    layers: list[int],
    prompts: nn.ParameterList,
    gates: torch.Tensor | None,
    records: list | None = None,
) -> TowerState:
    """From the first prompted layer to the top; ``prompts[k]`` joins layer ``layers[k]``, outputs dropped."""
    batch = state.hidden.shape[0]
    position = layers[0]
    for k, (layer, prompt) in enumerate(zip(layers, prompts)):
        state = run_layers(tower, state, position, layer)
        state, _ = tower.run_layer(
            layer, state, batched(prompt, batch), gate=step_gate(gates, k), record=step_record(records, k)
        )
        position = layer + 1
    return run_layers(tower, state, position, tower.num_layers)


def step_gate(gates: torch.Tensor | None, step: int) -> torch.Tensor | None:
    return None if gates is None else gates[step]


def step_record(records: list | None, step: int) -> PromptAttentionRecord | None:
    return None if records is None else records[step]


def gate_diagnostics(prefix: str, gates: torch.Tensor | None) -> dict[str, float]:
    """Mean |tanh(g)| per prompted step: how far each gate has opened (0 = frozen model)."""
    if gates is None:
        return {}
    opened = torch.tanh(gates.detach()).abs().mean(1)
    return {f"{prefix}/step{k}": value for k, value in enumerate(opened.tolist())}


def prompt_norm_diagnostics(prefix: str, prompts) -> dict[str, float]:
    """Mean L2 norm of a prompt's tokens, per prompt tensor."""
    return {f"{prefix}/{k}": p.detach().norm(dim=-1).mean().item() for k, p in enumerate(prompts)}


class PromptedClassifier(MultimodalClassifier):
    """A method that inserts prompts into chosen layers of each tower (``text_layers``, ``vision_layers``), the
    tokens reading them through zero-initialised per-head gates; the layers below the first prompted ones are
    its frozen prefix."""

    inserts_prompts = True

    def __init__(self, config, backbone, layers: tuple[list[int], list[int]]):
        super().__init__(config, backbone)
        self.text_layers, self.vision_layers = list(layers[0]), list(layers[1])

    def add_gates(self) -> None:
        """One gate per prompted layer of each tower (a method adds them after its prompts, so that parameters
        keep the order its checkpoints were written in)."""
        steps, enabled = len(self.text_layers), self.config.prompt_gate
        self.text_gates = prompt_gates(steps, self.backbone.text.num_heads, enabled)
        self.vision_gates = prompt_gates(steps, self.backbone.vision.num_heads, enabled)

    def frozen_prefix(self) -> tuple[int, int]:
        # Layers below the first prompted layer see no prompts: frozen, input-only.
        return self.text_layers[0], self.vision_layers[0]

    def diagnostics(self) -> dict[str, float]:
        return {**gate_diagnostics("gate/text", self.text_gates), **gate_diagnostics("gate/vision", self.vision_gates)}
