"""The manifest format every dataset is converted to, and its reader and writer.

A prepared dataset is a directory holding ``train.jsonl``, ``val.jsonl``, ``test.jsonl``
and ``labels.json``. Each JSONL line is one sample::

    {"id": "...", "image": "images/x.jpg", "text": "...", "label": "cat"}        # single-label
    {"id": "...", "image": "/abs/y.jpg",   "text": "...", "label": ["a", "b"]}    # multi-label

``image`` is relative to the manifest directory (absolute paths are allowed). A sample that
truly lacks a modality has ``"image": null`` or ``"text": null``; such lines are accepted only
when the dataset is read with ``allow_missing`` (a run's ``data.allow_missing: true``) and are an
:class:`~mitp.data.errors.AbsentModality` error otherwise. Never both.
``labels.json`` is ``{"task": "single_label" | "multi_label", "labels": [names in fixed order]}``;
the order of ``labels`` is the order of the class indices / multi-hot columns.

The lines ``mitp predict --manifest`` reads are checked by the same :func:`parse_line` with
``for_prediction=True``: ``id`` and ``label`` may be left out, ``image`` or ``text`` may be null or absent.
Ids are unique across a dataset's splits: :class:`IdOwners` is that one rule, for readers, writers and
converters alike.

Over 400 lines because it is the whole format in one place: the one line validator, text rule, id rule and
writer that training, ``mitp check``, ``mitp predict`` and every converter share.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import write_lines_atomic, write_text_atomic
from ..jsonio import JSONError, has_lone_surrogate, parse_json, read_json
from .errors import (
    AbsentModality,
    BadImageRoots,
    BadJson,
    BadLabels,
    BadRecord,
    DuplicateId,
    EmptyText,
    ExternalPath,
    ManifestError,
    MissingFile,
    MissingSplitFile,
    UnknownLabel,
)

SPLITS = ("train", "val", "test")
# How raw datasets name their splits (case and surrounding spaces ignored): the manifest split of each.
SPLIT_ALIASES = {"train": "train", "validation": "val", "valid": "val", "dev": "val", "val": "val", "test": "test"}
TASKS = ("single_label", "multi_label")
LABELS_FILE = "labels.json"
# The folders `mitp prepare` read images from, outside the dataset directory: images under them are the
# dataset's own (no allow_external_paths needed); anything else outside stays refused.
IMAGE_ROOTS_FILE = "image_roots.json"
IMAGES_DIR = "images"  # where converters that write images put them, inside the dataset directory
# What a prepared dataset is made of: what `mitp prepare --overwrite` replaces.
DATASET_FILES = (*(f"{split}.jsonl" for split in SPLITS), LABELS_FILE, IMAGE_ROOTS_FILE, IMAGES_DIR)
REQUIRED_FIELDS = ("id", "image", "text", "label")


def split_named(name) -> str | None:
    """The manifest split a raw dataset's split name means (``dev`` -> ``val``), or None."""
    return SPLIT_ALIASES.get(str(name).strip().lower())


def split_path(data_dir: str | os.PathLike, split: str) -> Path:
    return Path(data_dir) / f"{split}.jsonl"


@dataclass(frozen=True)
class LabelSpace:
    """The task and the ordered label names of a dataset (``labels.json``)."""

    task: str
    labels: tuple[str, ...]
    index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "index", {name: i for i, name in enumerate(self.labels)})

    @property
    def multi_label(self) -> bool:
        return self.task == "multi_label"

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        return json.dumps({"task": self.task, "labels": list(self.labels)}, ensure_ascii=False, indent=2) + "\n"


@dataclass(frozen=True, slots=True)
class Record:
    """One sample to write into a manifest (``image`` / ``text`` None: that modality is missing)."""

    id: str
    image: str | None
    text: str | None
    label: str | tuple[str, ...]

    def to_line(self) -> str:
        label = list(self.label) if isinstance(self.label, (tuple, list)) else self.label
        obj = {"id": self.id, "image": self.image, "text": self.text, "label": label}
        return json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n"


