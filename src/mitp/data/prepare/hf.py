"""Hugging Face ``datasets`` -> manifest: a ``save_to_disk`` folder, Parquet files, an imagefolder, or a Hub id.

Rows are streamed twice: a first pass reads the labels (to know the label names and to carve the
splits a dataset lacks, stratified and seeded as for CSV), the second writes each image once under
``OUT/images/`` (named by a hash of its bytes, so a repeated image is stored once) and the manifest
lines. Rows wait in a scratch database beside the output (:mod:`.rowstore`), so memory stays flat in
the number of rows as well as in the images.

- Columns by name (``--image-column image --text-column text --label-column label``, ``--id-column``:
  default ``<split>-<row>``); a missing one is an error that lists the dataset's columns.
- Labels: a ``ClassLabel`` gives its names in their order; a string column the sorted set of its values;
  a list of either means multi-label. A row without a label (``-1``, None, empty) is dropped and counted.
- Splits: the dataset's own (``validation``/``valid``/``dev``/``val`` -> val); a missing val or test is
  carved from train (``--val-fraction``, ``--test-fraction``, ``--seed``).
- Images: embedded bytes are written out; a path is resolved against the source folder and must lie
  inside it. A bad image names its split, row and id; ``--on-bad-sample skip`` drops and counts it.

``datasets`` is an optional dependency (``pip install 'mitp[hf]'``), imported only here.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ...atomic import write_bytes_atomic
from ..errors import BadRecord, CorruptImage, MissingColumn, MissingFile, MissingImage, UnknownLabel
from ..manifest import SPLITS, LabelSpace, Record
from .common import Conversion, no_progress
from .registry import option, register_converter
from .rowstore import RowStore, WrittenSplit

SPLIT_NAMES = {"train": "train", "validation": "val", "valid": "val", "dev": "val", "val": "val", "test": "test"}
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
            loaded = ds_lib.load_dataset("parquet", data_files=_parquet_splits(files), streaming=True)
            root = path if path.is_dir() else Path(files[0]).parent
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


def _parquet_splits(files: list[str]) -> dict[str, list[str]]:
    """Parquet files by split, from names like ``train-00000-of-00002.parquet`` or ``test.parquet``."""
    by_split: dict[str, list[str]] = {}
    for file in files:
        stem = Path(file).stem.lower()
        split = next(
            (
                name
                for name in SPLIT_NAMES
                if stem == name or stem.startswith(name + "-") or f"/{name}/" in file.replace(os.sep, "/")
            ),
            "train",
        )
        by_split.setdefault(split, []).append(file)
    return by_split


def _label_kind(feature, ds_lib) -> tuple[bool, list[str] | None]:
    """(multi-label?, ClassLabel names or None) of a label feature."""
    inner = getattr(feature, "feature", None) if isinstance(feature, (ds_lib.Sequence, ds_lib.List)) else None
    multi = inner is not None
    target = inner if multi else feature
    return multi, list(target.names) if isinstance(target, ds_lib.ClassLabel) else None


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
    multi, names = _label_kind(first.features[label_column], ds_lib)
    image_feature = first.features[image_column]
    decode_off = isinstance(image_feature, ds_lib.Image)
    streams = {
        split: (ds.cast_column(image_column, ds_lib.Image(decode=False)) if decode_off else ds)
        for split, ds in sources.items()
    }
    conv = Conversion("hf")
    store = RowStore(out)

    try:
        # pass 1: labels and ids, to fix the label names and carve missing splits
        found: set[str] = set()
        read: list[str] = []
        for split, ds in streams.items():
            target = SPLIT_NAMES.get(split.lower())
            if target is None:
                conv.warnings.append(f"split {split!r} is neither train, validation nor test: left out")
                continue
            read.append(split)
            for index, row in enumerate(
                track(
                    ds.select_columns([c for c in (label_column, id_column) if c]),
                    description=f"reading {split} labels",
                )
            ):
                labels = _labels(row[label_column], multi, names, raw, split, index)
                if labels is None:
                    conv.drop("no label", f"{split} row {index}")
                    continue
                found.update(labels)
                sample_id = str(row[id_column]) if id_column else f"{split}-{index}"
                holder = store.add(split, index, sample_id, labels, target)
                if holder is not None:
                    raise BadRecord(
                        raw,
                        None,
                        f"{raw} {split} row {index}: id {sample_id!r} is already used by {holder[0]} row {holder[1]}",
                    )
        space = LabelSpace("multi_label" if multi else "single_label", tuple(names) if names else tuple(sorted(found)))
        conv.space = space
        missing = [
            (name, fraction)
            for name, fraction in (("val", val_fraction), ("test", test_fraction))
            if not store.rows(name)
        ]
        if missing:
            store.carve(missing, seed, multi)
            conv.notes.append(
                ", ".join(f"{name} {fraction:g}" for name, fraction in missing)
                + f" carved from train per label, seed {seed}"
            )

        # pass 2: images and lines, the stream read in step with the stored rows (both in row order)
        images = out / "images"
        images.mkdir(parents=True, exist_ok=True)
        for split in read:
            stored = store.assigned(split)
            pending = next(stored, None)
            for index, row in enumerate(track(streams[split], description=f"writing {split}")):
                if pending is None or index != pending[0]:
                    continue
                _, sample_id, labels, target = pending
                pending = next(stored, None)
                where = f"{raw} {split} row {index} (id {sample_id!r})"
                text = row[text_column]
                if not isinstance(text, str) or not text.strip():
                    conv.drop("empty text", where)
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
    except BaseException:
        store.close()  # the scratch database goes now, not at exit
        raise
    conv.splits = {name: store.split(name) for name in SPLITS}
    conv.notes.append(f"images written once each under {images} (named by a hash of their bytes)")
    conv.write(out)
    conv.splits = {name: WrittenSplit(out, name, space) for name in SPLITS}
    store.close()
    return conv


def _labels(value, multi: bool, names: list[str] | None, raw, split: str, index: int) -> list[str] | None:
    """A row's label names; None for a row without a label (a multi-label row may have none: [])."""
    if value is None:
        return None
    if multi and not isinstance(value, (list, tuple)):
        _bad(raw, split, index, value)
    out = []
    for v in value if multi else [value]:
        if names is None:
            if not isinstance(v, str):
                _bad(raw, split, index, v)
            if not v.strip():
                return None
            out.append(v.strip())
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            _bad(raw, split, index, v)
        if v == -1:  # ClassLabel's "no label"
            return None
        if not 0 <= v < len(names):
            raise UnknownLabel(
                raw,
                None,
                f"{split} row {index}: label value {v} is not a class of the ClassLabel "
                f"(0..{len(names) - 1}: {', '.join(names)})",
            )
        out.append(names[v])
    return out


def _bad(raw, split, index, value):
    raise BadRecord(raw, None, f"{split} row {index}: label {value!r} is neither a class index nor a name")


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
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise CorruptImage(where, None, f"image cannot be decoded ({type(err).__name__})") from err
    name = hashlib.sha256(data).hexdigest()[:24] + FORMAT_SUFFIX.get(fmt, ".img")
    target = images / name
    if not target.exists():
        write_bytes_atomic(target, data)
    return f"images/{name}"


__all__ = ["convert_hf", "open_source"]
