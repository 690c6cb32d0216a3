"""Late-fusion (linear probe) settings: the shared head on frozen embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import TASKS, MethodConfig

INPUTS = ("both", "image", "text")


@dataclass
class LateFusionConfig(MethodConfig):
    method: ClassVar[str] = "late_fusion"
    choices: ClassVar[dict] = {"task": TASKS, "inputs": INPUTS}

    # Which embeddings the head sees: both, or one modality alone. The unimodal settings are the
    # controls that show a dataset needs both modalities (docs/fashion-ve.md); under full_finetune
    # the unused tower is not run and does not train.
    inputs: str = "both"
