"""The one model API every method implements.

``model(pixel_values=..., input_ids=..., attention_mask=..., labels=None)`` returns a
:class:`ClassifierOutput`; the backbone stays frozen and in eval mode; the trainable
parameters are exactly those outside ``model.backbone`` (unless a method says otherwise).

Most methods split into a *frozen prefix* (embeddings and the bottom layers of each
tower, which depend only on the inputs) and the rest. Such a method returns the prefix
depth from :meth:`frozen_prefix` and implements :meth:`classify_prefix`; the prefix
states can then be computed once and cached across epochs (``model(prefix=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Backbone, TowerState
from ..backbones.towers import run_layers
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

    # --- the frozen prefix -----------------------------------------------------------------
    def frozen_prefix(self) -> tuple[int, int] | None:
        """How many bottom (text, vision) layers run frozen on the inputs alone; None if not separable."""
        return None

    def encode_prefix(self, pixel_values, input_ids, attention_mask=None, **text_kwargs
                      ) -> tuple[TowerState, TowerState]:
        """States of both towers at the input of the first layer that is not frozen prefix."""
        text_depth, vision_depth = self.frozen_prefix()
        text, vision = self.backbone.text, self.backbone.vision
        with torch.no_grad():  # nothing below needs gradients
            t_state = text.embed(input_ids=input_ids, attention_mask=attention_mask, **text_kwargs)
            v_state = vision.embed(pixel_values=pixel_values)
            return run_layers(text, t_state, 0, text_depth), run_layers(vision, v_state, 0, vision_depth)

    def classify_prefix(self, text_state: TowerState, vision_state: TowerState) -> torch.Tensor:
        """Logits from prefix states. Implemented by methods that define :meth:`frozen_prefix`."""
        raise NotImplementedError

    def classify(self, pixel_values, input_ids, attention_mask=None, **text_kwargs) -> torch.Tensor:
        """Return logits (B, num_classes); methods without a frozen prefix override this."""
        if self.frozen_prefix() is None:
            raise NotImplementedError(f"{type(self).__name__} must implement classify or frozen_prefix")
        return self.classify_prefix(*self.encode_prefix(pixel_values, input_ids, attention_mask, **text_kwargs))

    def forward(self, pixel_values: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                attention_mask=None, labels: torch.Tensor | None = None,
                prefix: tuple[TowerState, TowerState] | None = None, **text_kwargs) -> ClassifierOutput:
        """Logits (and loss with ``labels``) from raw inputs, or from cached ``prefix`` states."""
        if prefix is not None:
            logits = self.classify_prefix(*prefix)
        else:
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
