"""MVSA (Niu et al., MMM 2016) -> manifest: tweets with their photo, 3-class sentiment.

Raw layouts::

    RAW/data/<id>.jpg, RAW/data/<id>.txt       every layout: one photo and one tweet per id
    RAW/labelResultAll.txt                      the official releases, tab-separated:
        MVSA-Single:    ID <tab> text,image                     (one annotator)
        MVSA-Multiple:  ID <tab> text,image <tab> x2 more       (three annotators)
    --labels FILE                               a labelled subset instead: ``guid,tag`` rows

The field's cleaning of the official releases (Xu and Mao, CIKM 2017; CLMLF, NAACL 2022):
MVSA-Multiple first takes, per modality, the label at least two of the three annotators gave
(none: dropped). Then text and image labels that agree give the label, a neutral side takes the
other side's label, and positive against negative is dropped. Texts are decoded as UTF-8, else
GB18030 (the releases hold GBK-encoded punctuation such as curly quotes), else Latin-1; how many
needed each fallback is reported. Line breaks inside a tweet become spaces.

There is no official split: train / val / test are carved 8:1:1, stratified by label and seeded
(:func:`~mitp.data.splits.stratified_split`), so the same command gives the same manifests.
Ids are the raw ids; labels are ``negative``, ``neutral``, ``positive``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import BadRecord, MissingColumn, MissingFile, UnknownLabel
from ..manifest import IdOwners, LabelSpace, Record
from ..splits import stratified_split
from .common import Conversion, image_ref, no_progress, read_csv_rows, row_text
from .registry import carving_options, option, register_converter

MVSA_LABELS = ("negative", "neutral", "positive")
TEXT_ENCODINGS = ("utf-8", "gb18030", "latin-1")  # tried in order; Latin-1 decodes any bytes
OFFICIAL_LABELS = "labelResultAll.txt"


def combine(text_label: str, image_label: str) -> str | None:
    """The pair's label: agreement, or the non-neutral side; None for positive against negative."""
    if text_label == image_label:
        return text_label
    if "neutral" in (text_label, image_label):
        return image_label if text_label == "neutral" else text_label
    return None


def majority(labels: list[str]) -> str | None:
    """The label at least two of three annotators gave, or None."""
    label, count = Counter(labels).most_common(1)[0]
    return label if count >= 2 else None


def decode_text(raw: bytes) -> tuple[str, str]:
    """(text, encoding used): the first of :data:`TEXT_ENCODINGS` that decodes the bytes."""
    for encoding in TEXT_ENCODINGS:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        return " ".join(text.split()), encoding
    raise AssertionError("latin-1 decodes any bytes")


def _label(value: str, path: Path, line: int, what: str) -> str:
    label = value.strip().lower()
    if label not in MVSA_LABELS:
        raise UnknownLabel(path, line, f"{what} label {value.strip()!r} is not one of {', '.join(MVSA_LABELS)}")
    return label


