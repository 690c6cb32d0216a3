"""UPMC-Food101 -> manifest.

Raw layout (as distributed)::

    RAW/images/train/<class>/<file>.jpg
    RAW/images/test/<class>/<file>.jpg
    RAW/texts/train_titles.csv      rows: filename,text,class   (no header)
    RAW/texts/test_titles.csv

There is no official validation split: ``val`` is carved from ``train``, stratified by
class and seeded (per class, ``ceil(val_fraction * n)`` samples, at least one left in train).
Ids are ``<raw split>/<class>/<file stem>``. Labels are the class names, sorted.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BadRecord, MissingColumn, MissingFile, MissingSplitFile
from ..manifest import IdOwners, LabelSpace, Record
from ..splits import stratified_split
from .common import Conversion, image_ref, no_progress, read_csv_rows, row_text
from .registry import carving_options, register_converter


@register_converter(
    "food101",
    help="UPMC-Food101: 101 food classes, web images with page titles",
    raw_help="RAW/images/{train,test}/<class>/*.jpg and RAW/texts/{train,test}_titles.csv",
    options=carving_options(("val",), " from train"),
)
def convert_food101(
    raw: str | Path, out: str | Path, val_fraction: float = 0.1, seed: int = 0, track=no_progress
) -> Conversion:
    raw, out = Path(raw), Path(out)
    images = raw / "images"
    conv = Conversion("food101", image_roots=[images])
    if not images.is_dir():
        raise MissingFile(
            images, None, "UPMC-Food101 image directory not found; expected RAW/images/{train,test}/<class>/<file>.jpg"
        )
    raw_splits: dict[str, list[Record]] = {}
    for split in ("train", "test"):
        csv_path = raw / "texts" / f"{split}_titles.csv"
        if not csv_path.is_file():
            raise MissingSplitFile(
                csv_path,
                None,
                f"UPMC-Food101 text file not found; expected "
                f"RAW/texts/{split}_titles.csv with rows filename,text,class",
            )
        records, owners = [], IdOwners()
        for line, row in track(read_csv_rows(csv_path), description=f"reading {csv_path.name}"):
            if line == 1 and [c.strip().lower() for c in row] == ["filename", "text", "class"]:
                continue  # tolerate a header row
            if len(row) < 3:
                raise MissingColumn(csv_path, line, f"expected 3 fields filename,text,class; got {len(row)}")
            # Unquoted commas in the text split it into extra fields: first is the file, last the class.
            filename, text, cls = row[0].strip(), ",".join(row[1:-1]).strip(), row[-1].strip()
            if not filename or not cls:
                raise BadRecord(csv_path, line, "empty filename or class")
            where = f"{csv_path}:{line}"
            sample_id = f"{split}/{cls}/{Path(filename).stem}"
            if owners.claim(sample_id, where):
                conv.drop("duplicate row (same split, class and file; first kept)", where)
                continue
            if row_text(text, conv, where, "text", csv_path, line) is None:
                continue
            image = images / split / cls / filename
            if not image.is_file():
                conv.drop("image not found", where)
                continue
            records.append(Record(sample_id, image_ref(image, out), text, cls))
        raw_splits[split] = records

    conv.space = LabelSpace("single_label", tuple(sorted({r.label for rs in raw_splits.values() for r in rs})))
    missing = sorted(set(conv.space.labels) - {r.label for r in raw_splits["train"]})
    if missing:
        conv.warnings.append(f"classes with no training sample: {', '.join(missing)}")
    parts = stratified_split(
        raw_splits["train"], key=lambda r: r.label, id_of=lambda r: r.id, fractions=[("val", val_fraction)], seed=seed
    )
    conv.splits = {"train": parts["train"], "val": parts["val"], "test": raw_splits["test"]}
    conv.notes.append(f"val carved from train: {val_fraction:g} per class (rounded up), seed {seed}")
    conv.write(out)
    return conv
