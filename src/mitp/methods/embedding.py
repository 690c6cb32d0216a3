"""Classifiers on the towers' pooled, projected embeddings: what late fusion and full fine-tuning share.

``EmbeddingClassifier`` feeds the shared head the image and/or text embedding of each tower run
end to end without extra tokens, exactly as the backbone embeds a pair. Frozen (late fusion),
the towers are all prefix: with the cache, training is the head on stored final states. With
``trains_backbone`` (full fine-tuning) the towers run with a graph and train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..backbones import Backbone, TowerState
from ..configuration import setting
from .base import Features, MultimodalClassifier
from .config import MethodConfig
from .layers import embedding


@dataclass
class EmbeddingInputsConfig(MethodConfig):
    """Which embeddings the head sees."""

    inputs: Literal["both", "image", "text"] = setting(
        "both",
        "the embeddings the head sees; one modality alone is the control that shows a dataset needs "
        "both (the unused tower is not run, and does not train)",
    )


class EmbeddingClassifier(MultimodalClassifier):
    """The shared head on the towers' embeddings; ``inputs`` picks both or one modality."""

    config: EmbeddingInputsConfig

    def __init__(self, config: EmbeddingInputsConfig, backbone: Backbone):
        super().__init__(config, backbone)
        widths = {"image": backbone.vision.embed_dim, "text": backbone.text.embed_dim}
        self.inputs = list(widths) if config.inputs == "both" else [config.inputs]
        if self.trains_backbone and config.inputs != "both":
            # A tower that is never run gets no gradient, so it does not train either.
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

    def forward_features(
        self, pixel_values=None, input_ids=None, attention_mask=None, prefix=None, modality_mask=None, **text_kwargs
    ) -> Features:
        # A missing modality reaches the towers as its blank input (no method-specific handling).
        if not self.trains_backbone:
            return super().forward_features(pixel_values, input_ids, attention_mask, prefix=prefix, **text_kwargs)
        # The towers train, so they run with a graph (and only the ones the head reads).
        features = {}
        if "image" in self.inputs:
            features["image"] = self.backbone.vision(pixel_values=pixel_values)
        if "text" in self.inputs:
            features["text"] = self.backbone.text(input_ids=input_ids, attention_mask=attention_mask, **text_kwargs)
        return features
