"""Late-fusion (linear probe) settings: the shared head on frozen embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..embedding import EmbeddingInputsConfig


@dataclass
class LateFusionConfig(EmbeddingInputsConfig):
    method: ClassVar[str] = "late_fusion"
