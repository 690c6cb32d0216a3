"""A user's own data (one JSONL or CSV file) -> manifest.

Every row names an image, a text and a label (column names are configurable). Image
paths are relative to ``root`` (``--raw``; default: the input file's directory). Labels:
a string (single-label), or for multi-label a JSON list / a CSV cell split on
``label_separator``. An optional split column assigns rows to train / val / test
(``dev``, ``valid``, ``validation`` mean val); without it, val and test are carved from all
rows, stratified by label and seeded. With a split column but no val rows, val is carved
from train.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..errors import BadLabels, BadRecord, MissingColumn, MissingFile, UnknownLabel
from ..manifest import SPLIT_ALIASES, IdOwners, LabelSpace, Record, split_named
from ..splits import rarest_label_key, stratified_split
from .common import Conversion, image_ref, no_progress, read_csv_rows, read_jsonl_objects, row_text
from .registry import carving_options, column_options, option, register_converter


def _csv_rows(path: Path, needed: list[str]):
    rows = read_csv_rows(path)
    first = next(rows, None)
    if first is None:
        return
    header_line, header = first
    header = [h.strip() for h in header]
    missing = [c for c in needed if c not in header]
    if missing:
        raise MissingColumn(
            path,
            header_line,
            f"column(s) {', '.join(map(repr, missing))} not in the header; columns are {', '.join(map(repr, header))}",
        )
    for line, row in rows:
        if len(row) != len(header):
            raise BadRecord(path, line, f"{len(row)} fields but the header has {len(header)}")
        yield line, dict(zip(header, row, strict=True))


def convert_table(
    kind: str,
    input: str | Path,
    out: str | Path,
    raw: str | Path | None = None,
    *,
    image_column: str = "image",
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    split_column: str | None = None,
    multi_label: bool = False,
    label_separator: str = "|",
    labels: list[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    track=no_progress,
) -> Conversion:
    if kind not in ("jsonl", "csv"):
        raise ValueError(f"kind must be 'jsonl' or 'csv', got {kind!r}")
    path, out = Path(input), Path(out)
    if not path.is_file():
        raise MissingFile(path, None, f"input {kind} file not found")
    root = Path(raw) if raw is not None else path.parent
    conv = Conversion(kind, image_roots=[root])
    needed = [image_column, text_column, label_column] + [c for c in (id_column, split_column) if c]
    if kind == "csv":
        rows = _csv_rows(path, needed)
    else:
        rows = read_jsonl_objects(path)

    fixed = None if labels is None else {name: i for i, name in enumerate(labels)}
    items = []  # (record, split or None, line)
    owners = IdOwners()
    saw_list = False
    auto_id = None
    for line, row in track(rows, description=f"reading {path.name}"):
        if kind == "jsonl":
            for col in needed:
                if col not in row:
                    raise MissingColumn(path, line, f"no {col!r} field")
        if auto_id is None:  # decided on the first row: use an "id" column if there is one
            auto_id = id_column is None and "id" not in row
        where = f"{path}:{line}"
        if auto_id:
            sample_id = f"line{line:07d}"
        else:
            if (id_column or "id") not in row:
                raise MissingColumn(path, line, f"no {(id_column or 'id')!r} field (the first row has one)")
            value = row[id_column or "id"]
            sample_id = "" if value is None else str(value).strip()
            if not sample_id:
                raise BadRecord(path, line, f"empty id in column {(id_column or 'id')!r}")
        duplicate = owners.claim(sample_id, f"line {line}", path, line)
        if duplicate:
            raise duplicate

        raw_label = row[label_column]
        if isinstance(raw_label, list):
            saw_list = True
            names = [str(x).strip() for x in raw_label]
        elif raw_label is None:
            names = []
        elif multi_label and isinstance(raw_label, str):
            names = [x.strip() for x in raw_label.split(label_separator)]
        else:
            names = [str(raw_label).strip()]
        names = list(dict.fromkeys(n for n in names if n))
        if fixed is not None:
            for name in names:
                if name not in fixed:
                    raise UnknownLabel(path, line, f"label {name!r} is not one of the given labels")
        if not multi_label and not saw_list and len(names) > 1:
            raise BadRecord(path, line, f"several labels {names} but not --multi-label")

        split = None
        if split_column:
            split = split_named(row[split_column] or "")
            if split is None:
                raise BadRecord(
                    path, line, f"split {row[split_column]!r} is not one of {', '.join(sorted(SPLIT_ALIASES))}"
                )

        image_value = row[image_column]
        text = row_text(row[text_column], conv, where, text_column, path, line)
        if text is None:
            continue
        if not names:
            conv.drop("no label", where)
            continue
        if not isinstance(image_value, str) or not image_value.strip():
            conv.drop("no image path", where)
            continue
        image = Path(image_value.strip())
        image = image if image.is_absolute() else root / image
        if not image.is_file():
            conv.drop("image not found", where)
            continue
        items.append((Record(sample_id, image_ref(image, out), text.strip(), tuple(names)), split))

    task = "multi_label" if (multi_label or saw_list) else "single_label"
    if labels is not None:
        names = tuple(labels)
    else:
        names = tuple(sorted({n for rec, _ in items for n in rec.label}))
    if task == "single_label" and len(names) < 2:
        raise BadLabels(path, None, f"a single-label dataset needs at least 2 classes, found {list(names)}")
    if not names:
        raise BadLabels(path, None, "no labelled rows")
    conv.space = LabelSpace(task, names)
    order = conv.space.index

    def finish(rec: Record) -> Record:
        label = tuple(sorted(rec.label, key=order.__getitem__)) if task == "multi_label" else rec.label[0]
        return Record(rec.id, rec.image, rec.text, label)

    records = [(finish(rec), split) for rec, split in items]
    rarest = rarest_label_key([r.label for r, _ in records]) if task == "multi_label" else None
    how = "its rarest label" if rarest else "label"

    def key(rec: Record) -> str:  # stratify by the class (multi-label: by the sample's rarest label)
        return rarest(rec.label) if rarest else rec.label

    if split_column is None:
        parts = stratified_split(
            [r for r, _ in records], key, lambda r: r.id, [("val", val_fraction), ("test", test_fraction)], seed
        )
        conv.notes.append(
            f"no split column: val {val_fraction:g} and test {test_fraction:g} carved per "
            f"{how} (rounded up), seed {seed}"
        )
    else:
        parts = defaultdict(list)
        for r, split in records:
            parts[split].append(r)
        if not parts["val"] and parts["train"]:
            carved = stratified_split(parts["train"], key, lambda r: r.id, [("val", val_fraction)], seed)
            parts["train"], parts["val"] = carved["train"], carved["val"]
            conv.notes.append(f"no val rows: val {val_fraction:g} carved from train per {how}, seed {seed}")
    conv.splits = {s: list(parts.get(s, [])) for s in ("train", "val", "test")}
    conv.write(out)
    return conv


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


TABLE_OPTIONS = (
    option("--input", required=True, metavar="FILE", help="the JSONL or CSV file (CSV needs a header row)"),
    *column_options("'id' if present, else line numbers"),
    option(
        "--split-column",
        default=None,
        help="column with train/val/test (dev/valid/validation = val); default: carve splits",
    ),
    option("--multi-label", action="store_true", help="labels are lists (JSON) or separated (CSV)"),
    option("--label-separator", default="|", help="separator of CSV multi-labels (default: |)"),
    option(
        "--labels",
        type=_names,
        default=None,
        help="comma-separated label names in fixed order (default: sorted names found); others are errors",
    ),
    *carving_options(
        when={"val": " when there is no split column or no val row", "test": " when there is no split column"}
    ),
)
RAW_HELP = "where image paths are relative to (default: the --input file's directory)"


def _table_converter(kind: str, help: str) -> None:
    @register_converter(kind, help=help, raw_help=RAW_HELP, raw_default="", options=TABLE_OPTIONS)
    def convert(raw, out, *, input, track=no_progress, **options) -> Conversion:
        return convert_table(kind, input, out, raw or None, track=track, **options)


_table_converter("jsonl", "your own data as JSON lines (image, text, label per line)")
_table_converter("csv", "your own data as a CSV file with a header row")