@dataclass(frozen=True, slots=True)
class Sample:
    """One parsed manifest line, with where it came from (``image`` / ``text`` None: missing)."""

    id: str
    image: str | None
    text: str | None
    label: str | tuple[str, ...] | None  # None: a prediction line (labels are not read)
    path: str  # the manifest file
    line: int  # 1-based

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def present(self) -> tuple[bool, bool]:
        """Whether the manifest gives the (image, text)."""
        return self.image is not None, self.text is not None

    def image_path(self) -> str:
        """The image's path: ``image`` itself if absolute, else relative to the manifest's directory."""
        if self.image is None:
            raise ValueError(f"{self.location}: sample {self.id!r} has no image")
        path = self.image if os.path.isabs(self.image) else os.path.join(os.path.dirname(self.path), self.image)
        return os.path.normpath(path)


# --- labels.json ------------------------------------------------------------------------------


def read_labels(data_dir: str | os.PathLike) -> LabelSpace:
    """Read and validate ``labels.json``; raises MissingFile / BadJson / BadLabels."""
    path = Path(data_dir) / LABELS_FILE
    if not Path(data_dir).is_dir():
        raise MissingFile(data_dir, None, "dataset directory does not exist")
    if not path.is_file():
        raise MissingFile(
            path,
            None,
            f"{LABELS_FILE} not found; a prepared dataset needs "
            f"{', '.join(s + '.jsonl' for s in SPLITS)} and {LABELS_FILE}",
        )
    try:
        data = read_json(path)
    except JSONError as err:
        raise BadJson(path, err.line, str(err)) from err
    if not isinstance(data, dict):
        raise BadLabels(path, None, 'must be an object {"task": ..., "labels": [...]}')
    task, labels = data.get("task"), data.get("labels")
    if task not in TASKS:
        raise BadLabels(path, None, f"'task' must be one of {', '.join(map(repr, TASKS))}, got {task!r}")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise BadLabels(path, None, "'labels' must be a non-empty list of non-empty strings")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise BadLabels(path, None, f"duplicate label names: {', '.join(map(repr, dupes))}")
    if task == "single_label" and len(labels) < 2:
        raise BadLabels(path, None, "a single-label dataset needs at least 2 labels")
    extra = sorted(set(data) - {"task", "labels"})
    if extra:
        raise BadLabels(path, None, f"unknown keys {', '.join(map(repr, extra))}; expected 'task' and 'labels'")
    return LabelSpace(task, tuple(labels))


# --- JSONL lines --------------------------------------------------------------------------------


def check_text(text, what: str = "'text'", nullable: bool = False) -> str:
    """``text`` if it can be a sample's text: a string, not blank, valid Unicode. Else BadRecord or EmptyText,
    not located (callers say where). ``what`` names the value in the message ("": the caller names it);
    ``nullable``: None is allowed too (a missing text), as the message says."""
    name, null = f"{what} " if what else "", " or null" if nullable else ""
    if not isinstance(text, str):
        raise BadRecord(None, None, f"{name}must be a string{null}, got {type(text).__name__}")
    if not text.strip():
        raise EmptyText(None, None, "empty text")
    if has_lone_surrogate(text):
        is_ = "is " if what else ""
        raise BadRecord(None, None, f"{name}{is_}not valid Unicode: it holds a lone surrogate such as \\ud800")
    return text


