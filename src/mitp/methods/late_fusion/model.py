"""Late fusion: the shared head on the frozen towers' pooled and projected embeddings.

The floor every method must beat, and the starting point of every prompt method: with
their gates closed, MITP, deep prompts and PMF compute exactly these features.
"""

from __future__ import annotations

import torch

from ...backbones import Backbone, TowerState
from ..base import Features, MultimodalClassifier
from ..layers import embedding
from .config import LateFusionConfig


class LateFusion(MultimodalClassifier):
    """Frozen towers, trainable head on their embeddings.

    With ``inputs="image"`` or ``"text"`` the head sees that tower's embedding alone and the
    other tower is never run: the unimodal controls of a dataset that should need both.
    """

    config: LateFusionConfig

    def __init__(self, config: LateFusionConfig, backbone: Backbone):
        super().__init__(config, backbone)
        widths = {"image": backbone.vision.embed_dim, "text": backbone.text.embed_dim}
        self.inputs = list(widths) if config.inputs == "both" else [config.inputs]
        if self.trains_backbone and config.inputs != "both":
            # full_finetune: a tower that is never run gets no gradient, so it does not train either.
            (backbone.text if config.inputs == "image" else backbone.vision).requires_grad_(False)
        self.head = self.build_head({name: widths[name] for name in self.inputs})

    def frozen_prefix(self) -> tuple[int, int] | None:
        # Frozen towers are all prefix: cached, training is the head on stored final states.
        if self.trains_backbone:
            return None
        return self.backbone.text.num_layers, self.backbone.vision.num_layers

    def prefix_features(self, t_state: TowerState, v_state: TowerState) -> Features:
        text, vision = self.backbone.text, self.backbone.vision
        with torch.no_grad():  # pooling and projection are frozen too
            features = {"image": embedding(vision, v_state), "text": embedding(text, t_state)}
        return {name: features[name] for name in self.inputs}

    def forward_features(self, pixel_values=None, input_ids=None, attention_mask=None, prefix=None,
                         **text_kwargs) -> Features:
        if not self.trains_backbone:
            return super().forward_features(pixel_values, input_ids, attention_mask, prefix=prefix, **text_kwargs)
        # full fine-tuning: the towers train, so they run with a graph (and only the ones the head reads)
        features = {}
        if "image" in self.inputs:
            features["image"] = self.backbone.vision(pixel_values=pixel_values)
        if "text" in self.inputs:
            features["text"] = self.backbone.text(input_ids=input_ids, attention_mask=attention_mask, **text_kwargs)
        return features
