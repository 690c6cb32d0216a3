"""Tiny generated datasets for the data-pipeline tests (imported by tests/test_data_*.py).

Everything is written under a pytest ``tmp_path``: small random JPEGs and raw files in
the layouts of UPMC-Food101, MM-IMDB, SNLI-VE and MVSA, ready-made manifests, and Parquet
files as the Hugging Face Hub serves them.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

from mitp.synthetic import COLOURS, WORD_SETS


def write_image(path: Path, size: tuple[int, int] = (24, 18), seed: int = 0, mode: str = "RGB") -> Path:
    """A small random image (width, height); format from the suffix (JPEG for .jpg/.jpeg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(array, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None
    img.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes (a truncated JPEG)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return path


# --- UPMC-Food101 ----------------------------------------------------------------------------

FOOD_CLASSES = {"apple_pie": 20, "ramen": 11, "sushi": 3}  # train samples per class (before drops)
FOOD_TEST = 2  # test samples per class


def make_food101(root: Path, classes: dict[str, int] = FOOD_CLASSES, test_per_class: int = FOOD_TEST) -> dict:
    """Raw UPMC-Food101 layout. Adds one train row with empty text and one with a missing image.

    Returns the expected counts: kept train/test rows per class and the dropped rows.
    """
    root = Path(root)
    rows = {"train": [], "test": []}
    seed = 0
    for split, per_class in (("train", classes), ("test", dict.fromkeys(classes, test_per_class))):
        for cls, n in per_class.items():
            for i in range(n):
                name = f"{cls}_{split}{i}.jpg"
                seed += 1
                write_image(root / "images" / split / cls / name, (20 + i % 5, 16 + i % 3), seed=seed)
                rows[split].append([name, f"Recipe {i} for {cls.replace('_', ' ')}, with a comma", cls])
    first = next(iter(classes))
    # Dropped: empty text (image exists), and a row whose image file does not exist.
    write_image(root / "images" / "train" / first / "empty_text.jpg", seed=999)
    rows["train"].append(["empty_text.jpg", "   ", first])
    rows["train"].append(["no_such_file.jpg", "a text without its image", first])
    (root / "texts").mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        with open(root / "texts" / f"{split}_titles.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(split_rows)
    return {
        "train": dict(classes),
        "test": dict.fromkeys(classes, test_per_class),
        "dropped": {"empty text": 1, "image not found": 1},
    }


# --- MM-IMDB -------------------------------------------------------------------------------------


def make_mmimdb(root: Path) -> dict:
    """Raw MM-IMDB layout with 12 movies: 6 train, 3 dev, 3 test. Returns what the converter should keep."""
    root = Path(root)
    movies = {
        # id: (genres, plots)
        "0000001": (["Drama", "Comedy"], ["Short plot.", "A much longer plot about a family."]),
        "0000002": (["Action", "Sci-Fi", "News"], ["Robots fight."]),
        "0000003": (["Talk-Show", "Reality-TV"], ["Only dropped genres."]),  # dropped: no genre left
        "0000004": (["Horror"], ["A haunted house.", "A house."]),
        "0000005": (["Film-Noir", "Crime", "Drama"], ["Rain and detectives."]),
        "0000006": (["Comedy"], ["Two friends on a road trip."]),
        "0000007": (["Documentary"], ["Penguins."]),
        "0000008": (["Romance", "Drama"], ["Love in Paris."]),
        "0000009": (["Western"], ["Cowboys."]),
        "0000010": (["Animation", "Family"], ["A talking car."]),
        "0000011": (["War", "History"], ["Trenches."]),
        "0000012": (["Musical"], []),  # dropped: no plot
    }
    dataset = root / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    for i, (movie, (genres, plots)) in enumerate(movies.items()):
        (dataset / f"{movie}.json").write_text(json.dumps({"genres": genres, "plot": plots, "title": f"M{i}"}))
        write_image(dataset / f"{movie}.jpeg", (18, 26), seed=100 + i)
    split = {
        "train": ["0000001", "0000002", "0000003", "0000004", "0000005", "0000006"],
        "dev": ["0000007", "0000008", "0000009"],
        "test": ["0000010", "0000011", "0000012"],
    }
    (root / "split.json").write_text(json.dumps(split))
    return {
        "counts": {"train": 5, "val": 3, "test": 2},
        "labels": {
            "0000001": ["Drama", "Comedy"],
            "0000002": ["Action", "Sci-Fi"],
            "0000005": ["Drama", "Crime", "Film-Noir"],
        },
        "texts": {"0000001": "A much longer plot about a family.", "0000004": "A haunted house."},
        "dropped": {"no genre left after removing non-standard genres": 1, "no plot text": 1},
    }


# --- SNLI-VE -------------------------------------------------------------------------------------


def make_snli_ve(root: Path, images: Path | None = None) -> dict:
    """Raw SNLI-VE layout: 4 Flickr30k images, jsonl splits with both id spellings and '-' labels."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    images = Path(images) if images is not None else root / "flickr30k_images"
    for i, fid in enumerate(("1000", "2000", "3000", "4000")):
        write_image(images / f"{fid}.jpg", (30, 20), seed=200 + i)
    labels = ("entailment", "neutral", "contradiction")
    lines = {"train": [], "dev": [], "test": []}
    for split, fids in (("train", ("1000", "2000")), ("dev", ("3000",)), ("test", ("4000",))):
        for fid in fids:
            for j, gold in enumerate(labels):
                key, value = ("Flickr30K_ID", fid) if j != 1 else ("Flikr30kID", fid + ".jpg")
                lines[split].append(
                    {
                        key: value,
                        "pairID": f"{fid}.jpg#{j}",
                        "sentence1": "premise text",
                        "sentence2": f"Hypothesis {j} about picture {fid}.",
                        "gold_label": gold,
                    }
                )
    lines["train"].append(
        {"Flickr30K_ID": "1000", "pairID": "1000.jpg#9", "sentence2": "No consensus.", "gold_label": "-"}
    )
    lines["dev"].append({"Flickr30K_ID": "3000", "pairID": "3000.jpg#9", "sentence2": "Also none.", "gold_label": "-"})
    lines["test"].append(
        {"Flickr30K_ID": "9999", "pairID": "9999.jpg#0", "sentence2": "Image is gone.", "gold_label": "neutral"}
    )
    for split, objs in lines.items():
        with open(root / f"snli_ve_{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(o) + "\n" for o in objs)
    return {
        "counts": {"train": 6, "val": 3, "test": 3},
        "dropped": {"gold_label '-' (no annotator majority)": 2, "image not found": 1},
    }


# --- ready-made manifests --------------------------------------------------------------------------


def make_manifest(
    root: Path,
    task: str = "single_label",
    per_split: dict | None = None,
    labels: tuple[str, ...] = ("cat", "dog", "fish"),
    image_sizes=((24, 18), (17, 31), (32, 32)),
) -> Path:
    """A valid prepared dataset with images under ``root/images``; returns ``root``."""
    root = Path(root)
    per_split = per_split or {"train": 8, "val": 4, "test": 4}
    n = 0
    for split, count in per_split.items():
        lines = []
        for i in range(count):
            image = write_image(root / "images" / f"{split}_{i}.jpg", image_sizes[n % len(image_sizes)], seed=n)
            if task == "multi_label":
                label = [labels[n % len(labels)]] + ([labels[(n + 1) % len(labels)]] if n % 2 else [])
            else:
                label = labels[n % len(labels)]
            words = " ".join(f"word{(n * 7 + k) % 13}" for k in range(1 + n % 9))
            lines.append(
                json.dumps(
                    {
                        "id": f"{split}-{i:03d}",
                        "image": image.relative_to(root).as_posix(),
                        "text": f"Sample {n}: {words}.",
                        "label": label,
                    }
                )
            )
            n += 1
        (root / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (root / "labels.json").write_text(json.dumps({"task": task, "labels": list(labels)}))
    return root


def set_line(path: Path, line: int, obj_or_text) -> None:
    """Replace 1-based ``line`` of a JSONL file with an object (dumped) or raw text."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    lines[line - 1] = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def get_line(path: Path, line: int) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8").splitlines()[line - 1])


# --- MVSA ---------------------------------------------------------------------------------------

# (text label, image label) per annotator, and what the field's cleaning makes of it.
MVSA_SINGLE_ROWS = (
    [("positive", "positive")] * 20
    + [("neutral", "positive")] * 6
    + [("negative", "neutral")] * 8
    + [("negative", "negative")] * 6
    + [("neutral", "neutral")] * 10
    + [("positive", "negative")] * 3
)
MVSA_MULTIPLE_ROWS = (
    [[("positive", "positive"), ("positive", "neutral"), ("neutral", "positive")]] * 10  # positive, positive
    + [[("negative", "neutral"), ("negative", "neutral"), ("positive", "positive")]] * 10  # negative, neutral
    + [[("neutral", "neutral"), ("neutral", "negative"), ("neutral", "neutral")]] * 10  # neutral, neutral
    + [[("positive", "negative"), ("negative", "negative"), ("neutral", "positive")]] * 2  # text: no majority
    + [[("positive", "negative"), ("positive", "negative"), ("neutral", "neutral")]] * 3
)  # conflict


def _mvsa_tweets(data: Path, count: int) -> dict[str, str]:
    """``count`` tweets with their photos as ids 1..count; every third text in GBK (a curly quote)."""
    texts = {}
    for i in range(1, count + 1):
        text = f"tweet {i} \u201cquoted\u201d #tag\nsecond line" if i % 3 == 0 else f"tweet {i} plain @user"
        texts[str(i)] = " ".join(text.split())
        (data / f"{i}.txt").parent.mkdir(parents=True, exist_ok=True)
        (data / f"{i}.txt").write_bytes(text.encode("gbk" if i % 3 == 0 else "utf-8"))
        write_image(data / f"{i}.jpg", (20 + i % 4, 16), seed=i)
    return texts


def make_mvsa(root: Path, layout: str) -> dict:
    """Raw MVSA in ``layout`` (single, multiple: labelResultAll.txt; subset: label/train.txt of guid,tag).

    Adds a labelled id whose photo is missing. Returns the texts by id and the label expected per id."""
    root = Path(root)
    rows = {"single": MVSA_SINGLE_ROWS, "multiple": MVSA_MULTIPLE_ROWS, "subset": MVSA_SINGLE_ROWS}[layout]
    texts = _mvsa_tweets(root / "data", len(rows) + 1)
    (root / "data" / f"{len(rows) + 1}.jpg").unlink()  # labelled, but its photo is gone
    expected: dict[str, str] = {}
    if layout == "subset":
        lines = ["guid,tag"]
        for i, (text_label, image_label) in enumerate(rows, start=1):
            if text_label == image_label or "neutral" in (text_label, image_label):
                label = text_label if image_label == "neutral" else image_label
                expected[str(i)] = label
                lines.append(f"{i},{label}")
        lines += [f"{len(rows) + 1},positive", "9999,null"]
        (root / "label").mkdir(parents=True, exist_ok=True)
        (root / "label" / "train.txt").write_text("\n".join(lines) + "\n")
        return {"texts": texts, "labels": expected}
    annotators = 1 if layout == "single" else 3
    lines = ["ID\t" + "\t".join(["text,image"] * annotators)]
    for i, row in enumerate(rows, start=1):
        pairs = [row] if layout == "single" else row
        lines.append(f"{i}\t" + "\t".join(f"{t},{v}" for t, v in pairs))
    lines.append(f"{len(rows) + 1}\t" + "\t".join(["positive,positive"] * annotators))
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    return {"texts": texts}


# --- Hugging Face Parquet --------------------------------------------------------------------------


def write_parquet_dataset(out_dir, rows: int, rows_per_file: int, seed: int = 0):
    """Parquet files as the Hugging Face Hub serves them (``train-00000-of-00010.parquet``): an
    embedded-bytes image column (distinct 16x16 PNGs), an 8-word text and a string label. For measuring
    ``mitp prepare hf`` on large sets. Returns the directory."""
    import pyarrow as pa  # optional (the hf extra brings it), and only this generator needs it
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    words = sorted(w for ws in WORD_SETS.values() for w in ws)
    schema = pa.schema(
        [
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("text", pa.string()),
            ("label", pa.string()),
        ]
    )
    files = -(-rows // rows_per_file)
    for part in range(files):
        count = min(rows_per_file, rows - part * rows_per_file)
        images, texts, labels = [], [], []
        for _ in range(count):
            buf = io.BytesIO()
            Image.frombytes("RGB", (16, 16), rng.randbytes(16 * 16 * 3)).save(buf, "PNG")
            images.append({"bytes": buf.getvalue(), "path": None})
            texts.append(" ".join(rng.choices(words, k=8)))
            labels.append(rng.choice(sorted(COLOURS)))
        pq.write_table(
            pa.table({"image": images, "text": texts, "label": labels}, schema=schema),
            out / f"train-{part:05d}-of-{files:05d}.parquet",
        )
    return out