def parse_line(
    path: str,
    line_no: int,
    raw: bytes | str,
    space: LabelSpace | None,
    allow_missing: bool = False,
    *,
    for_prediction: bool = False,
) -> Sample:
    """Parse and validate one manifest line; raises the named error for the first problem found.

    With ``space=None`` (no usable labels.json) label names are not checked against a label list.
    ``allow_missing`` accepts ``"image": null`` or ``"text": null`` (not both). ``for_prediction``: a line
    to predict on: ``id`` may be absent (the line number) or a number, ``label`` is not read (the sample's
    is None), ``image`` or ``text`` may be null or absent.
    """
    try:
        obj = parse_json(raw)
    except JSONError as err:
        snippet = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw).strip()[:60]
        raise BadJson(path, line_no, f"{err}: {snippet!r}") from err
    if not isinstance(obj, dict):
        raise BadJson(path, line_no, f"each line must be a JSON object, got {type(obj).__name__}")
    if for_prediction:
        sample_id, image, text, label = obj.get("id"), obj.get("image"), obj.get("text"), None
        if sample_id is None:
            sample_id = str(line_no)
        elif isinstance(sample_id, int) and not isinstance(sample_id, bool):
            sample_id = str(sample_id)
    else:
        missing = [k for k in REQUIRED_FIELDS if k not in obj]
        if missing:
            raise BadRecord(
                path,
                line_no,
                f"missing field(s) {', '.join(map(repr, missing))}; every line needs {', '.join(REQUIRED_FIELDS)}",
            )
        sample_id, image, text, label = (obj[k] for k in REQUIRED_FIELDS)
    if not isinstance(sample_id, str) or not sample_id:
        raise BadRecord(path, line_no, f"'id' must be a non-empty string, got {sample_id!r}")
    if image is None and text is None:
        absent = " or absent" if for_prediction else ""
        raise BadRecord(
            path, line_no, f"both 'image' and 'text' are null{absent}: nothing to classify (id {sample_id!r})"
        )
    for name, value in (("image", image), ("text", text)):
        if value is None and not (allow_missing or for_prediction):
            raise AbsentModality(
                path,
                line_no,
                f"{name!r} is null (id {sample_id!r}); a dataset whose samples can "
                "lack a modality needs `data: {path: ..., allow_missing: true}` "
                "(mitp check --allow-missing)",
            )
    if image is not None and (not isinstance(image, str) or not image):
        raise BadRecord(
            path, line_no, f"'image' must be a non-empty path string or null, got {image!r} (id {sample_id!r})"
        )
    for name, value in (("id", sample_id), ("image", image)):
        if value is not None and has_lone_surrogate(value):
            raise BadRecord(
                path,
                line_no,
                f"{name!r} is not valid Unicode: it holds a lone surrogate such as "
                f"\\ud800 (id {sample_id.encode('utf-8', 'replace').decode()!r})",
            )
    if text is not None:
        try:
            check_text(text, nullable=True)
        except ManifestError as err:
            hint = '; a sample without text has "text": null' if isinstance(err, EmptyText) else ""
            raise type(err)(path, line_no, f"{err.message} (id {sample_id!r}){hint}") from None
    if not for_prediction:
        label = _check_label(path, line_no, sample_id, label, space)
    return Sample(sample_id, image, text, label, str(path), line_no)


def _check_label(path, line_no, sample_id, label, space: LabelSpace | None):
    if space is None:  # labels.json unusable: only check the shape of the label
        names = label if isinstance(label, list) else [label]
        if not all(isinstance(n, str) and n for n in names):
            raise BadRecord(
                path, line_no, f"'label' must be a name or a list of names, got {label!r} (id {sample_id!r})"
            )
        return tuple(label) if isinstance(label, list) else label
    if space.multi_label:
        if not isinstance(label, list):
            raise BadRecord(
                path,
                line_no,
                f"labels.json says multi_label, so 'label' must be a list of names, got {label!r} (id {sample_id!r})",
            )
        # An empty list is valid multi-label data: no class applies (an all-negative target).
        for name in label:
            if not isinstance(name, str):
                raise BadRecord(path, line_no, f"label names must be strings, got {name!r} (id {sample_id!r})")
            if name not in space.index:
                raise UnknownLabel(path, line_no, f"label {name!r} is not in labels.json (id {sample_id!r})")
        return tuple(label)
    if isinstance(label, list):
        raise BadRecord(
            path, line_no, f"labels.json says single_label, but 'label' is a list {label!r} (id {sample_id!r})"
        )
    if not isinstance(label, str):
        raise BadRecord(path, line_no, f"'label' must be a string, got {label!r} (id {sample_id!r})")
    if label not in space.index:
        raise UnknownLabel(path, line_no, f"label {label!r} is not in labels.json (id {sample_id!r})")
    return label


