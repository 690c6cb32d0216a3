"""Late-fusion (linear probe) settings: the head on frozen CLIP embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import TASKS, ConfigError, MethodConfig

INPUTS = ("both", "image", "text")


@dataclass
class LateFusionConfig(MethodConfig):
    method: ClassVar[str] = "late_fusion"
    choices: ClassVar[dict] = {"task": TASKS, "inputs": INPUTS}

    # null: LayerNorm + Linear (a linear probe); an int: one hidden layer of that size with GELU.
    hidden_dim: int | None = None
    # Dropout after the hidden layer's GELU; only meaningful with hidden_dim.
    dropout: float = 0.0
    # Which embeddings the head sees: both (concatenated), or one modality alone. The unimodal
    # settings are the controls that show a dataset needs both modalities (docs/fashion-ve.md);
    # under full_finetune the unused tower is not run and does not train.
    inputs: str = "both"

    def check(self) -> None:
        self.require_at_least("hidden_dim", 1, allow_null=True)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.dropout > 0 and self.hidden_dim is None:
            # A linear probe has no hidden layer to drop from; refuse rather than ignore it silently.
            raise ConfigError("dropout", "only applies to the hidden layer; set hidden_dim too")
