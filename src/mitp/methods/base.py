"""The one model API every method implements (timm's features, then head).

``model(pixel_values=..., input_ids=..., attention_mask=..., labels=None)`` returns a
:class:`ClassifierOutput`. Inside, ``forward_features`` gives the method's features as named
parts (``{"image": ..., "text": ...}``) and ``forward_head`` turns them into logits with the
shared :class:`~mitp.methods.head.FusionHead` built from ``config.head``, the same for every
method. The backbone stays frozen and in eval mode; the trainable parameters are exactly those
outside ``model.backbone`` (unless a method says otherwise).

Most methods split into a *frozen prefix* (embeddings and the bottom layers of each
tower, which depend only on the inputs) and the rest. Such a method returns the prefix
depth from :meth:`frozen_prefix` and implements :meth:`prefix_features`; the prefix
states can then be computed once and cached across epochs (``model(prefix=...)``).

``modality_mask`` (B, 2) bool, [image present, text present], says which samples miss a
modality (their inputs are then a blank image / an empty text, see :mod:`mitp.data.missing`).
Every method accepts it; a method that acts on it (missing-aware prompts) sets
``reads_modality_mask`` and receives it in ``prefix_features``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Backbone, TowerState
from ..backbones.prompt_attention import PromptAttentionRecord
from ..backbones.towers import run_layers
from .config import MethodConfig
from .head import FusionHead

Features = dict[str, torch.Tensor]


@dataclass
class ClassifierOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


@dataclass
class Trace:
    """What a prompt method did in one forward pass, filled while ``model.trace`` is set (`mitp explain`).

    ``prompt_attention``: per tower and prompted step ("text/step0"), a record of how much the
    tokens attended to the prompts; ``similarity``: the hub's similarity matrix (B, M, M) per step.
    """

    prompt_attention: dict[str, PromptAttentionRecord] = field(default_factory=dict)
    similarity: list[torch.Tensor] = field(default_factory=list)

    def records(self, tower: str, steps: int) -> list[PromptAttentionRecord]:
        return [self.prompt_attention.setdefault(f"{tower}/step{k}", PromptAttentionRecord()) for k in range(steps)]


class MultimodalClassifier(nn.Module):
    """Base class: owns the frozen backbone, the loss and the trainable-parameter bookkeeping."""

    config_class: type[MethodConfig] = MethodConfig
    # Methods that train the backbone (full fine-tuning) set this to True.
    trains_backbone: bool = False
    # Methods that append prompts to the towers' layers (and can be traced by `mitp explain`).
    inserts_prompts: bool = False
    # Methods whose prefix_features take the batch's modality_mask (missing-aware ones).
    reads_modality_mask: bool = False

    def __init__(self, config: MethodConfig, backbone: Backbone):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.backbone = backbone
        self.trace: Trace | None = None
        backbone.requires_grad_(self.trains_backbone)
        if not self.trains_backbone:
            backbone.zero_grad(set_to_none=True)  # a frozen backbone never holds gradients

    def build_head(self, parts: dict[str, int]) -> FusionHead:
        """The shared head over this method's feature parts (name -> width)."""
        return FusionHead(parts, self.config.num_classes, self.config.head)

    def trace_records(self, tower: str, steps: int) -> list[PromptAttentionRecord] | None:
        return None if self.trace is None else self.trace.records(tower, steps)

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

    def encode_prefix(
        self, pixel_values, input_ids, attention_mask=None, **text_kwargs
    ) -> tuple[TowerState, TowerState]:
        """States of both towers at the input of the first layer that is not frozen prefix."""
        text_depth, vision_depth = self.frozen_prefix()
        text, vision = self.backbone.text, self.backbone.vision
        with torch.no_grad():  # nothing below needs gradients
            t_state = text.embed(input_ids=input_ids, attention_mask=attention_mask, **text_kwargs)
            v_state = vision.embed(pixel_values=pixel_values)
            return run_layers(text, t_state, 0, text_depth), run_layers(vision, v_state, 0, vision_depth)

    def prefix_features(self, text_state: TowerState, vision_state: TowerState) -> Features:
        """Feature parts from prefix states. Implemented by methods that define :meth:`frozen_prefix`
        (with a ``modality_mask`` keyword where ``reads_modality_mask`` is set)."""
        raise NotImplementedError

    def forward_features(
        self,
        pixel_values=None,
        input_ids=None,
        attention_mask=None,
        prefix: tuple[TowerState, TowerState] | None = None,
        modality_mask: torch.Tensor | None = None,
        **text_kwargs,
    ) -> Features:
        """Feature parts from raw inputs or cached ``prefix`` states; methods without a prefix override this."""
        if self.frozen_prefix() is None:
            raise NotImplementedError(f"{type(self).__name__} must implement forward_features or frozen_prefix")
        if prefix is None:
            prefix = self.encode_prefix(pixel_values, input_ids, attention_mask, **text_kwargs)
        if self.reads_modality_mask:
            return self.prefix_features(*prefix, modality_mask=modality_mask)
        return self.prefix_features(*prefix)

    def forward_head(self, features: Features) -> torch.Tensor:
        return self.head(features)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask=None,
        labels: torch.Tensor | None = None,
        prefix: tuple[TowerState, TowerState] | None = None,
        modality_mask: torch.Tensor | None = None,
        **text_kwargs,
    ) -> ClassifierOutput:
        """Logits (and loss with ``labels``) from raw inputs, or from cached ``prefix`` states."""
        features = self.forward_features(
            pixel_values, input_ids, attention_mask, prefix=prefix, modality_mask=modality_mask, **text_kwargs
        )
        logits = self.forward_head(features)
        return ClassifierOutput(logits, None if labels is None else self.loss(logits, labels))

    def diagnostics(self) -> dict[str, float]:
        """Scalars worth watching while training (gate openings, prompt norms, ...); logged by the trainer."""
        return {}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Exactly the tensors a checkpoint needs: every parameter that trains."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def param_groups(self, lr: float, method_lr_scale: float = 1.0) -> list[dict]:
        """Optimizer groups: the head at ``lr``, the method's own parameters (prompts, gates, hub,
        translators) at ``lr * method_lr_scale``. Empty groups are left out."""
        head = {id(p) for p in self.head.parameters()}
        trainable = [(id(p), p) for p in self.parameters() if p.requires_grad]
        groups = [
            {"name": "head", "params": [p for i, p in trainable if i in head], "lr": lr},
            {"name": "method", "params": [p for i, p in trainable if i not in head], "lr": lr * method_lr_scale},
        ]
        return [g for g in groups if g["params"]]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
