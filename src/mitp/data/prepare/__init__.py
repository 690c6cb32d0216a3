"""Converters from raw dataset layouts to the manifest format (``mitp prepare KIND``).

Each converter reads a raw layout, writes ``train/val/test.jsonl`` + ``labels.json`` and
returns a :class:`~mitp.data.prepare.common.Conversion` with per-split records, dropped
rows and why, notes, and warnings (including mismatches with the published counts).
Structural problems (missing split file, line that is not JSON, missing column, unknown
gold label) raise the named :class:`~mitp.data.errors.ManifestError` subclass instead.
"""

from __future__ import annotations

from .common import PUBLISHED, Conversion
from .food101 import convert_food101
from .mmimdb import MMIMDB_DROPPED_GENRES, MMIMDB_GENRES, convert_mmimdb
from .snli_ve import SNLI_VE_LABELS, convert_snli_ve
from .table import convert_table

KINDS = ("food101", "mmimdb", "snli-ve", "jsonl", "csv")


def prepare(kind: str, raw, out, **options) -> Conversion:
    """Convert the raw dataset of ``kind`` into a manifest directory ``out``."""
    if kind == "food101":
        return convert_food101(raw, out, **options)
    if kind == "mmimdb":
        return convert_mmimdb(raw, out, **options)
    if kind == "snli-ve":
        return convert_snli_ve(raw, out, **options)
    if kind in ("jsonl", "csv"):
        return convert_table(kind, options.pop("input"), out, raw, **options)
    raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")


__all__ = [
    "Conversion", "KINDS", "MMIMDB_DROPPED_GENRES", "MMIMDB_GENRES", "PUBLISHED", "SNLI_VE_LABELS",
    "convert_food101", "convert_mmimdb", "convert_snli_ve", "convert_table", "prepare",
]
