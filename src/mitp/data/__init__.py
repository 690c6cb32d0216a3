"""The data pipeline: one manifest format, converters, a validator and model-ready loading.

* :mod:`~mitp.data.manifest` -- the format (``train/val/test.jsonl`` + ``labels.json``)
* :mod:`~mitp.data.errors` -- named errors, each located by file and line
* :mod:`~mitp.data.prepare` -- converters from raw layouts (``mitp prepare``)
* :mod:`~mitp.data.check` -- validation (``mitp check``)
* :mod:`~mitp.data.preprocess` -- per-backbone tokenizer and image transform
* :mod:`~mitp.data.dataset` -- ``ManifestDataset``, collate, ``make_dataloader``

See docs/data.md.
"""

from .errors import (
    BadJson,
    BadLabels,
    BadRecord,
    CorruptImage,
    DuplicateId,
    EmptyText,
    ManifestError,
    MissingColumn,
    MissingFile,
    MissingImage,
    MissingSplitFile,
    UnknownLabel,
)
from .manifest import SPLITS, LabelSpace, Record, Sample, read_labels, read_split, write_manifest

_LAZY = {  # torch-dependent parts load on first use, so `mitp check` / `prepare` need not import them
    "ManifestDataset": "dataset",
    "unloadable_samples": "dataset",
    "build_datasets": "dataset",
    "make_dataloader": "dataset",
    "model_inputs": "dataset",
    "Preprocessor": "preprocess",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BadJson",
    "BadLabels",
    "BadRecord",
    "CorruptImage",
    "DuplicateId",
    "EmptyText",
    "LabelSpace",
    "ManifestError",
    "MissingColumn",
    "MissingFile",
    "MissingImage",
    "MissingSplitFile",
    "Record",
    "SPLITS",
    "Sample",
    "UnknownLabel",
    "read_labels",
    "read_split",
    "write_manifest",
    # lazily imported:
    "ManifestDataset",
    "Preprocessor",
    "unloadable_samples",
    "build_datasets",
    "make_dataloader",
    "model_inputs",
]
