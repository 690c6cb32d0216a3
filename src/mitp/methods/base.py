"""The one model API every method implements.

``model(pixel_values=..., input_ids=..., attention_mask=..., labels=None)`` returns a
:class:`ClassifierOutput`; the backbone stays frozen and in eval mode; the trainable
parameters are exactly those outside ``model.backbone`` (unless a method says otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Backbone
from .config import MethodConfig


@dataclass
class ClassifierOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class MultimodalClassifier(nn.Module):
    """Base class: owns the frozen backbone, the loss and the trainable-parameter bookkeeping."""

    config_class: type[MethodConfig] = MethodConfig
    # Methods that train the backbone (full fine-tuning) set this to True.
    trains_backbone: bool = False

    def __init__(self, config: MethodConfig, backbone: Backbone):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.backbone = backbone
        backbone.requires_grad_(self.trains_backbone)
        if not self.trains_backbone:
            backbone.zero_grad(set_to_none=True)  # a frozen backbone never holds gradients

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trains_backbone:
            self.backbone.eval()
        return self

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.task == "multi_label":
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return F.cross_entropy(logits, labels)

    def classify(self, pixel_values, input_ids, attention_mask=None, **text_kwargs) -> torch.Tensor:
        """Return logits (B, num_classes). Implemented by each method."""
        raise NotImplementedError

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask=None,
                labels: torch.Tensor | None = None, **text_kwargs) -> ClassifierOutput:
        logits = self.classify(pixel_values, input_ids, attention_mask, **text_kwargs)
        return ClassifierOutput(logits, None if labels is None else self.loss(logits, labels))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Exactly the tensors a checkpoint needs: every parameter that trains."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups; methods with per-part learning rates override this."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
