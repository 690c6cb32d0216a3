"""Opening a Hugging Face source for ``mitp prepare hf``: which layout it is, which file is which split, and
every check that needs no row.

- Layouts: a ``save_to_disk`` folder, an imagefolder (``metadata.jsonl`` / ``metadata.csv``), a folder or glob
  of Parquet files, or a Hub id.
- Parquet splits are named as ``datasets`` names them (its own keyword patterns, ``datasets.data_files``):
  ``train``/``training``, ``validation``/``valid``/``dev``/``val``, ``test``/``testing``/``eval``/``evaluation``
  as a folder or as a word of the file name (``train-00000-of-00002``, ``test_0``), matched on the path below
  the source only: the folders above it never count. A file whose folders and name (or two words) name
  different splits is refused; when no file names a split, every file is train, else one that names none is
  left out and warned about.
- Files that are not what they claim (a ``.parquet`` that is not Parquet, a damaged ``save_to_disk`` folder,
  imagefolder metadata pointing outside its folder) are named errors, never the library's traceback.
- :func:`check_columns`: the chosen columns exist in every file (Parquet) or split, with one type each;
  :func:`check_column_types`: each can hold its role (text is text, a label column holds classes, ...).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...jsonio import JSONError, read_json
from ..errors import BadJson, BadLabels, BadRecord, EmptySplit, MissingColumn, MissingFile, MissingImage
from .common import read_csv_rows, read_jsonl_objects


class HFError(BadRecord):
    """A Hugging Face source that cannot be read as asked."""


def datasets_library():
    try:
        import datasets  # optional: only mitp prepare hf needs it
    except ImportError as err:
        raise HFError(
            None, None, "mitp prepare hf needs the `datasets` package: pip install 'mitp[hf]' (or pip install datasets)"
        ) from err
    return datasets


@dataclass
class Source:
    """An opened source: its splits, where relative image paths start, and what :func:`check_columns` compares."""

    splits: dict  # source split name -> a datasets Dataset or IterableDataset
    root: Path | None  # the folder relative image paths are under (None: a Hub id)
    # (what a message calls it, its Arrow schema) per Parquet file, else per split; empty when unknown (the Hub)
    parts: list[tuple[str, object]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def open_source(source: str | Path) -> Source:
    ds_lib = datasets_library()
    path = Path(source)
    if path.is_dir() and any((path / name).is_file() for name in ("dataset_dict.json", "state.json")):
        opened = Source(_load_saved(path, ds_lib), path)
    elif path.is_dir() and (metadata := sorted([*path.rglob("metadata.jsonl"), *path.rglob("metadata.csv")])):
        opened = Source(_load_imagefolder(path, metadata, ds_lib), path)
    else:
        files = (
            sorted(glob.glob(str(path / "**" / "*.parquet"), recursive=True))
            if path.is_dir()
            else sorted(glob.glob(str(source), recursive=True))
        )
        if files:
            return _open_parquet(source, files, ds_lib)
        if path.exists():
            raise MissingFile(
                path,
                None,
                "not a dataset: no save_to_disk files (dataset_dict.json / state.json), "
                "no metadata.jsonl or metadata.csv, no .parquet files",
            )
        try:  # a Hub id: needs a network connection
            loaded = ds_lib.load_dataset(str(source), streaming=True)
        except Exception as err:  # the Hub's own errors (offline, unknown id) vary by version
            raise MissingFile(source, None, f"no such folder or files, and not a loadable Hub dataset ({err})") from err
        opened = Source(loaded, None)
    if isinstance(opened.splits, (ds_lib.Dataset, ds_lib.IterableDataset)):
        opened.splits = {"train": opened.splits}
    opened.splits = dict(opened.splits)
    opened.parts = [
        (f"the {split} split", ds.features.arrow_schema)
        for split, ds in opened.splits.items()
        if ds.features is not None
    ]
    return opened


def _cause(err: BaseException) -> str:
    """The innermost error behind ``err``: the one that says what is wrong with the file."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}"


def _load_saved(path: Path, ds_lib):
    try:
        return ds_lib.load_from_disk(str(path))
    except FileNotFoundError as err:
        missing = err.filename or path
        raise MissingFile(missing, None, f"the save_to_disk dataset {path} lists this file, but it is missing") from err
    except Exception as err:  # datasets' errors for a damaged folder vary by file and version: name the file
        for file in sorted([*path.glob("*.json"), *path.glob("*/*.json")]):
            try:
                read_json(file)
            except JSONError as bad:
                raise BadJson(file, bad.line, f"{bad} (a file of the save_to_disk dataset {path})") from err
        raise HFError(path, None, f"not a loadable save_to_disk dataset ({_cause(err)})") from err