def read_image_roots(data_dir: str | os.PathLike) -> list[str]:
    """The image roots recorded by ``mitp prepare`` (real paths), ``[]`` when there is no image_roots.json."""
    path = Path(data_dir) / IMAGE_ROOTS_FILE
    if not path.is_file():
        return []
    try:
        data = read_json(path)
    except JSONError as err:
        raise BadImageRoots(path, err.line, str(err)) from err
    roots = data.get("image_roots") if isinstance(data, dict) else None
    if (
        set(data if isinstance(data, dict) else ()) != {"image_roots"}
        or not isinstance(roots, list)
        or not all(isinstance(r, str) and os.path.isabs(r) for r in roots)
    ):
        raise BadImageRoots(path, None, '{"image_roots": [absolute folder paths]} expected')
    real = [os.path.realpath(r) for r in roots]
    for root, given in zip(real, roots):
        if os.path.dirname(root) == root:
            raise BadImageRoots(
                path, None, f"{given!r} is a filesystem root; an image root must be a dataset's own folder"
            )
    return real


def write_image_roots(data_dir: str | os.PathLike, roots: list[str]) -> None:
    """Record ``roots`` (absolute folders) as the dataset's image roots; no file when there are none."""
    path = Path(data_dir) / IMAGE_ROOTS_FILE
    if roots:
        path.write_text(json.dumps({"image_roots": [os.path.abspath(r) for r in roots]}, indent=2) + "\n")
    else:
        path.unlink(missing_ok=True)


def check_inside(sample: Sample, roots: list[str]) -> None:
    """Raise ExternalPath unless the sample's image, symlinks resolved, lies under one of ``roots`` (real
    paths: the dataset directory, then its recorded image roots)."""
    resolved = os.path.realpath(sample.image_path())
    if not any(os.path.commonpath([resolved, root]) == root for root in roots):
        recorded = f" and its recorded image roots ({', '.join(roots[1:])})" if len(roots) > 1 else ""
        raise ExternalPath(
            sample.path,
            sample.line,
            f"image {sample.image!r} resolves to {resolved}, outside the dataset directory "
            f"{roots[0]}{recorded} (id {sample.id!r}); if that is intended, allow it with "
            "`data: {path: ..., allow_external_paths: true}` (mitp check --allow-external-paths)",
        )


class IdOwners:
    """Where each sample id was first seen: the one rule that ids are unique (within a file, across splits).

    ``claim`` records an id's place and answers None, or, for an id already claimed, the DuplicateId that
    names both places (located at ``path``/``line``): readers collect it, writers and converters raise it.
    """

    def __init__(self):
        self.first: dict[str, str] = {}

    def claim(
        self, sample_id: str, where: str, path=None, line: int | None = None, why: str = ""
    ) -> DuplicateId | None:
        first = self.first.get(sample_id)
        if first is None:
            self.first[sample_id] = where
            return None
        return duplicate_id(sample_id, first, path, line, why)


def duplicate_id(sample_id: str, first: str, path=None, line: int | None = None, why: str = "") -> DuplicateId:
    """The error for ``sample_id`` seen again at ``path``/``line``, first used at ``first``."""
    return DuplicateId(path, line, f"id {sample_id!r} already used at {first}{why}")


def read_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of each non-blank line of a JSONL file; line numbers are physical, 1-based."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if raw.strip():
                yield line_no, raw


