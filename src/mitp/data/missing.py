"""Missing modalities: which samples lose their image or text, and what reaches the model instead.

The protocol is that of missing-aware prompts (Lee et al., CVPR 2023): a missing image is
replaced by a blank image (every normalised pixel 1.0) and a missing text by an empty text (the
tokenizer's special tokens only). A ``modality_mask`` (B, 2) travels in every batch: column 0
says the image is there, column 1 the text.

Simulated missingness (``train.missing`` / ``eval.missing``) is a fixed drop pattern, not a
coin flip per epoch: the samples are ranked by a hash of ``(seed, id)``; the first
``round(image * N)`` lose their image, the next ``round(text * N)`` their text, the next
``round(both * N)`` both. So the pattern depends only on the seed and the ids (not on order,
process count or epoch), a higher rate drops a superset of a lower one's samples, and a sample
never loses both unless ``both`` asks for it. Samples that already miss a modality in the
manifest (``"image": null`` with ``data.allow_missing``) are not candidates for a simulated drop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mitp.configuration import ValidatedConfig, setting

IMAGE, TEXT = 0, 1  # columns of a modality mask
MODALITIES = ("image", "text")
# Missing cases, the index of each case's prompt in a missing-aware method.
CASES = ("complete", "image_missing", "text_missing", "both_missing")


@dataclass
class MissingConfig(ValidatedConfig):
    """Fractions of a split's samples that lose a modality (see the module docs for the pattern)."""

    image: float = setting(0.0, "fraction of the samples whose image is dropped (a blank image reaches the model)")
    text: float = setting(
        0.0, "fraction of the samples whose text is dropped (the tokenizer's special tokens only reach the model)"
    )
    both: float = setting(0.0, "fraction of the samples that lose both (none unless asked)")
    seed: int = setting(0, "which samples lose what depends only on this seed and the sample ids")

    def check(self) -> None:
        for name in ("image", "text", "both"):
            value = getattr(self, name)
            self.require(0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value}")
        total = self.image + self.text + self.both
        self.require(
            total <= 1.0 + 1e-9,
            "image",
            f"image + text + both must be <= 1 (a sample loses at most one case), got {total:g}",
        )

    @property
    def active(self) -> bool:
        return self.image + self.text + self.both > 0


@dataclass
class TrainMissingConfig(MissingConfig):
    key_prefix: ClassVar[str] = "train.missing."


@dataclass
class EvalMissingConfig(MissingConfig):
    key_prefix: ClassVar[str] = "eval.missing."


def _rank_key(seed: int, sample_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()


def drop_pattern(ids: list[str], config: MissingConfig | None, present: np.ndarray | None = None) -> np.ndarray:
    """The modality mask (N, 2) of a split: ``present`` (what the manifest has; default all) with the
    simulated drops of ``config`` applied."""
    mask = np.ones((len(ids), 2), dtype=bool) if present is None else np.array(present, dtype=bool, copy=True)
    if config is None or not config.active or not ids:
        return mask
    candidates = [i for i in np.flatnonzero(mask.all(1))]
    candidates.sort(key=lambda i: _rank_key(config.seed, ids[i]))
    n = len(ids)
    start = 0
    for columns, rate in (((IMAGE,), config.image), ((TEXT,), config.text), ((IMAGE, TEXT), config.both)):
        count = min(int(round(rate * n)), len(candidates) - start)
        for i in candidates[start : start + count]:
            mask[i, list(columns)] = False
        start += count
    return mask


def missing_case(mask):
    """Index into :data:`CASES` per row of a boolean modality mask (NumPy array or torch tensor)."""
    image, text = mask[:, IMAGE], mask[:, TEXT]
    if isinstance(mask, np.ndarray):
        return (~image).astype(np.int64) + 2 * (~text).astype(np.int64)
    return (~image).long() + 2 * (~text).long()


def pattern_digest(mask: np.ndarray) -> str:
    """A short hash of a drop pattern ("" when nothing is missing): part of the prefix cache's key."""
    if mask.all():
        return ""
    return hashlib.sha256(np.packbits(mask).tobytes() + str(mask.shape).encode()).hexdigest()[:16]


__all__ = [
    "CASES",
    "EvalMissingConfig",
    "IMAGE",
    "MODALITIES",
    "MissingConfig",
    "TEXT",
    "TrainMissingConfig",
    "drop_pattern",
    "missing_case",
    "pattern_digest",
]
