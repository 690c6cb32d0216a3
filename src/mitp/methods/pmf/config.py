"""PMF settings (Li et al., CVPR 2023). Defaults follow the paper and docs/baselines.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import TASKS, ConfigError, MethodConfig


@dataclass
class PMFConfig(MethodConfig):
    method: ClassVar[str] = "pmf"
    choices: ClassVar[dict] = {"task": TASKS}

    # The last n_fusion_layers layers of each tower are fusion layers.
    n_fusion_layers: int = 2
    # Tokens per prompt type (query, query context, fusion context), per tower and fusion layer.
    prompt_length: int = 4
    prompt_init_std: float = 0.02
    # Hidden size of the query translators; null = half the source tower's width.
    mapper_hidden: int | None = None

    def check(self) -> None:
        if self.n_fusion_layers < 1:
            raise ConfigError("n_fusion_layers", f"must be >= 1, got {self.n_fusion_layers}")
        if self.prompt_length < 1:
            raise ConfigError("prompt_length", f"must be >= 1, got {self.prompt_length}")
        if self.prompt_init_std <= 0:
            raise ConfigError("prompt_init_std", f"must be > 0, got {self.prompt_init_std}")
        if self.mapper_hidden is not None and self.mapper_hidden < 1:
            raise ConfigError("mapper_hidden", f"must be >= 1 or null, got {self.mapper_hidden}")
