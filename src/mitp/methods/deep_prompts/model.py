"""Deep prompt tuning (VPT-deep style) on both towers, with no exchange between them.

Each tower gets a fresh trainable prompt at each of MITP's interaction layers; the
layer runs on [tokens; prompts] and the prompt outputs are discarded (the next
prompted layer inserts its own new prompts). Extraction layers in between run on
the plain sequence, as in MITP. The head is MITP's. Comparing with MITP isolates
what the memory hub adds: same layers, same prompt length, same head.
"""

from __future__ import annotations

import torch
from torch import nn

from ...backbones import Backbone, Tower, TowerState
from ..base import MultimodalClassifier
from ..late_fusion.model import embedding, fusion_head
from ...backbones.towers import run_layers
from ..mitp.model import interaction_layers
from .config import DeepPromptsConfig


def prompt_list(steps: int, length: int, width: int, std: float) -> nn.ParameterList:
    return nn.ParameterList(nn.Parameter(torch.randn(length, width) * std) for _ in range(steps))


def run_prompted(tower: Tower, state: TowerState, layers: list[int], prompts: nn.ParameterList) -> TowerState:
    """From the first prompted layer to the top; ``prompts[k]`` joins layer ``layers[k]``."""
    batch = state.hidden.shape[0]
    position = layers[0]
    for layer, prompt in zip(layers, prompts):
        state = run_layers(tower, state, position, layer)
        state, _ = tower.run_layer(layer, state, prompt.expand(batch, -1, -1))  # prompt outputs dropped
        position = layer + 1
    return run_layers(tower, state, position, tower.num_layers)


class DeepPrompts(MultimodalClassifier):
    """Independent deep prompts per tower at MITP's interaction layers, late-fusion head."""

    config: DeepPromptsConfig

    def __init__(self, config: DeepPromptsConfig, backbone: Backbone):
        super().__init__(config, backbone)
        text, vision = backbone.text, backbone.vision
        self.text_layers, self.vision_layers = interaction_layers(config, text.num_layers, vision.num_layers)
        steps, length, std = len(self.text_layers), config.prompt_length, config.prompt_init_std
        self.text_prompts = prompt_list(steps, length, text.width, std)
        self.vision_prompts = prompt_list(steps, length, vision.width, std)
        self.head = fusion_head(vision.embed_dim + text.embed_dim, config.num_classes)

    def frozen_prefix(self) -> tuple[int, int]:
        # Frozen layers below each tower's first prompted layer.
        return self.text_layers[0], self.vision_layers[0]

    def classify_prefix(self, t_state: TowerState, v_state: TowerState) -> torch.Tensor:
        text, vision = self.backbone.text, self.backbone.vision
        t_state = run_prompted(text, t_state, self.text_layers, self.text_prompts)
        v_state = run_prompted(vision, v_state, self.vision_layers, self.vision_prompts)
        return self.head(torch.cat([embedding(vision, v_state), embedding(text, t_state)], dim=-1))
