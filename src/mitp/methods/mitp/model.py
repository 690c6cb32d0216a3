"""MITP: temporal prompts at paired interaction layers, exchanged through a memory hub.

Per step k: each tower runs its interaction layer on [tokens; prompts] (acquiring),
the prompt outputs meet in the hub (consolidation), and the hub memory becomes the
next step's prompts (activation). See docs/method.md for every choice made here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...backbones import Backbone, TowerState
from ...backbones.towers import run_layers
from ..base import MultimodalClassifier
from ..config import ConfigError
from .config import MITPConfig


def interaction_layers(config: MITPConfig, text_layers: int, vision_layers: int) -> tuple[list[int], list[int]]:
    """The (text, vision) layer index of every interaction step, checked against the towers."""
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
            raise ConfigError("num_steps", f"{n} steps do not map onto distinct layers of a {vision_layers}-layer "
                                           "vision tower; give text_layers and vision_layers explicitly")
    for key, layers, depth in (("text_layers", text, text_layers), ("vision_layers", vision, vision_layers)):
        if layers[-1] >= depth:
            raise ConfigError(key, f"layer {layers[-1]} is out of range for a {depth}-layer tower")
    return text, vision


class MemoryHub(nn.Module):
    """Consolidation in the text width: vision prompts enter through ``vision_proj`` (P_v).

    similarity: S = softmax(cos(p_t, P_v p_v) / tau);  m_t = p_t + S q,  m_v = q + S^T p_t
    mean:       m_t = p_t + mean(q),                  m_v = q + mean(p_t)
    none:       m_t = p_t,                            m_v = q
    with q = P_v p_v and an optional LayerNorm on each memory.
    """

    def __init__(self, text_width: int, vision_width: int, mode: str = "similarity", tau: float = 0.1,
                 norm: bool = True):
        super().__init__()
        self.mode = mode
        self.tau = tau
        self.vision_proj = nn.Linear(vision_width, text_width)
        self.text_norm = nn.LayerNorm(text_width) if norm else nn.Identity()
        self.vision_norm = nn.LayerNorm(text_width) if norm else nn.Identity()

    def similarity(self, p_t: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(p_t, dim=-1) @ F.normalize(q, dim=-1).transpose(1, 2)
        return torch.softmax(cos / self.tau, dim=-1)

    def forward(self, p_t: torch.Tensor, p_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.vision_proj(p_v)
        if self.mode == "similarity":
            s = self.similarity(p_t, q)
            m_t, m_v = p_t + s @ q, q + s.transpose(1, 2) @ p_t
        elif self.mode == "mean":
            m_t, m_v = p_t + q.mean(1, keepdim=True), q + p_t.mean(1, keepdim=True)
        else:
            m_t, m_v = p_t, q
        return self.text_norm(m_t), self.vision_norm(m_v)


class MITP(MultimodalClassifier):
    """Memory-Inspired Temporal Prompt Interaction on a frozen two-tower backbone."""

    config: MITPConfig

    def __init__(self, config: MITPConfig, backbone: Backbone):
        super().__init__(config, backbone)
        d_t, d_v = backbone.text.width, backbone.vision.width
        self.text_layers, self.vision_layers = interaction_layers(
            config, backbone.text.num_layers, backbone.vision.num_layers)
        steps, length, std = len(self.text_layers), config.prompt_length, config.prompt_init_std
        uses_memory = config.head_input == "pooled+memory"

        self.text_prompt = nn.Parameter(torch.randn(length, d_t) * std)
        self.vision_prompt = None
        if config.vision_init == "independent":
            self.vision_prompt = nn.Parameter(torch.randn(length, d_v) * std)
        # W, b: text-to-vision map for the first vision prompt and, when tied, every later one.
        needs_shared_map = config.vision_init == "linear" or (config.tied_generators and steps > 1)
        self.text_to_vision = nn.Linear(d_t, d_v) if needs_shared_map else None
        self.generators = None
        if not config.tied_generators and steps > 1:
            self.generators = nn.ModuleList(nn.Linear(d_t, d_v) for _ in range(steps - 1))
        # With one step and a pooled head the hub output would be unused, so it is not built.
        self.hub = None
        if steps > 1 or uses_memory:
            self.hub = MemoryHub(d_t, d_v, config.hub, config.tau, config.hub_norm)

        head_in = backbone.text.embed_dim + backbone.vision.embed_dim + (d_t if uses_memory else 0)
        self.head = nn.Sequential(nn.LayerNorm(head_in), nn.Linear(head_in, config.num_classes))

    def initial_prompts(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        p_t = self.text_prompt
        p_v = self.text_to_vision(p_t) if self.vision_prompt is None else self.vision_prompt
        return p_t.expand(batch, -1, -1), p_v.expand(batch, -1, -1)

    def vision_generator(self, step: int) -> nn.Module:
        """Map from the hub's vision memory to the vision prompts of step ``step + 1``."""
        return self.text_to_vision if self.generators is None else self.generators[step]

    def frozen_prefix(self) -> tuple[int, int]:
        # Layers below the first interaction layer see no prompts: frozen, input-only.
        return self.text_layers[0], self.vision_layers[0]

    def classify_prefix(self, t_state: TowerState, v_state: TowerState) -> torch.Tensor:
        text, vision = self.backbone.text, self.backbone.vision
        t_pos, v_pos = self.frozen_prefix()
        p_t, p_v = self.initial_prompts(t_state.hidden.shape[0])
        memory = None
        last = len(self.text_layers) - 1
        for step, (t_layer, v_layer) in enumerate(zip(self.text_layers, self.vision_layers)):
            t_state = run_layers(text, t_state, t_pos, t_layer)
            v_state = run_layers(vision, v_state, v_pos, v_layer)
            t_state, out_t = text.run_layer(t_layer, t_state, p_t)   # acquiring
            v_state, out_v = vision.run_layer(v_layer, v_state, p_v)
            t_pos, v_pos = t_layer + 1, v_layer + 1
            if self.hub is None or (step == last and self.config.head_input == "pooled"):
                continue
            m_t, m_v = self.hub(out_t, out_v)                          # consolidation
            if step < last:
                p_t, p_v = m_t, self.vision_generator(step)(m_v)       # activation
            else:  # last step, reached only when the head reads the memory
                memory = torch.cat([m_t, m_v], dim=1).mean(1)

        t_state = run_layers(text, t_state, t_pos, text.num_layers)
        v_state = run_layers(vision, v_state, v_pos, vision.num_layers)
        features = [vision.project(vision.pool(v_state)), text.project(text.pool(t_state))]
        if memory is not None:
            features.append(memory)
        return self.head(torch.cat(features, dim=-1))