def iter_split(
    data_dir: str | os.PathLike,
    split: str,
    space: LabelSpace | None,
    allow_external_paths: bool = False,
    allow_missing: bool = False,
    image_roots: list[str] | None = None,
) -> Iterator[Sample | ManifestError]:
    """Yield each line of ``<split>.jsonl`` as a Sample, or as the error that line has.

    Blank lines are ignored. Raises MissingSplitFile if the file does not exist. Unless
    ``allow_external_paths``, an image outside ``data_dir`` (absolute, ``..``, symlink) is an
    ExternalPath error: a manifest cannot make us read arbitrary files; images under the image roots
    ``mitp prepare`` recorded (``image_roots``, default: read from the dataset) are the dataset's own.
    ``allow_missing``: see :func:`parse_line`.
    """
    path = split_path(data_dir, split)
    if not path.is_file():
        raise MissingSplitFile(path, None, f"{split}.jsonl not found in {data_dir}")
    if image_roots is None and not allow_external_paths:
        image_roots = read_image_roots(data_dir)
    roots = [os.path.realpath(data_dir)] + list(image_roots or [])
    for line_no, raw in read_lines(path):
        try:
            sample = parse_line(str(path), line_no, raw, space, allow_missing)
            if not allow_external_paths and sample.image is not None:
                check_inside(sample, roots)
            yield sample
        except ManifestError as err:
            yield err


def read_split(
    data_dir: str | os.PathLike,
    split: str,
    space: LabelSpace | None = None,
    on_error: str = "raise",
    allow_external_paths: bool = False,
    allow_missing: bool = False,
) -> tuple[list[Sample], list[ManifestError]]:
    """All valid samples of a split and the errors of invalid lines.

    ``on_error="raise"`` raises the first error (also duplicate ids within the split);
    ``"collect"`` returns invalid lines and later duplicates in the error list instead.
    """
    if on_error not in ("raise", "collect"):
        raise ValueError(f"on_error must be 'raise' or 'collect', got {on_error!r}")
    space = read_labels(data_dir) if space is None else space
    samples, errors, owners = [], [], IdOwners()
    for item in iter_split(data_dir, split, space, allow_external_paths, allow_missing):
        if isinstance(item, Sample):
            item = owners.claim(item.id, f"line {item.line}", item.path, item.line) or item
        if isinstance(item, Sample):
            samples.append(item)
        elif on_error == "raise":
            raise item
        else:
            errors.append(item)
    return samples, errors


# --- writing ------------------------------------------------------------------------------------


def write_manifest(
    out_dir: str | os.PathLike, splits: dict[str, Iterable[Record]], space: LabelSpace
) -> dict[str, Path]:
    """Write the four manifest files; records are sorted by id so the bytes depend only on content.

    Ids must be unique across splits and labels must be in ``space`` (a converter bug otherwise). A
    split may be a list, or a sequence marked ``presorted`` that yields its records in id order with
    ids already unique across all splits (a converter's on-disk store): it is streamed, never held.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    owners = IdOwners()
    for split in SPLITS:
        records = splits.get(split, [])
        presorted = getattr(records, "presorted", False)
        where = f"{split}.jsonl"
        for rec in records:
            duplicate = None if presorted else owners.claim(rec.id, where, split_path(out, split))
            if duplicate:
                raise duplicate
            names = rec.label if isinstance(rec.label, (tuple, list)) else (rec.label,)
            for name in names:
                if name not in space.index:
                    raise UnknownLabel(split_path(out, split), None, f"label {name!r} of {rec.id!r} not in labels")
    written = {}
    for split in SPLITS:
        records = splits.get(split, [])
        if not getattr(records, "presorted", False):
            records = sorted(records, key=lambda r: r.id)
        written[split] = write_lines_atomic(split_path(out, split), (r.to_line() for r in records))
    written["labels"] = write_text_atomic(out / LABELS_FILE, space.to_json())
    return written


__all__ = [
    "DATASET_FILES",
    "IMAGES_DIR",
    "IMAGE_ROOTS_FILE",
    "IdOwners",
    "LABELS_FILE",
    "LabelSpace",
    "Record",
    "SPLITS",
    "SPLIT_ALIASES",
    "Sample",
    "TASKS",
    "check_text",
    "duplicate_id",
    "iter_split",
    "parse_line",
    "read_lines",
    "read_image_roots",
    "read_labels",
    "read_split",
    "split_named",
    "split_path",
    "write_image_roots",
    "write_manifest",
]
