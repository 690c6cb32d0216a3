"""Full fine-tuning settings: late fusion's inputs plus a lower learning rate for the backbone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..late_fusion.config import LateFusionConfig


@dataclass
class FullFinetuneConfig(LateFusionConfig):
    method: ClassVar[str] = "full_finetune"

    # Backbone lr = lr * backbone_lr_scale; the head gets lr. A scale rather than an absolute
    # rate, so a learning-rate sweep moves both groups together.
    backbone_lr_scale: float = 0.1

    def check(self) -> None:
        super().check()
        self.require_positive("backbone_lr_scale")