def read_official_labels(path: Path, conv: Conversion) -> tuple[str, list[tuple[str, str, int]]]:
    """(layout, [(id, label, line)]) from a ``labelResultAll.txt``; cleaning drops are counted in ``conv``."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise BadRecord(path, None, f"not valid UTF-8: {err}") from err
    rows = [(number, line.split("\t")) for number, line in enumerate(lines, start=1) if line.strip()]
    if rows and rows[0][1][0].strip().lower() == "id":
        rows = rows[1:]
    if not rows:
        raise BadRecord(path, None, "no labelled rows")
    annotators = len(rows[0][1]) - 1
    if annotators not in (1, 3):
        raise MissingColumn(
            path,
            rows[0][0],
            f"expected ID and 1 (MVSA-Single) or 3 (MVSA-Multiple) "
            f"text,image fields separated by tabs; got {annotators}",
        )
    layout = "MVSA-Single" if annotators == 1 else "MVSA-Multiple"
    out = []
    for number, fields in rows:
        if len(fields) != annotators + 1:
            raise MissingColumn(
                path,
                number,
                f"expected {annotators + 1} tab-separated fields as in the first row ({layout}); got {len(fields)}",
            )
        sample_id = fields[0].strip()
        pairs = []
        for field in fields[1:]:
            parts = field.split(",")
            if len(parts) != 2:
                raise BadRecord(path, number, f"expected text,image labels, got {field.strip()!r}")
            pairs.append((_label(parts[0], path, number, "text"), _label(parts[1], path, number, "image")))
        where = f"{path}:{number}"
        if annotators == 1:
            text_label, image_label = pairs[0]
        else:
            text_label, image_label = majority([t for t, _ in pairs]), majority([i for _, i in pairs])
            if text_label is None or image_label is None:
                conv.drop("no label given by 2 of 3 annotators (text or image)", where)
                continue
        label = combine(text_label, image_label)
        if label is None:
            conv.drop("text and image labels conflict (positive against negative)", where)
            continue
        out.append((sample_id, label, number))
    return layout, out


def read_subset_labels(path: Path, conv: Conversion) -> list[tuple[str, str, int]]:
    """[(id, label, line)] from ``guid,tag`` rows (header optional); ``null`` tags are dropped."""
    out = []
    for number, row in read_csv_rows(path):
        if number == 1 and [c.strip().lower() for c in row[:2]] == ["guid", "tag"]:
            continue
        if len(row) != 2:
            raise MissingColumn(path, number, f"expected 2 fields guid,tag; got {len(row)}")
        sample_id, tag = row[0].strip(), row[1].strip()
        if not sample_id:
            raise BadRecord(path, number, "empty guid")
        if tag.lower() in ("", "null", "none"):
            conv.drop("no label (tag null or empty)", f"{path}:{number}")
            continue
        out.append((sample_id, _label(tag, path, number, "tag"), number))
    return out


@register_converter(
    "mvsa",
    help="MVSA-Single / MVSA-Multiple: tweets with their photo, 3-class sentiment (or a guid,tag subset)",
    raw_help="RAW/data/<id>.{jpg,txt} and RAW/labelResultAll.txt (official releases), or --labels FILE",
    options=(
        option(
            "--labels",
            default=None,
            metavar="FILE",
            help="guid,tag rows of a labelled subset instead of RAW/labelResultAll.txt (a path, or relative to RAW)",
        ),
        *carving_options(),
    ),
)
def convert_mvsa(
    raw: str | Path,
    out: str | Path,
    labels: str | Path | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    track=no_progress,
) -> Conversion:
    raw, out = Path(raw), Path(out)
    data = raw / "data"
    conv = Conversion("mvsa", space=LabelSpace("single_label", MVSA_LABELS), image_roots=[data])
    if not data.is_dir():
        raise MissingFile(data, None, "MVSA data directory not found; expected RAW/data/<id>.jpg and <id>.txt")
    if labels is not None:
        label_file = Path(labels) if Path(labels).is_file() else raw / labels
        if not label_file.is_file():
            raise MissingFile(labels, None, f"label file not found (looked at {labels} and {raw / labels})")
        layout, rows = "labelled subset", read_subset_labels(label_file, conv)
    else:
        label_file = raw / OFFICIAL_LABELS
        if not label_file.is_file():
            raise MissingFile(
                label_file,
                None,
                f"MVSA label file not found; expected RAW/{OFFICIAL_LABELS} "
                "(official releases) or --labels FILE with guid,tag rows",
            )
        layout, rows = read_official_labels(label_file, conv)

    records, owners, encodings = [], IdOwners(), Counter()
    for sample_id, label, number in track(rows, description=f"reading {layout}", total=len(rows)):
        where = f"{label_file}:{number}"
        if owners.claim(sample_id, where):
            conv.drop("duplicate id (first kept)", where)
            continue
        image, text_file = data / f"{sample_id}.jpg", data / f"{sample_id}.txt"
        if not image.is_file():
            conv.drop("image not found", where)
            continue
        if not text_file.is_file():
            conv.drop("text not found", where)
            continue
        text, encoding = decode_text(text_file.read_bytes())
        if row_text(text, conv, where, "text", text_file) is None:
            continue
        encodings[encoding] += 1
        records.append(Record(sample_id, image_ref(image, out), text, label))

    conv.splits = stratified_split(
        records,
        key=lambda r: r.label,
        id_of=lambda r: r.id,
        fractions=[("val", val_fraction), ("test", test_fraction)],
        seed=seed,
    )
    conv.notes.append(f"layout: {layout} ({label_file}); {len(records):,} labelled pairs kept")
    conv.notes.append(
        "texts decoded as " + ", ".join(f"{name} {encodings[name]:,}" for name in TEXT_ENCODINGS if encodings[name])
    )
    conv.notes.append(f"val and test carved per label ({val_fraction:g} / {test_fraction:g}, rounded up), seed {seed}")
    conv.write(out)
    return conv


__all__ = ["MVSA_LABELS", "TEXT_ENCODINGS", "combine", "convert_mvsa", "decode_text", "majority"]
