"""PMF settings (Li et al., CVPR 2023). Defaults follow the paper and docs/baselines.md.

The paper's head (mean of one linear head per tower) is the shared head with
``head: {fusion: mean_of_linear}``; by default PMF gets the same head as every method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import TASKS, MethodConfig


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
    # Zero-initialised gate (per head) on what the tokens read from the fusion pass's prompts,
    # as in MITP: PMF starts exactly at the frozen towers. false: the paper's ungated fusion.
    prompt_gate: bool = True

    def check(self) -> None:
        self.require_at_least("n_fusion_layers", 1)
        self.require_at_least("prompt_length", 1)
        self.require_positive("prompt_init_std")
        self.require_at_least("mapper_hidden", 1, allow_null=True)
