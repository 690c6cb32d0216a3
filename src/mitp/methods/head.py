"""The classification head every method shares, configured once under ``head:`` in a run config.

A method returns its features as named parts (``image``, ``text`` and, for MITP with
``head_input: pooled+memory``, ``memory``); the head normalises them, fuses them and maps
them to logits. Because every method builds the same head from the same settings,
``mitp compare`` compares the methods' features, not their heads.

Normalisation matters more than it looks: frozen towers' embeddings can differ in scale by
an order of magnitude (DINOv2's CLS token has norm ~38, MiniLM's mean-pooled sentence ~5),
and one LayerNorm over the concatenation then lets the larger one swamp the other. So the
default normalises each part on its own (``norm: per_input``); docs/results.md measures it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from ..configuration import ValidatedConfig, setting


@dataclass
class HeadConfig(ValidatedConfig):
    key_prefix: ClassVar[str] = "head."

    hidden_dim: int | None = setting(
        None,
        "null: one Linear after the normalisation (a linear probe); an int: "
        "Linear -> GELU -> Dropout -> Linear with this hidden width",
    )
    dropout: float = setting(0.0, "dropout after the hidden layer's GELU (needs hidden_dim)")
    norm: Literal["per_input", "joint", "none"] = setting(
        "per_input", "a LayerNorm on each feature part, one on their concatenation, or none"
    )
    fusion: Literal["concat", "mean_of_linear"] = setting(
        "concat",
        "one head on the concatenated parts, or one Linear per part with the logits averaged (PMF's paper head)",
    )

    def check(self) -> None:
        self.require_at_least("hidden_dim", 1, allow_null=True)
        self.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        # Refuse settings that would be silently ignored.
        self.require(
            self.dropout == 0 or self.hidden_dim is not None,
            "dropout",
            "only applies to the hidden layer; set head.hidden_dim too",
        )
        self.require(
            self.fusion == "concat" or self.hidden_dim is None,
            "hidden_dim",
            "mean_of_linear heads are linear; use fusion: concat for a hidden layer",
        )
        self.require(
            self.fusion == "concat" or self.norm != "joint",
            "norm",
            "mean_of_linear has one head per part; use per_input or none",
        )


def _norm(width: int, enabled: bool) -> nn.Module:
    return nn.LayerNorm(width) if enabled else nn.Identity()


def _mlp(in_features: int, num_classes: int, hidden_dim: int | None, dropout: float) -> nn.Module:
    if hidden_dim is None:
        return nn.Linear(in_features, num_classes)
    return nn.Sequential(
        nn.Linear(in_features, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes)
    )


class FusionHead(nn.Module):
    """Logits from named feature parts, e.g. ``{"image": (B, 768), "text": (B, 768)}``."""

    def __init__(self, parts: dict[str, int], num_classes: int, config: HeadConfig):
        super().__init__()
        self.parts = dict(parts)
        self.config = config
        total = sum(parts.values())
        per_input = config.norm == "per_input"
        self.norms = nn.ModuleDict({name: _norm(width, per_input) for name, width in parts.items()})
        if config.fusion == "mean_of_linear":
            self.classifiers = nn.ModuleDict({name: nn.Linear(width, num_classes) for name, width in parts.items()})
        else:
            self.joint_norm = _norm(total, config.norm == "joint")
            self.classifier = _mlp(total, num_classes, config.hidden_dim, config.dropout)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        if set(features) != set(self.parts):
            raise ValueError(f"head expects feature parts {sorted(self.parts)}, got {sorted(features)}")
        normed = {name: self.norms[name](features[name]) for name in self.parts}
        if self.config.fusion == "mean_of_linear":
            return torch.stack([self.classifiers[name](x) for name, x in normed.items()]).mean(0)
        return self.classifier(self.joint_norm(torch.cat(list(normed.values()), dim=-1)))
