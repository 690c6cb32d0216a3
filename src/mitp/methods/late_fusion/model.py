"""Late fusion: a head on CLIP's frozen, pooled and projected image and text embeddings.

The floor every method must beat. Also home of the pieces other baselines share:
:func:`fusion_head` (MITP's LayerNorm + Linear head, optionally with a hidden layer)
and :func:`embed_pair` (both towers end to end, as CLIP embeds a pair).
"""

from __future__ import annotations

import torch
from torch import nn

from ...backbones import Backbone, Tower, TowerState
from ..base import MultimodalClassifier
from .config import LateFusionConfig


def fusion_head(in_features: int, num_classes: int, hidden_dim: int | None = None,
                dropout: float = 0.0) -> nn.Sequential:
    """LayerNorm + Linear, the head MITP uses; with ``hidden_dim`` a GELU hidden layer in between."""
    if hidden_dim is None:
        return nn.Sequential(nn.LayerNorm(in_features), nn.Linear(in_features, num_classes))
    return nn.Sequential(nn.LayerNorm(in_features), nn.Linear(in_features, hidden_dim), nn.GELU(),
                         nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes))


def embedding(tower: Tower, state: TowerState) -> torch.Tensor:
    """The tower's joint-space embedding of the states after its last layer."""
    return tower.project(tower.pool(state))


def embed_pair(backbone: Backbone, pixel_values, input_ids, attention_mask=None, **text_kwargs) -> torch.Tensor:
    """[image embed; text embed] (B, d_v' + d_t'), every layer run without extra tokens."""
    image = backbone.vision(pixel_values=pixel_values)
    text = backbone.text(input_ids=input_ids, attention_mask=attention_mask, **text_kwargs)
    return torch.cat([image, text], dim=-1)


class LateFusion(MultimodalClassifier):
    """Frozen towers, trainable head on the concatenated embeddings.

    With ``inputs="image"`` or ``"text"`` the head sees that tower's embedding alone and the
    other tower is never run: the unimodal controls of a dataset that should need both.
    """

    config: LateFusionConfig

    def __init__(self, config: LateFusionConfig, backbone: Backbone):
        super().__init__(config, backbone)
        inputs = config.inputs
        in_features = ((backbone.vision.embed_dim if inputs in ("both", "image") else 0)
                       + (backbone.text.embed_dim if inputs in ("both", "text") else 0))
        if self.trains_backbone and inputs != "both":
            # full_finetune: a tower that is never run gets no gradient, so it does not train either.
            (backbone.text if inputs == "image" else backbone.vision).requires_grad_(False)
        self.head = fusion_head(in_features, config.num_classes, config.hidden_dim, config.dropout)

    def frozen_prefix(self) -> tuple[int, int] | None:
        # Frozen towers are all prefix: cached, training is the head on stored final states.
        if self.trains_backbone:
            return None
        return self.backbone.text.num_layers, self.backbone.vision.num_layers

    def classify_prefix(self, t_state: TowerState, v_state: TowerState) -> torch.Tensor:
        text, vision = self.backbone.text, self.backbone.vision
        with torch.no_grad():  # pooling and projection are frozen too
            image, words = embedding(vision, v_state), embedding(text, t_state)
        features = {"image": image, "text": words}.get(self.config.inputs)
        return self.head(torch.cat([image, words], dim=-1) if features is None else features)

    def classify(self, pixel_values, input_ids, attention_mask=None, **text_kwargs) -> torch.Tensor:
        if not self.trains_backbone:
            return super().classify(pixel_values, input_ids, attention_mask, **text_kwargs)
        # full fine-tuning: the towers train, so they run with a graph
        if self.config.inputs == "image":
            features = self.backbone.vision(pixel_values=pixel_values)
        elif self.config.inputs == "text":
            features = self.backbone.text(input_ids=input_ids, attention_mask=attention_mask, **text_kwargs)
        else:
            features = embed_pair(self.backbone, pixel_values, input_ids, attention_mask, **text_kwargs)
        return self.head(features)
