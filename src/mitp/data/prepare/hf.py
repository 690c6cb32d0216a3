"""Hugging Face ``datasets`` -> manifest: a ``save_to_disk`` folder, Parquet files, an imagefolder, or a Hub id.

The source is opened and checked by :mod:`.hf_source` (layout, splits, column types). Its rows are streamed
once: each kept row's image is written under ``OUT/images/`` (named by a hash of its bytes, so a repeated
image is stored once) and the row waits in a scratch database beside the output (:mod:`.rowstore`), so
memory stays flat in the number of rows as well as in the images. The label names, the two-classes rule
and the carving of missing splits then work on the rows that are kept.

- Columns by name (``--image-column image --text-column text --label-column label``, ``--id-column``:
  default ``<split>-<row>``); a missing one is an error that lists the dataset's columns.
- Labels: a ``ClassLabel`` gives its names in their order; a string column the sorted set of its values; an
  integer (or bool) column its values as class names, in numeric order; a list of any of these means
  multi-label. A row without a label (``-1`` of a ClassLabel, None, empty) is dropped and counted. A float
  column, or one of anything else, is refused before a row is read, and so are a text column that is not
  text, an id column that holds neither strings nor integers, and an image column that holds no images.
- Ids: a null or blank id is an error naming its row, before anything reaches ``--out``.
- Splits: the dataset's own (``validation``/``valid``/``dev``/``val`` -> val); a split without kept rows is
  carved from train (``--val-fraction``, ``--test-fraction``, ``--seed``).
- Images: embedded bytes (an Image feature, a ``{bytes, path}`` struct, or a plain binary column) are written
  out; a path is resolved against the source folder and must lie inside it. A bad image (missing,
  undecodable, or over PIL's decompression-bomb limit) names its split, row and id; ``--on-bad-sample skip``
  drops and counts it.
- Every split needs a sample: a source without rows, without train rows, or too small to carve val and test,
  is an EmptySplit naming the source.
- The written manifest is read back by the manifest's own parser before the conversion returns, so nothing
  that reading can refuse replaces ``--out``.
- Each split's stream of rows is closed when its pass ends, however it ends: a half-read Parquet scan left for the
  interpreter's shutdown aborts the process (apache/arrow#45214).

``datasets`` is an optional dependency (``pip install 'mitp[hf]'``), imported by :mod:`.hf_source` only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ...atomic import write_bytes_atomic
from ..errors import (
    BadLabels,
    BadRecord,
    CorruptImage,
    EmptySplit,
    ManifestError,
    MissingColumn,
    MissingImage,
    UnknownLabel,
)
from ..manifest import IMAGES_DIR, SPLITS, LabelSpace, duplicate_id, iter_split, read_labels, split_named
from .common import Conversion, destination, no_progress, row_text
from .hf_source import HFError, LabelColumn, check_column_types, check_columns, datasets_library, open_source
from .registry import carving_options, column_options, option, register_converter
from .rowstore import RowStore, WrittenSplit

FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


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
        *column_options("<split>-<row>"),
        option(
            "--on-bad-sample",
            choices=("error", "skip"),
            default="error",
            help="a bad image stops the conversion, or is dropped and counted (default error)",
        ),
        *carving_options(when=" if missing"),
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
    ds_lib = datasets_library()
    out = Path(out)
    source = open_source(raw)
    columns = {"image": image_column, "text": text_column, "label": label_column}
    check_columns(source, raw, columns | ({"id": id_column} if id_column else {}))
    features = next(iter(source.splits.values())).features
    if features is None:
        raise MissingColumn(raw, None, "the dataset does not say its columns (a Hub stream without features)")
    label_kind = check_column_types(features, raw, columns | ({"id": id_column} if id_column else {}))
    used = list(dict.fromkeys(c for c in (image_column, text_column, label_column, id_column) if c))
    decode_off = isinstance(features[image_column], ds_lib.Image)
    streams = {
        split: ds.select_columns(used).cast_column(image_column, ds_lib.Image(decode=False))
        if decode_off
        else ds.select_columns(used)
        for split, ds in source.splits.items()
    }
    conv = Conversion("hf", warnings=list(source.warnings))
    store = RowStore(out)
    images = out / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    try:
        found: dict[str, object] = {}  # label name of a kept row -> its sort key
        for split, ds in streams.items():
            target = split_named(split)
            if target is None:
                conv.warnings.append(f"split {split!r} is neither train, validation nor test: left out")
                continue
            with _rows(ds, track, f"reading {split}") as rows:
                for index, row in rows:
                    labels = _labels(row[label_column], label_kind, raw, split, index)
                    if labels is None:
                        conv.drop("no label", f"{raw} {split} row {index}")
                        continue
                    if id_column:
                        sample_id = _sample_id(row[id_column], raw, split, index, id_column)
                    else:
                        sample_id = f"{split}-{index}"
                    where = f"{raw} {split} row {index} (id {sample_id!r})"
                    text = row_text(row[text_column], conv, where, text_column, where)
                    if text is None:
                        continue
                    try:
                        image = _write_image(row[image_column], source.root, images, where)
                    except (MissingImage, CorruptImage) as err:
                        if on_bad_sample == "error":
                            raise
                        conv.drop(f"bad image ({err.kind})", where)
                        continue
                    holder = store.add(split, index, sample_id, list(labels), target, image, " ".join(text.split()))
                    if holder is not None:
                        raise duplicate_id(sample_id, f"{holder[0]} row {holder[1]}", f"{raw} {split} row {index}")
                    found.update(labels)
        names = label_kind.names or tuple(sorted(found, key=found.__getitem__))
        space = LabelSpace("multi_label" if label_kind.multi else "single_label", names)
        _check_rows(store, space, found, conv, raw)
        conv.space = space
        missing = [
            (name, fraction)
            for name, fraction in (("val", val_fraction), ("test", test_fraction))
            if not store.rows(name)
        ]
        if missing:
            store.carve(missing, seed, label_kind.multi)
            _check_carved(store, missing, raw)
            conv.notes.append(
                ", ".join(f"{name} {fraction:g}" for name, fraction in missing)
                + f" carved from train per label, seed {seed}"
            )
        conv.splits = {name: store.split(name, space) for name in SPLITS}
        conv.notes.append(
            f"images written once each under {destination(out) / IMAGES_DIR} (named by a hash of their bytes)"
        )
        conv.write(out)
        _check_written(out, space, raw)
        conv.splits = {name: WrittenSplit(destination(out), name, space) for name in SPLITS}
    finally:
        store.close()  # the scratch database goes now, not at exit
    return conv


def _sample_id(value, raw, split: str, index: int, column: str) -> str:
    """A row's id from ``column``: a string or an integer; null or blank is an error naming the row."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRecord(
            raw,
            None,
            f"{split} row {index}: no id (column {column!r} holds {value!r}); every row needs one "
            "(leave out --id-column for <split>-<row>)",
        )
    return str(value)


