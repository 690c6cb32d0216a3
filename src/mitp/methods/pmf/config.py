"""PMF settings (Li et al., CVPR 2023). Defaults follow the paper and docs/baselines.md.

The paper's head (mean of one linear head per tower) is the shared head with
``head: {fusion: mean_of_linear}``; by default PMF gets the same head as every method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...configuration import setting
from ..config import MethodConfig


@dataclass
class PMFConfig(MethodConfig):
    method: ClassVar[str] = "pmf"

    n_fusion_layers: int = setting(2, "the last n layers of each tower are fusion layers")
    prompt_length: int = setting(4, "tokens per prompt kind (query, query context, fusion context), tower and layer")
    prompt_init_std: float = setting(0.02, "std of the Gaussian init of the prompts")
    mapper_hidden: int | None = setting(None, "hidden width of the query translators; null: half the source width")
    prompt_gate: bool = setting(
        True,
        "zero-initialised gate per head on what the tokens read from the fusion "
        "pass's prompts (PMF starts at the frozen towers); false: the paper's fusion",
    )

    def check(self) -> None:
        self.require_at_least("n_fusion_layers", 1)
        self.require_at_least("prompt_length", 1)
        self.require_positive("prompt_init_std")
        self.require_at_least("mapper_hidden", 1, allow_null=True)
