"""Converters from raw dataset layouts to the manifest format (``mitp prepare KIND``).

Each converter module registers itself (:func:`~mitp.data.prepare.registry.register_converter`)
and is found automatically. A converter reads a raw layout, writes ``train/val/test.jsonl`` +
``labels.json`` and returns a :class:`~mitp.data.prepare.common.Conversion` with per-split
records, dropped rows and why, notes, and warnings (including mismatches with the published
counts). Structural problems (missing split file, line that is not JSON, missing column,
unknown gold label) raise the named :class:`~mitp.data.errors.ManifestError` subclass instead.
"""

from __future__ import annotations

import importlib
import pkgutil

from .common import PUBLISHED, Conversion
from .registry import Converter, Option, converters, get_converter, option, register_converter


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("common", "registry"):
            importlib.import_module(f"{__name__}.{info.name}")


def prepare(kind: str, raw, out, **options) -> Conversion:
    """Convert the raw dataset of ``kind`` into a manifest directory ``out``."""
    return get_converter(kind).convert(raw, out, **options)


_discover()
from .fashion_ve import convert_fashion_ve  # noqa: E402  (registered on import, above)
from .food101 import convert_food101  # noqa: E402
from .mmimdb import MMIMDB_DROPPED_GENRES, MMIMDB_GENRES, convert_mmimdb  # noqa: E402
from .snli_ve import SNLI_VE_LABELS, convert_snli_ve  # noqa: E402
from .table import convert_table  # noqa: E402

__all__ = [
    "Conversion",
    "Converter",
    "MMIMDB_DROPPED_GENRES",
    "MMIMDB_GENRES",
    "Option",
    "PUBLISHED",
    "SNLI_VE_LABELS",
    "convert_fashion_ve",
    "convert_food101",
    "convert_mmimdb",
    "convert_snli_ve",
    "convert_table",
    "converters",
    "get_converter",
    "option",
    "prepare",
    "register_converter",
]