def _check_rows(store: RowStore, space: LabelSpace, found: dict, conv: Conversion, raw) -> None:
    """Refuse a source without kept rows or without train rows, or a single-label one whose kept rows hold
    fewer than two classes."""
    kept = {name: store.rows(name) for name in SPLITS}
    if not sum(kept.values()):
        if set(conv.dropped) == {"no label"}:
            why = f" ({conv.dropped['no label']:,} rows, none with a label)"
        else:
            why = f" ({sum(conv.dropped.values()):,} rows dropped)" if conv.dropped else ""
        raise EmptySplit(raw, None, f"no labelled rows{why}: nothing to train or evaluate on")
    if not kept["train"]:
        sizes = ", ".join(f"{name} {n:,}" for name, n in kept.items())
        dropped = f"; {sum(conv.dropped.values()):,} rows dropped" if conv.dropped else ""
        raise EmptySplit(
            raw,
            None,
            f"no train rows ({sizes} rows kept{dropped}): a dataset needs a train split (a file or folder named "
            "train, or a save_to_disk split 'train') to train on and to carve missing splits from",
        )
    if not space.multi_label and len(found) < 2:
        raise BadLabels(
            raw, None, f"a single-label dataset needs at least 2 classes, found {sorted(found)} in the rows kept"
        )


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


def _check_written(out: Path, space: LabelSpace, raw) -> None:
    """Read the staged manifest back as runs will; a refusal here is a converter bug, caught before --out."""
    try:
        if read_labels(out) != space:
            raise BadLabels(out, None, "labels.json does not read back as written")
        for name in SPLITS:
            for item in iter_split(out, name, space, allow_external_paths=True, allow_missing=True):
                if isinstance(item, ManifestError):
                    raise item
    except ManifestError as err:
        where = Path(err.path).name if err.path else "the manifest"
        line = f" line {err.line}" if err.line else ""
        raise HFError(
            raw,
            None,
            f"the manifest written from this source does not read back ({where}{line}: {err.message}); "
            f"nothing was written to {destination(out)}",
        ) from err


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
    data = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is None and not path:
            raise MissingImage(where, None, "no image: the image's bytes and path are both null")
        if data is None:
            value = path
    if data is None:
        if not isinstance(value, str) or not value:
            raise MissingImage(where, None, f"no image: the image column holds {value!r}")
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
