"""Named errors for everything that can be wrong with a dataset.

Every error names the file and, where there is one, the 1-based line::

    str(MissingImage("data/train.jsonl", 12, "image photos/x.jpg not found"))
    == "data/train.jsonl:12: image photos/x.jpg not found"

``kind`` is a short stable name (``missing_image``, ``bad_json``, ...) used in summaries.
"""

from __future__ import annotations

import os

from ..errors import MitpError


class ManifestError(MitpError):
    """A problem in a manifest or raw dataset file, located by file and line."""

    kind = "manifest_error"

    def __init__(self, path: str | os.PathLike | None, line: int | None = None, message: str | None = None):
        if message is None and line is None:
            # Built from one preformatted string: how torch's DataLoader re-raises an error from a
            # worker process (``type(err)(text)``), so the class survives workers.
            path, message = None, str(path)
        self.path = None if path is None else str(path)
        self.line = line
        self.message = message
        super().__init__(message if self.location is None else f"{self.location}: {message}")

    @property
    def location(self) -> str | None:
        """``file:line`` (or just ``file``) of the problem."""
        if self.path is None:
            return None
        return self.path if self.line is None else f"{self.path}:{self.line}"

    def __reduce__(self):  # picklable across DataLoader workers despite the custom __init__
        return (type(self), (self.path, self.line, self.message))


class MissingImage(ManifestError):
    """The image a sample names does not exist."""

    kind = "missing_image"


class CorruptImage(ManifestError):
    """The image exists but cannot be decoded (truncated, not an image, ...)."""

    kind = "corrupt_image"


class EmptyText(ManifestError):
    """A sample's text is empty or only whitespace."""

    kind = "empty_text"


class AbsentModality(ManifestError):
    """``"image": null`` or ``"text": null`` in a dataset not declared to allow missing modalities."""

    kind = "absent_modality"


class UnknownLabel(ManifestError):
    """A label that is not in ``labels.json`` (or not a known class of a raw dataset)."""

    kind = "unknown_label"


class BadJson(ManifestError):
    """A line (or file) that is not valid JSON."""

    kind = "bad_json"


class BadRecord(ManifestError):
    """Valid JSON/CSV whose fields are missing or have the wrong type."""

    kind = "bad_record"


class DuplicateId(ManifestError):
    """An id used by more than one sample (ids must be unique across all splits)."""

    kind = "duplicate_id"


class MissingFile(ManifestError):
    """A file or directory the format requires does not exist."""

    kind = "missing_file"


class MissingSplitFile(MissingFile):
    """A split file is missing: ``train/val/test.jsonl`` of a manifest, MM-IMDB's ``split.json``, ..."""

    kind = "missing_split_file"


class MissingColumn(ManifestError):
    """A CSV column / JSON field the converter was told to read is not there."""

    kind = "missing_column"


class BadLabels(ManifestError):
    """``labels.json`` does not have the required structure."""

    kind = "bad_labels"


class ExternalPath(ManifestError):
    """An image path that resolves outside the dataset directory (absolute, ``..``, a symlink)."""

    kind = "external_path"


class BadImageRoots(ManifestError):
    """``image_roots.json`` (the folders ``mitp prepare`` read images from) is malformed or names a
    folder that cannot be an image root."""

    kind = "bad_image_roots"


class EmptySplit(ManifestError):
    """A split with no sample to train or evaluate on (empty, or emptied by skipping bad samples)."""

    kind = "empty_split"


ERROR_KINDS = {
    cls.kind: cls
    for cls in (
        MissingImage,
        CorruptImage,
        EmptyText,
        AbsentModality,
        UnknownLabel,
        BadJson,
        BadRecord,
        DuplicateId,
        MissingFile,
        MissingSplitFile,
        MissingColumn,
        BadLabels,
        ExternalPath,
        BadImageRoots,
        EmptySplit,
    )
}

__all__ = [
    "AbsentModality",
    "BadImageRoots",
    "BadJson",
    "BadLabels",
    "BadRecord",
    "CorruptImage",
    "DuplicateId",
    "ERROR_KINDS",
    "EmptySplit",
    "EmptyText",
    "ExternalPath",
    "ManifestError",
    "MissingColumn",
    "MissingFile",
    "MissingImage",
    "MissingSplitFile",
    "UnknownLabel",
]