def _load_imagefolder(path: Path, metadata: list[Path], ds_lib):
    for file in metadata:
        _check_metadata(file)
    try:
        return ds_lib.load_dataset("imagefolder", data_dir=str(path))
    except Exception as err:  # datasets' errors for bad metadata vary by version: one line naming the files
        named = ", ".join(map(str, metadata[:3])) + (f" and {len(metadata) - 3} more" if len(metadata) > 3 else "")
        raise HFError(path, None, f"not a loadable imagefolder (metadata {named}): {_cause(err)}") from err


def _check_metadata(file: Path) -> None:
    """Every line of an imagefolder's metadata file is a record whose ``file_name`` lies inside its folder."""
    folder = os.path.realpath(file.parent)
    if file.suffix == ".jsonl":
        names = ((line, obj.get("file_name")) for line, obj in read_jsonl_objects(file))
    else:
        rows = read_csv_rows(file)
        header = next(rows, (None, []))[1]
        column = header.index("file_name") if "file_name" in header else None
        names = ((line, row[column] if column is not None and column < len(row) else None) for line, row in rows)
    for line, name in names:
        if not isinstance(name, str):
            continue  # datasets names a missing file_name itself
        real = os.path.realpath(os.path.join(folder, name))
        if os.path.commonpath([real, folder]) != folder:
            raise MissingImage(file, line, f"file_name {name!r} resolves to {real}, outside the folder {folder}")
        if not os.path.isfile(real):
            raise MissingImage(file, line, f"file_name {name!r}: no such file {real}")


# --- Parquet -------------------------------------------------------------------------------------


def _open_parquet(source, files: list[str], ds_lib) -> Source:
    import pyarrow.parquet as pq  # comes with datasets, the optional dependency

    path = Path(source)
    base = path if path.is_dir() else _glob_base(str(source))
    schemas, empty = {}, []
    for file in files:
        try:
            meta = pq.read_metadata(file)
        except Exception as err:  # pyarrow's errors for a damaged file vary (ArrowInvalid, OSError)
            raise HFError(file, None, f"not a readable Parquet file ({type(err).__name__}: {err})") from err
        if meta.num_rows > 0:  # datasets cannot stream a file without rows
            schemas[file] = meta.schema.to_arrow_schema()
        else:
            empty.append(file)
    if not schemas:
        raise EmptySplit(source, None, "no rows: every .parquet file of the source is empty")
    by_split, unnamed = parquet_splits(list(schemas), base)
    opened = Source(
        ds_lib.load_dataset("parquet", data_files=by_split, streaming=True),
        path if path.is_dir() else Path(files[0]).parent,
        [(f"{file} ({split})", schemas[file]) for split, split_files in by_split.items() for file in split_files],
    )
    if unnamed:
        shown = ", ".join(unnamed[:3]) + (f" and {len(unnamed) - 3} more" if len(unnamed) > 3 else "")
        opened.warnings.append(
            f"{len(unnamed)} Parquet file(s) name no split (train, validation, test) while others do: left out "
            f"({shown})"
        )
    opened.splits = dict(opened.splits)
    return opened


def _glob_base(pattern: str) -> Path:
    """The folder a glob's matches are under: its leading parts without wildcards (a plain file: its folder)."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts) - 1)
    return Path(*parts[:fixed]) if fixed else Path(".")


def _split_patterns() -> dict[str, tuple[list, list]]:
    """Per split (train, validation, test: in that order), the compiled patterns ``datasets`` matches a split's
    folder names and file names with."""
    from datasets import data_files  # the optional dependency: its own split keywords and patterns
    from fsspec.utils import glob_translate  # how datasets' (fsspec's) glob reads those patterns

    def compiled(patterns):
        return [re.compile(glob_translate(p)) for p in patterns]

    return {
        str(split): (
            compiled(data_files.DEFAULT_PATTERNS_SPLIT_IN_DIR_NAME[split]),
            compiled(data_files.DEFAULT_PATTERNS_SPLIT_IN_FILENAME[split]),
        )
        for split in data_files.DEFAULT_SPLITS
    }


def parquet_splits(files: list[str], base: Path) -> tuple[dict[str, list[str]], list[str]]:
    """``({split: files}, files that name no split)``, each file's split read from its path below ``base``."""
    patterns = _split_patterns()
    named: dict[str, str] = {}
    for file in files:
        relative = Path(os.path.relpath(file, base)).as_posix().lower()
        by_folder = [split for split, (folders, _) in patterns.items() if any(p.match(relative) for p in folders)]
        by_name = [split for split, (_, names) in patterns.items() if any(p.match(relative) for p in names)]
        if len(by_folder) > 1 or len(by_name) > 1 or (by_folder and by_name and by_folder != by_name):
            said = " and ".join(
                f"its {what} say {' and '.join(splits)}" for what, splits in (("folders", by_folder), ("name", by_name))
            )
            raise HFError(
                file, None, f"which split is this file? {said} (below the source {base}); rename it or its folder"
            )
        if by_folder or by_name:
            named[file] = (by_folder or by_name)[0]
    if not named:
        return {"train": list(files)}, []
    by_split = {split: [file for file in files if named.get(file) == split] for split in patterns}
    return {split: found for split, found in by_split.items() if found}, [f for f in files if f not in named]


