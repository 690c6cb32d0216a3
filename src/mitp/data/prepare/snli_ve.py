"""SNLI-VE -> manifest (visual entailment: image premise, text hypothesis, 3 classes).

Raw layout (as distributed)::

    RAW/snli_ve_train.jsonl, RAW/snli_ve_dev.jsonl, RAW/snli_ve_test.jsonl
    IMAGES/<Flickr30K id>.jpg        (--images, default RAW/flickr30k_images)

Each line needs ``Flickr30K_ID`` (or the misspelt ``Flikr30kID``; with or without ``.jpg``),
``sentence2`` (the hypothesis, which becomes the text) and ``gold_label``. Lines whose
``gold_label`` is ``-`` (no annotator majority) are dropped and counted. Ids are ``pairID``
(``<split>-<line>`` where a line has none). ``dev`` becomes ``val``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MissingColumn, MissingFile, MissingSplitFile, UnknownLabel
from ..manifest import LabelSpace, Record
from .common import Conversion, image_ref, no_progress, read_jsonl_objects
from .registry import option, register_converter

SNLI_VE_LABELS = ("entailment", "neutral", "contradiction")
SPLIT_FILES = {"train": "train", "dev": "val", "test": "test"}
IMAGE_KEYS = ("Flickr30K_ID", "Flikr30kID")


@register_converter(
    "snli-ve",
    help="SNLI-VE: visual entailment on Flickr30k (entailment/neutral/contradiction)",
    raw_help="RAW/snli_ve_{train,dev,test}.jsonl",
    options=(option("--images", metavar="DIR", help="Flickr30k images (default RAW/flickr30k_images)"),),
)
def convert_snli_ve(
    raw: str | Path, out: str | Path, images: str | Path | None = None, track=no_progress
) -> Conversion:
    raw, out = Path(raw), Path(out)
    images = Path(images) if images is not None else raw / "flickr30k_images"
    conv = Conversion("snli-ve", space=LabelSpace("single_label", SNLI_VE_LABELS), image_roots=[images])
    paths = {}
    for name in SPLIT_FILES:
        paths[name] = raw / f"snli_ve_{name}.jsonl"
        if not paths[name].is_file():
            raise MissingSplitFile(
                paths[name], None, f"SNLI-VE split file not found; expected snli_ve_{{train,dev,test}}.jsonl in {raw}"
            )
    if not images.is_dir():
        raise MissingFile(images, None, "Flickr30k image directory not found; pass --images DIR")
    refs: dict[str, str | None] = {}  # image stem -> manifest path, None if missing
    seen: set[str] = set()
    for name, split in SPLIT_FILES.items():
        path, records = paths[name], []
        for line, obj in track(read_jsonl_objects(path), description=f"reading {path.name}"):
            where = f"{path}:{line}"
            image_id = next((obj[k] for k in IMAGE_KEYS if obj.get(k) not in (None, "")), None)
            if image_id is None:
                raise MissingColumn(path, line, f"no image id field ({' or '.join(IMAGE_KEYS)})")
            for key in ("sentence2", "gold_label"):
                if key not in obj:
                    raise MissingColumn(path, line, f"no {key!r} field")
            gold = obj["gold_label"]
            if gold == "-":
                conv.drop("gold_label '-' (no annotator majority)", where)
                continue
            if gold not in SNLI_VE_LABELS:
                raise UnknownLabel(path, line, f"gold_label {gold!r} is not one of {', '.join(SNLI_VE_LABELS)}")
            text = obj["sentence2"].strip() if isinstance(obj["sentence2"], str) else ""
            if not text:
                conv.drop("empty hypothesis (sentence2)", where)
                continue
            stem = str(image_id)
            stem = stem[:-4] if stem.lower().endswith(".jpg") else stem
            if stem not in refs:  # ~30k images for ~550k lines: look each up once
                image = images / f"{stem}.jpg"
                refs[stem] = image_ref(image, out) if image.is_file() else None
            if refs[stem] is None:
                conv.drop("image not found", where)
                continue
            sample_id = str(obj.get("pairID") or f"{name}-{line}")
            if sample_id in seen:
                conv.drop("duplicate pairID (first kept)", where)
                continue
            seen.add(sample_id)
            records.append(Record(sample_id, refs[stem], text, gold))
        conv.splits[split] = records
    conv.notes.append("text: the hypothesis (sentence2); the image is the premise; dev -> val")
    conv.write(out)
    return conv
