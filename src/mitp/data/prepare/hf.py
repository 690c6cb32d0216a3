"""Hugging Face ``datasets`` -> manifest: a ``save_to_disk`` folder, Parquet files, an imagefolder, or a Hub id.

Rows are streamed twice: a first pass reads the labels (to know the label names and to carve the
splits a dataset lacks, stratified and seeded as for CSV), the second writes each image once under
``OUT/images/`` (named by a hash of its bytes, so a repeated image is stored once) and the manifest
lines. Rows wait in a scratch database beside the output (:mod:`.rowstore`), so memory stays flat in
the number of rows as well as in the images.

- Columns by name (``--image-column image --text-column text --label-column label``, ``--id-column``:
  default ``<split>-<row>``); a missing one is an error that lists the dataset's columns.
- Labels: a ``ClassLabel`` gives its names in their order; a string column the sorted set of its values; an
  integer (or bool) column its values as class names, in numeric order; a list of any of these means
  multi-label. A row without a label (``-1`` of a ClassLabel, None, empty) is dropped and counted. A float
  column, or one of anything else, is refused before a row is read, and so is a text column that is not text.
- Splits: the dataset's own (``validation``/``valid``/``dev``/``val`` -> val); a missing val or test is
  carved from train (``--val-fraction``, ``--test-fraction``, ``--seed``).
- Images: embedded bytes are written out; a path is resolved against the source folder and must lie
  inside it. A bad image (undecodable, or over PIL's decompression-bomb limit) names its split, row and id;
  ``--on-bad-sample skip`` drops and counts it.
- Every split needs a sample: a source without rows, or too small to carve val and test, is an EmptySplit.
- Each pass closes its stream of rows when it ends, however it ends: a half-read Parquet scan left for the
  interpreter's shutdown aborts the process (apache/arrow#45214).

``datasets`` is an optional dependency (``pip install 'mitp[hf]'``), imported only here. Over 400 lines: a
source this converter does not control is checked column by column and row by row, in one place.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ...atomic import write_bytes_atomic
from ..errors import (
    BadLabels,
    BadRecord,
    CorruptImage,
    EmptySplit,
    MissingColumn,
    MissingFile,
    MissingImage,
    UnknownLabel,
)
from ..manifest import IMAGES_DIR, SPLIT_ALIASES, SPLITS, LabelSpace, Record, duplicate_id, split_named
from .common import Conversion, destination, no_progress, row_text
from .registry import option, register_converter
from .rowstore import RowStore, WrittenSplit

FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


class HFError(BadRecord):
    """A Hugging Face source that cannot be read as asked."""


def _datasets():
    try:
        import datasets  # optional: only this converter needs it
    except ImportError as err:
        raise HFError(
            None, None, "mitp prepare hf needs the `datasets` package: pip install 'mitp[hf]' (or pip install datasets)"
        ) from err
    return datasets


def open_source(source: str | Path) -> tuple[dict, Path | None]:
    """``({source split: dataset}, folder the source's relative image paths are under)``."""
    ds_lib = _datasets()
    path = Path(source)
    if path.is_dir() and any((path / name).is_file() for name in ("dataset_dict.json", "state.json")):
        loaded = ds_lib.load_from_disk(str(path))
        root = path
    elif path.is_dir() and (list(path.rglob("metadata.jsonl")) or list(path.rglob("metadata.csv"))):
        loaded = ds_lib.load_dataset("imagefolder", data_dir=str(path))
        root = path
    else:
        files = (
            sorted(glob.glob(str(path / "**" / "*.parquet"), recursive=True))
            if path.is_dir()
            else sorted(glob.glob(str(source), recursive=True))
        )
        if files:
            root = path if path.is_dir() else Path(files[0]).parent
            files = _parquet_with_rows(files)
            if not files:
                raise EmptySplit(source, None, "no rows: every .parquet file of the source is empty")
            loaded = ds_lib.load_dataset("parquet", data_files=_parquet_splits(files), streaming=True)
        elif path.exists():
            raise MissingFile(
                path,
                None,
                "not a dataset: no save_to_disk files (dataset_dict.json / state.json), "
                "no metadata.jsonl or metadata.csv, no .parquet files",
            )
        else:  # a Hub id: needs a network connection
            try:
                loaded = ds_lib.load_dataset(str(source), streaming=True)
            except Exception as err:  # the Hub's own errors (offline, unknown id) vary by version
                raise MissingFile(
                    source, None, f"no such folder or files, and not a loadable Hub dataset ({err})"
                ) from err
            root = None
    if isinstance(loaded, (ds_lib.Dataset, ds_lib.IterableDataset)):
        loaded = {"train": loaded}
    return dict(loaded), root


def _parquet_with_rows(files: list[str]) -> list[str]:
    """The files that hold a row (``datasets`` cannot stream an empty one), read from their footers."""
    import pyarrow.parquet as pq  # comes with datasets, the optional dependency imported here only

    return [file for file in files if pq.read_metadata(file).num_rows > 0]


def _parquet_splits(files: list[str]) -> dict[str, list[str]]:
    """Parquet files by split, from names like ``train-00000-of-00002.parquet`` or ``test.parquet``."""
    by_split: dict[str, list[str]] = {}
    for file in files:
        stem = Path(file).stem.lower()
        split = next(
            (
                name
                for name in SPLIT_ALIASES
                if stem == name or stem.startswith(name + "-") or f"/{name}/" in file.replace(os.sep, "/")
            ),
            "train",
        )
        by_split.setdefault(split, []).append(file)
    return by_split


@dataclass(frozen=True)
class LabelColumn:
    """What a label column holds: a ClassLabel's ``names`` (rows hold indices), integer class values
    (``values``), or class names (strings); ``multi``: a list of them per row."""

    multi: bool
    names: tuple[str, ...] | None = None
    values: bool = False

    def expected(self) -> str:
        what = "a class index" if self.names else "an integer class value" if self.values else "a class name"
        return f"a list of {what}s" if self.multi else what


def _feature_kind(feature, ds_lib) -> str:
    """A feature's type as a message names it: its dtype (``int64``, ``string``), else its class name."""
    return feature.dtype if isinstance(feature, ds_lib.Value) else type(feature).__name__


def _label_column(feature, ds_lib, raw, column: str) -> LabelColumn:
    """How to read the label column, from its type; a column that holds no classes is refused here."""
    inner = getattr(feature, "feature", None) if isinstance(feature, (ds_lib.Sequence, ds_lib.List)) else None
    target = feature if inner is None else inner
    if isinstance(target, ds_lib.ClassLabel):
        return LabelColumn(inner is not None, names=tuple(target.names))
    kind = _feature_kind(target, ds_lib)
    if kind in ("string", "large_string"):
        return LabelColumn(inner is not None)
    if kind == "bool" or kind.startswith(("int", "uint")):
        return LabelColumn(inner is not None, values=True)
    raise BadRecord(
        raw,
        None,
        f"label column {column!r} holds {kind} values, not classes; a label column holds class names (strings), "
        "integer class values or a ClassLabel, or a list of them (choose it with --label-column)",
    )


def _check_text_column(feature, ds_lib, raw, column: str) -> None:
    kind = _feature_kind(feature, ds_lib)
    if kind not in ("string", "large_string"):
        raise BadRecord(
            raw, None, f"text column {column!r} holds {kind} values, not text (choose it with --text-column)"
        )


@contextlib.contextmanager
def _rows(ds, track, description: str):
    """``(row number, row)`` of a split, its stream closed when the block ends, however it ends."""
    rows = iter(ds)
    tracked = track(rows, description=description)
    try:
        yield enumerate(tracked)
    finally:
        for stream in (tracked, rows):
            if hasattr(stream, "close"):
                stream.close()


@register_converter(
    "hf",
    help="a Hugging Face dataset: a save_to_disk folder, Parquet files, an imagefolder, or a Hub id",
    raw_help="SOURCE: a folder written by save_to_disk, a folder or glob of .parquet files, an imagefolder "
    "(with metadata.jsonl/.csv), or a Hub dataset id (online only)",
    options=(
        option("--image-column", default="image", help="the image column (default image)"),
        option("--text-column", default="text", help="the text column (default text)"),
        option("--label-column", default="label", help="the label column (default label)"),
        option("--id-column", default=None, help="a column of unique ids (default: <split>-<row>)"),
        option(
            "--on-bad-sample",
            choices=("error", "skip"),
            default="error",
            help="a bad image stops the conversion, or is dropped and counted (default error)",
        ),
        option("--val-fraction", type=float, default=0.1, help="fraction carved for val if missing (0.1)"),
        option("--test-fraction", type=float, default=0.1, help="fraction carved for test if missing (0.1)"),
        option("--seed", type=int, default=0, help="seed of the carved splits (default 0)"),
    ),
    raw_positional=True,
)
def convert_hf(
    raw: str | Path,
    out: str | Path,
    image_column: str = "image",
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    on_bad_sample: str = "error",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    track=no_progress,
) -> Conversion:
    ds_lib = _datasets()
    out = Path(out)
    sources, root = open_source(raw)
    first = next(iter(sources.values()))
    columns = list(first.features) if first.features is not None else []
    for role, column in (("image", image_column), ("text", text_column), ("label", label_column), ("id", id_column)):
        if column is not None and column not in columns:
            raise MissingColumn(
                raw,
                None,
                f"no {role} column {column!r}; the dataset's columns are "
                f"{', '.join(map(repr, columns))} (choose with --{role}-column)",
            )
    label_column_kind = _label_column(first.features[label_column], ds_lib, raw, label_column)
    _check_text_column(first.features[text_column], ds_lib, raw, text_column)
    multi = label_column_kind.multi
    decode_off = isinstance(first.features[image_column], ds_lib.Image)
    streams = {
        split: (ds.cast_column(image_column, ds_lib.Image(decode=False)) if decode_off else ds)
        for split, ds in sources.items()
    }
    conv = Conversion("hf")
    store = RowStore(out)

    try:
        # pass 1: labels and ids, to fix the label names and carve missing splits
        found: dict[str, object] = {}  # label name -> its sort key
        read: list[str] = []
        for split, ds in streams.items():
            target = split_named(split)
            if target is None:
                conv.warnings.append(f"split {split!r} is neither train, validation nor test: left out")
                continue
            read.append(split)
            labels_and_ids = ds.select_columns([c for c in (label_column, id_column) if c])
            with _rows(labels_and_ids, track, f"reading {split} labels") as rows:
                for index, row in rows:
                    labels = _labels(row[label_column], label_column_kind, raw, split, index)
                    if labels is None:
                        conv.drop("no label", f"{split} row {index}")
                        continue
                    found.update(labels)
                    sample_id = str(row[id_column]) if id_column else f"{split}-{index}"
                    holder = store.add(split, index, sample_id, list(labels), target)
                    if holder is not None:
                        raise duplicate_id(sample_id, f"{holder[0]} row {holder[1]}", f"{raw} {split} row {index}")
        names = label_column_kind.names or tuple(sorted(found, key=found.__getitem__))
        space = LabelSpace("multi_label" if multi else "single_label", names)
        _check_rows(store, space, conv, raw)
        conv.space = space
        missing = [
            (name, fraction)
            for name, fraction in (("val", val_fraction), ("test", test_fraction))
            if not store.rows(name)
        ]
        if missing:
            store.carve(missing, seed, multi)
            _check_carved(store, missing, raw)
            conv.notes.append(
                ", ".join(f"{name} {fraction:g}" for name, fraction in missing)
                + f" carved from train per label, seed {seed}"
            )

        # pass 2: images and lines, the stream read in step with the stored rows (both in row order)
        images = out / IMAGES_DIR
        images.mkdir(parents=True, exist_ok=True)
        for split in read:
            stored = store.assigned(split)
            pending = next(stored, None)
            with _rows(streams[split], track, f"writing {split}") as rows:
                for index, row in rows:
                    if pending is None:
                        break
                    if index != pending[0]:
                        continue
                    _, sample_id, labels, target = pending
                    pending = next(stored, None)
                    where = f"{raw} {split} row {index} (id {sample_id!r})"
                    text = row_text(row[text_column], conv, where, text_column, where)
                    if text is None:
                        continue
                    try:
                        image = _write_image(row[image_column], root, images, where)
                    except (MissingImage, CorruptImage) as err:
                        if on_bad_sample == "error":
                            raise
                        conv.drop(f"bad image ({err.kind})", where)
                        continue
                    # multi-label: each name once, in the label space's order (as the other converters write them)
                    label = tuple(sorted(set(labels), key=space.index.__getitem__)) if multi else labels[0]
                    store.record(target, Record(sample_id, image, " ".join(text.split()), label))
        conv.splits = {name: store.split(name) for name in SPLITS}
        conv.notes.append(
            f"images written once each under {destination(out) / IMAGES_DIR} (named by a hash of their bytes)"
        )
        conv.write(out)
        conv.splits = {name: WrittenSplit(destination(out), name, space) for name in SPLITS}
    finally:
        store.close()  # the scratch database goes now, not at exit
    return conv


def _check_rows(store: RowStore, space: LabelSpace, conv: Conversion, raw) -> None:
    """Refuse a source with no labelled row, or a single-label one with fewer than two classes."""
    if not sum(store.rows(name) for name in SPLITS):
        unlabelled = f" ({conv.dropped['no label']:,} rows, none with a label)" if conv.dropped else ""
        raise EmptySplit(raw, None, f"no labelled rows{unlabelled}: nothing to train or evaluate on")
    if not space.multi_label and len(space.labels) < 2:
        raise BadLabels(raw, None, f"a single-label dataset needs at least 2 classes, found {list(space.labels)}")


def _check_carved(store: RowStore, carved: list[tuple[str, float]], raw) -> None:
    """Refuse carved splits left empty: too few rows (each label keeps one in train) for these fractions."""
    empty = [(name, fraction) for name, fraction in carved if not store.rows(name)]
    if empty:
        asked = ", ".join(f"--{name}-fraction {fraction:g}" for name, fraction in empty)
        raise EmptySplit(
            raw,
            None,
            f"{store.rows('train'):,} labelled train rows are too few to carve {' and '.join(n for n, _ in empty)} "
            f"from ({asked}; every label keeps at least one row in train): give more rows, larger fractions, "
            "or the source's own splits",
        )


def _labels(value, column: LabelColumn, raw, split: str, index: int) -> dict[str, object] | None:
    """A row's label names, each with its sort key; None for a row without a label (a multi-label row may have
    none: {})."""
    if value is None:
        return None
    if column.multi and not isinstance(value, (list, tuple)):
        _bad(raw, split, index, value, column)
    out = {}
    for v in value if column.multi else [value]:
        if column.names is None and not column.values:
            if not isinstance(v, str):
                _bad(raw, split, index, v, column)
            if not v.strip():
                return None
            out[v.strip()] = v.strip()
            continue
        if not isinstance(v, int) or (column.names is not None and isinstance(v, bool)):
            _bad(raw, split, index, v, column)
        if column.values:
            out[str(v)] = int(v)
            continue
        if v == -1:  # ClassLabel's "no label"
            return None
        if not 0 <= v < len(column.names):
            raise UnknownLabel(
                raw,
                None,
                f"{split} row {index}: label value {v} is not a class of the ClassLabel "
                f"(0..{len(column.names) - 1}: {', '.join(column.names)})",
            )
        out[column.names[v]] = v
    return out


def _bad(raw, split, index, value, column: LabelColumn):
    raise BadRecord(raw, None, f"{split} row {index}: label {value!r} is not {column.expected()}")


def _write_image(value, root: Path | None, images: Path, where: str) -> str:
    """The image written once under ``images`` (by content hash); its path relative to the output."""
    data = None
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is None and path:
            value = path
    if data is None:
        if not isinstance(value, str) or not value:
            raise MissingImage(where, None, "no image bytes or path")
        path = Path(value) if Path(value).is_absolute() or root is None else root / value
        real = os.path.realpath(path)
        if root is not None and os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
            raise MissingImage(where, None, f"image path {value!r} resolves to {real}, outside the source {root}")
        if not os.path.isfile(real):
            raise MissingImage(where, None, f"image {value!r} not found")
        data = Path(real).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            img.verify()
    except Image.DecompressionBombError as err:  # a small file that decodes to more pixels than PIL allows
        raise CorruptImage(where, None, f"image too large to decode safely: {err}") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise CorruptImage(where, None, f"image cannot be decoded ({type(err).__name__})") from err
    name = hashlib.sha256(data).hexdigest()[:24] + FORMAT_SUFFIX.get(fmt, ".img")
    target = images / name
    if not target.exists():
        write_bytes_atomic(target, data)
    return f"images/{name}"


__all__ = ["convert_hf", "open_source"]