# --- columns -------------------------------------------------------------------------------------


def check_columns(source: Source, raw, columns: dict[str, str]) -> None:
    """Each chosen column (``{role: name}``) is in every file or split of the source, with one type in all."""
    if not source.parts:
        return
    first, schema = source.parts[0]
    for role, column in columns.items():
        if column not in schema.names:
            raise MissingColumn(
                raw,
                None,
                f"no {role} column {column!r}; the dataset's columns are "
                f"{', '.join(map(repr, schema.names))} (choose with --{role}-column)",
            )
    for where, other in source.parts[1:]:
        for column in dict.fromkeys(columns.values()):
            if column not in other.names:
                raise HFError(
                    raw, None, f"column {column!r} is in {first} but not in {where}: every file needs the columns used"
                )
            one, two = schema.field(column).type, other.field(column).type
            if not _compatible(one, two):
                raise HFError(
                    raw,
                    None,
                    f"column {column!r} holds {one} in {first} but {two} in {where}: every file of a source needs "
                    "one type per column",
                )


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
        if not all(isinstance(name, str) and name.strip() for name in target.names):
            raise BadLabels(
                raw, None, f"label column {column!r}: the ClassLabel has a blank class name ({target.names})"
            )
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


# What a text, image or id column may hold (dtypes, and dtype prefixes) and what its error adds after
# "holds X values".
COLUMN_KINDS = {
    "text": (("string", "large_string"), (), ", not text", ""),
    "image": (
        ("string", "large_string", "binary", "large_binary"),
        (),
        ", not images; an image column holds an Image feature, {bytes, path} structs, encoded image bytes (PNG, "
        "JPEG, ...) or image paths",
        "",
    ),
    "id": (
        ("string", "large_string"),
        ("int", "uint"),
        "; ids are strings or integers",
        ", or leave it out for <split>-<row>",
    ),
}


def _check_column(role: str, feature, ds_lib, raw, column: str) -> None:
    """Refuse a text, image or id column whose type cannot hold its role; an image column may also be an Image
    feature or a struct with ``bytes`` or ``path``."""
    if role == "image" and (
        isinstance(feature, ds_lib.Image) or (isinstance(feature, dict) and {"bytes", "path"} & set(feature))
    ):
        return
    kinds, prefixes, what, alternative = COLUMN_KINDS[role]
    kind = _feature_kind(feature, ds_lib)
    if kind not in kinds and not kind.startswith(prefixes):
        raise BadRecord(
            raw,
            None,
            f"{role} column {column!r} holds {kind} values{what} (choose it with --{role}-column{alternative})",
        )


def check_column_types(features, raw, columns: dict[str, str]) -> LabelColumn:
    """Refuse a column (``{role: name}``) whose type cannot hold its role, before any row is read; how to read
    the label column."""
    ds_lib = datasets_library()
    for role in ("text", "image", "id"):
        if role in columns:
            _check_column(role, features[columns[role]], ds_lib, raw, columns[role])
    return _label_column(features[columns["label"]], ds_lib, raw, columns["label"])


def _compatible(one, two) -> bool:
    """Whether ``datasets`` reads two Arrow types as one without changing a value: the same kind up to widths,
    large_ and dictionary forms, or null (a column with no value) on either side."""
    import pyarrow as pa  # comes with datasets, the optional dependency

    one, two = (t.value_type if pa.types.is_dictionary(t) else t for t in (one, two))
    if pa.types.is_null(one) or pa.types.is_null(two):
        return True
    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if any(f(one) for f in lists) and any(f(two) for f in lists):
        return _compatible(one.value_type, two.value_type)
    if pa.types.is_struct(one) and pa.types.is_struct(two):
        fields = {f.name: f.type for f in one}
        return all(_compatible(fields[f.name], f.type) for f in two if f.name in fields)
    kinds = (
        pa.types.is_integer,
        pa.types.is_floating,
        pa.types.is_boolean,
        lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
        lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t),
    )
    return any(kind(one) and kind(two) for kind in kinds) or one == two


__all__ = [
    "HFError",
    "LabelColumn",
    "Source",
    "check_column_types",
    "check_columns",
    "datasets_library",
    "open_source",
    "parquet_splits",
]
