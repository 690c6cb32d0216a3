"""Full fine-tuning settings: the embedding inputs late fusion has, plus a lower backbone learning rate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..embedding import EmbeddingInputsConfig


@dataclass
class FullFinetuneConfig(EmbeddingInputsConfig):
    method: ClassVar[str] = "full_finetune"

    # Backbone lr = lr * backbone_lr_scale; the head gets lr. A scale rather than an absolute
    # rate, so a learning-rate sweep moves both groups together.
    backbone_lr_scale: float = 0.1

    def check(self) -> None:
        super().check()
        self.require_positive("backbone_lr_scale")
