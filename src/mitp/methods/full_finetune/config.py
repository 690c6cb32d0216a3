"""Full fine-tuning settings: the embedding inputs late fusion has, plus a lower backbone learning rate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...configuration import setting
from ..embedding import EmbeddingInputsConfig


@dataclass
class FullFinetuneConfig(EmbeddingInputsConfig):
    method: ClassVar[str] = "full_finetune"

    backbone_lr_scale: float = setting(
        0.1,
        "the towers train at train.lr * backbone_lr_scale, the head at train.lr (a scale, so an lr sweep moves both)",
    )

    def check(self) -> None:
        super().check()
        self.require_positive("backbone_lr_scale")
