"""mitp prepare hf: save_to_disk folders, Parquet files and imagefolders give the manifest the equivalent
JSONL input gives; columns, labels, splits and bad rows are named. Every dataset is generated here."""

import json
import re
import sys
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")  # an optional extra; CI installs the dev extras, which include it

from data_fixtures import write_image, write_parquet_dataset  # noqa: E402
from mitp.app.cli import main  # noqa: E402
from mitp.data.errors import (  # noqa: E402
    BadLabels,
    BadRecord,
    CorruptImage,
    DuplicateId,
    EmptySplit,
    MissingColumn,
    UnknownLabel,
)
from mitp.data.manifest import SPLITS, read_labels, read_split  # noqa: E402
from mitp.data.prepare import prepare  # noqa: E402
from mitp.synthetic import COLOURS  # noqa: E402

NAMES = ["cat", "dog", "eel"]
SIZES = {"train": 12, "validation": 3, "test": 3}


def rows(root: Path, multi: bool = False) -> dict[str, list[dict]]:
    """Per split: id, a PNG written under root (two rows share one image), a text and the label index(es)."""
    out, k = {}, 0
    for split, n in SIZES.items():
        out[split] = []
        for i in range(n):
            image = write_image(root / "pics" / f"{split}{i}.png", seed=k if i else 0)  # every first is the same
            label = [k % 3, (k + 1) % 3] if multi else k % 3
            out[split].append(
                {"uid": f"{split}-{i}", "image": str(image), "text": f"a {NAMES[k % 3]} number {k}", "label": label}
            )
            k += 1
    return out


def dataset_dict(table: dict[str, list[dict]], multi: bool = False, string_labels: bool = False):
    label = datasets.ClassLabel(names=NAMES)
    if string_labels:
        label = datasets.Value("string")
    features = datasets.Features(
        {
            "uid": datasets.Value("string"),
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            "label": datasets.List(label) if multi else label,
        }
    )

    def value(x):
        if not string_labels:
            return x
        return [NAMES[i] for i in x] if multi else NAMES[x]

    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {
                    "uid": [r["uid"] for r in rs],
                    "image": [{"bytes": Path(r["image"]).read_bytes(), "path": None} for r in rs],
                    "text": [r["text"] for r in rs],
                    "label": [value(r["label"]) for r in rs],
                },
                features=features,
            )
            for split, rs in table.items()
        }
    )


def jsonl_reference(table, root: Path, out: Path, multi: bool = False) -> Path:
    lines = [
        json.dumps(
            {
                "uid": r["uid"],
                "image": r["image"],
                "text": r["text"],
                "label": [NAMES[i] for i in r["label"]] if multi else NAMES[r["label"]],
                "part": split,
            }
        )
        for split, rs in table.items()
        for r in rs
    ]
    (root / "ref.jsonl").write_text("\n".join(lines) + "\n")
    prepare(
        "jsonl",
        None,
        out,
        input=root / "ref.jsonl",
        id_column="uid",
        split_column="part",
        labels=NAMES,
        multi_label=multi,
    )
    return out


def same_manifests(a: Path, b: Path, external_a: bool = True):
    for split in SPLITS:
        one = sorted(read_split(a, split, allow_external_paths=external_a)[0], key=lambda s: s.id)
        two = sorted(read_split(b, split)[0], key=lambda s: s.id)
        assert [(s.id, s.text, s.label) for s in one] == [(s.id, s.text, s.label) for s in two], split
        assert [Path(s.image_path()).read_bytes() for s in one] == [Path(s.image_path()).read_bytes() for s in two]
    assert read_labels(a) == read_labels(b)


@pytest.mark.parametrize("form", ["save_to_disk", "parquet"])
def test_a_dataset_dict_converts_to_the_manifest_of_the_equivalent_jsonl(tmp_path, form):
    table = rows(tmp_path)
    source = tmp_path / "source"
    if form == "save_to_disk":
        dataset_dict(table).save_to_disk(str(source))
    else:
        source.mkdir()
        for split, ds in dataset_dict(table).items():
            ds.to_parquet(str(source / f"{split}-00000-of-00001.parquet"))
    conv = prepare("hf", source, tmp_path / "out", id_column="uid")
    same_manifests(jsonl_reference(table, tmp_path, tmp_path / "ref"), tmp_path / "out")
    assert conv.counts == {"train": 12, "val": 3, "test": 3}
    stored = list((tmp_path / "out" / "images").iterdir())
    assert len(stored) == 18 - 2  # the three first rows share one image: stored once


@pytest.mark.parametrize("string_labels", [False, True])
def test_a_list_of_labels_is_multi_label(tmp_path, string_labels):
    table = rows(tmp_path, multi=True)
    dataset_dict(table, multi=True, string_labels=string_labels).save_to_disk(str(tmp_path / "source"))
    prepare("hf", tmp_path / "source", tmp_path / "out", id_column="uid")
    assert read_labels(tmp_path / "out").task == "multi_label"
    same_manifests(jsonl_reference(table, tmp_path, tmp_path / "ref", multi=True), tmp_path / "out")


def test_an_imagefolder_with_metadata_converts_and_carves_its_missing_splits(tmp_path):
    folder = tmp_path / "folder"
    lines = []
    for i in range(20):
        write_image(folder / f"img{i}.png", seed=i)
        lines.append(json.dumps({"file_name": f"img{i}.png", "text": f"photo {i}", "label": NAMES[i % 2]}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    conv = prepare("hf", folder, tmp_path / "out")
    assert read_labels(tmp_path / "out").labels == ("cat", "dog")  # a string column: its sorted values
    assert conv.counts == {"train": 16, "val": 2, "test": 2}  # per label ceil(0.1 x 10) to val and to test
    assert any("carved from train" in note for note in conv.notes)
    sample = read_split(tmp_path / "out", "train")[0][0]
    assert Path(sample.image_path()).read_bytes() == (folder / f"img{sample.id.split('-')[1]}.png").read_bytes()


def test_a_missing_column_lists_the_datasets_columns(tmp_path, capsys):
    dataset_dict(rows(tmp_path)).save_to_disk(str(tmp_path / "source"))
    with pytest.raises(
        MissingColumn,
        match=r"no text column 'caption'; the dataset's columns are 'uid', 'image', "
        r"'text', 'label' \(choose with --text-column\)",
    ):
        prepare("hf", tmp_path / "source", tmp_path / "out", text_column="caption")
    assert (
        main(
            [
                "prepare",
                "hf",
                str(tmp_path / "source"),
                "--out",
                str(tmp_path / "o"),
                "--label-column",
                "y",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "[missing_column]" in capsys.readouterr().err


def test_a_corrupt_image_is_named_by_row_or_skipped_and_counted(tmp_path):
    table = rows(tmp_path)
    ds = dataset_dict(table)
    broken = ds["train"].to_dict()
    broken["image"][4] = {"bytes": b"not an image", "path": None}
    ds["train"] = datasets.Dataset.from_dict(broken, features=ds["train"].features)
    ds.save_to_disk(str(tmp_path / "source"))
    with pytest.raises(CorruptImage, match=r"train row 4 \(id 'train-4'\): image cannot be decoded"):
        prepare("hf", tmp_path / "source", tmp_path / "out", id_column="uid")
    conv = prepare("hf", tmp_path / "source", tmp_path / "skip", id_column="uid", on_bad_sample="skip")
    assert dict(conv.dropped) == {"bad image (corrupt_image)": 1} and conv.counts["train"] == 11


def test_a_label_outside_the_class_label_is_named(tmp_path):
    """Parquet written by another tool: the schema says ClassLabel(cat, dog, eel), a row holds 7."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = datasets.Features(
        {"image": datasets.Image(), "text": datasets.Value("string"), "label": datasets.ClassLabel(names=NAMES)}
    )
    image = write_image(tmp_path / "x.png").read_bytes()
    table = pa.table(
        {"image": [{"bytes": image, "path": None}] * 2, "text": ["a", "b"], "label": pa.array([0, 7], pa.int64())}
    )
    metadata = {b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode()}
    (tmp_path / "src").mkdir()
    pq.write_table(table.replace_schema_metadata(metadata), tmp_path / "src" / "train.parquet")
    with pytest.raises(UnknownLabel, match=r"train row 1: label value 7 is not a class of the ClassLabel"):
        prepare("hf", tmp_path / "src", tmp_path / "out")


def test_without_datasets_the_command_says_which_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)
    (tmp_path / "src").mkdir()
    assert main(["prepare", "hf", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "pip install 'mitp[hf]'" in capsys.readouterr().err


@pytest.mark.parametrize("multi", [False, True])
def test_carved_splits_match_the_jsonl_converters_carving(tmp_path, multi):
    """A train-only dataset is carved from the on-disk row store exactly as the in-memory carving does."""
    table = {"train": [r for rs in rows(tmp_path, multi=multi).values() for r in rs]}
    for i, r in enumerate(table["train"]):
        r["uid"] = f"u{(i * 7) % 18:02d}"  # ids in another order than the rows
    dataset_dict(table, multi=multi).save_to_disk(str(tmp_path / "source"))
    conv = prepare("hf", tmp_path / "source", tmp_path / "out", id_column="uid", seed=3)
    lines = [
        json.dumps(
            {
                "uid": r["uid"],
                "image": r["image"],
                "text": r["text"],
                "label": [NAMES[i] for i in r["label"]] if multi else NAMES[r["label"]],
            }
        )
        for r in table["train"]
    ]
    (tmp_path / "ref.jsonl").write_text("\n".join(lines) + "\n")
    prepare(
        "jsonl",
        None,
        tmp_path / "ref",
        input=tmp_path / "ref.jsonl",
        id_column="uid",
        labels=NAMES,
        multi_label=multi,
        seed=3,
    )
    same_manifests(tmp_path / "ref", tmp_path / "out", external_a=False)
    assert sum(conv.counts.values()) == 18 and conv.counts["val"] > 0 and conv.counts["test"] > 0
    assert not list((tmp_path / "out").glob(".mitp-rows-*"))  # the scratch database is gone


def test_a_repeated_id_names_both_rows_and_leaves_no_scratch_file(tmp_path):
    table = rows(tmp_path)
    table["test"][2]["uid"] = "train-5"
    dataset_dict(table).save_to_disk(str(tmp_path / "source"))
    with pytest.raises(DuplicateId, match=r"source test row 2: id 'train-5' already used at train row 5"):
        prepare("hf", tmp_path / "source", tmp_path / "out", id_column="uid")
    assert not list((tmp_path / "out").glob(".mitp-rows-*"))


def test_generated_parquet_files_convert_with_carved_splits(tmp_path):
    """The generator behind docs/data.md's memory measurement: 3 files of Hub-style Parquet, all converted."""
    write_parquet_dataset(tmp_path / "src", rows=50, rows_per_file=20)
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    conv = prepare("hf", tmp_path / "src", tmp_path / "out")
    assert sum(conv.counts.values()) == 50 and conv.counts["val"] > 0 and conv.counts["test"] > 0
    assert read_labels(tmp_path / "out").labels == tuple(sorted(COLOURS))
    assert len(list((tmp_path / "out" / "images").iterdir())) == 50  # distinct images, each written once


# --- data as users have it: odd columns, hostile images, tiny sources; --out whole or as it was ----------


def parquet_source(
    folder: Path, labels, texts=None, images=None, rows_per_group=None, name="train.parquet", ids=None, seed=0
) -> Path:
    """``folder/name``: embedded PNGs (distinct, from ``seed``), texts, ``labels`` and ``ids`` (an ``id`` column)
    as given (their Arrow types)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    images = images or [
        {"bytes": write_image(folder / "pngs" / f"{seed + i}.png", seed=seed + i).read_bytes()} for i in range(n)
    ]
    texts = texts if texts is not None else [f"text number {seed + i}" for i in range(n)]
    columns = {"image": images, "text": texts, "label": labels} | ({"id": ids} if ids is not None else {})
    pq.write_table(pa.table(columns), folder / name, row_group_size=rows_per_group)
    return folder


def decompression_bomb() -> bytes:
    """A PNG a few hundred bytes long whose header claims 20000 x 20000 pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 20001 * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def all_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_decompression_bomb_is_named_by_row_or_skipped_and_counted(tmp_path):
    labels = ["cat", "dog"] * 10
    images = [{"bytes": write_image(tmp_path / "p" / f"{i}.png", seed=i).read_bytes()} for i in range(20)]
    images[3] = {"bytes": decompression_bomb()}
    source = parquet_source(tmp_path / "src", labels, images=images)
    with pytest.raises(CorruptImage, match=r"train row 3 \(id 'train-3'\): image too large to decode safely"):
        prepare("hf", source, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # no partial images/ left behind
    conv = prepare("hf", source, tmp_path / "skip", on_bad_sample="skip")
    assert dict(conv.dropped) == {"bad image (corrupt_image)": 1} and sum(conv.counts.values()) == 19


@pytest.mark.parametrize(
    "values, names",
    [
        ([10, 2, 0, 2, 10, 0] * 4, ("0", "2", "10")),  # numeric order, not "10" < "2"
        ([True, False] * 10, ("False", "True")),
    ],
)
def test_integer_and_bool_label_columns_are_class_values(tmp_path, values, names):
    conv = prepare("hf", parquet_source(tmp_path / "src", values), tmp_path / "out")
    assert read_labels(tmp_path / "out").labels == names and sum(conv.counts.values()) == len(values)
    written = {s.id: s.label for split in SPLITS for s in read_split(tmp_path / "out", split)[0]}
    assert written == {f"train-{i}": str(v) for i, v in enumerate(values)}


def test_a_float_label_column_and_a_text_column_of_numbers_are_refused_before_any_row_is_read(tmp_path):
    with pytest.raises(BadRecord, match=r"label column 'label' holds float64 values, not classes"):
        prepare("hf", parquet_source(tmp_path / "floats", [0.0, 1.0] * 10), tmp_path / "out")
    numbers = parquet_source(tmp_path / "numbers", ["cat", "dog"] * 10, texts=list(range(20)))
    with pytest.raises(BadRecord, match=r"text column 'text' holds int64 values, not text"):
        prepare("hf", numbers, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # starts interpreters
def test_a_conversion_that_stops_mid_stream_exits_2_with_one_line_every_time(tmp_path):
    """A half-read Parquet stream left to the interpreter's shutdown can abort the process (exit 134) after the
    error line (apache/arrow#45214): each pass closes its stream. Many row groups, so the stream is mid-file
    when the error comes; a float label column is refused before any stream is opened."""
    import os
    import subprocess

    images = [{"bytes": decompression_bomb()}] + [{"bytes": write_image(tmp_path / "x.png").read_bytes()}] * 299
    bomb = parquet_source(tmp_path / "bomb", ["cat", "dog"] * 150, images=images, rows_per_group=10)
    floats = parquet_source(tmp_path / "floats", [0.5, 1.5] * 150, images=images, rows_per_group=10)
    for source, kind in ((bomb, "[corrupt_image]"), (floats, "[bad_record]")) * 3:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mitp",
                "prepare",
                "hf",
                str(source),
                "--out",
                str(tmp_path / "out"),
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert (done.returncode, len(done.stderr.splitlines())) == (2, 1), done.stderr
        assert kind in done.stderr and not (tmp_path / "out").exists()


def test_a_source_without_rows_or_too_small_for_three_splits_is_an_empty_split(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "none").mkdir()
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary())])), ("text", pa.string()), ("label", pa.string())])
    pq.write_table(schema.empty_table(), tmp_path / "none" / "train.parquet")
    with pytest.raises(EmptySplit, match=r"none: no rows: every \.parquet file of the source is empty"):
        prepare("hf", tmp_path / "none", tmp_path / "out")
    with pytest.raises(EmptySplit, match=r"2 labelled train rows are too few to carve val and test from"):
        prepare("hf", parquet_source(tmp_path / "two", ["cat", "dog"]), tmp_path / "out")
    with pytest.raises(EmptySplit, match=r"no labelled rows \(4 rows, none with a label\)"):
        prepare("hf", parquet_source(tmp_path / "unlabelled", [None, "", " ", None]), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_single_class_is_not_a_single_label_dataset(tmp_path):
    with pytest.raises(BadLabels, match=r"at least 2 classes, found \['cat'\]"):
        prepare("hf", parquet_source(tmp_path / "src", ["cat"] * 12), tmp_path / "out")


@pytest.mark.parametrize("failure", ["corrupt image", "interrupted"])
def test_a_failed_or_interrupted_prepare_leaves_the_dataset_in_out_as_it_was(tmp_path, monkeypatch, failure):
    from mitp.data.prepare import hf

    good = parquet_source(tmp_path / "good", ["cat", "dog"] * 10)
    prepare("hf", good, tmp_path / "out")
    before = all_files(tmp_path / "out")
    images = [{"bytes": write_image(tmp_path / "p" / f"{i}.png", seed=50 + i).read_bytes()} for i in range(20)]
    if failure == "corrupt image":
        images[15] = {"bytes": b"not an image"}
    else:
        written = []
        real = hf._write_image

        def write_then_interrupt(*args):
            written.append(real(*args))
            if len(written) == 10:
                raise KeyboardInterrupt
            return written[-1]

        monkeypatch.setattr(hf, "_write_image", write_then_interrupt)
    bad = parquet_source(tmp_path / "bad", ["cat", "dog"] * 10, images=images)
    with pytest.raises(CorruptImage if failure == "corrupt image" else KeyboardInterrupt):
        prepare("hf", bad, tmp_path / "out")
    assert all_files(tmp_path / "out") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "out", "p"]  # no staging folder left


def test_overwrite_replaces_a_dataset_whole_images_included(tmp_path, capsys):
    first = parquet_source(tmp_path / "first", ["cat", "dog"] * 10)
    second = tmp_path / "second"
    images = [{"bytes": write_image(tmp_path / "p" / f"{i}.png", seed=100 + i).read_bytes()} for i in range(16)]
    parquet_source(second, ["eel", "fox"] * 8, images=images)
    out, fresh = tmp_path / "out", tmp_path / "fresh"

    def run(source, out, *flags):
        return main(["prepare", "hf", str(source), "--out", str(out), "--no-progress", *flags])

    assert run(first, out) == 0
    assert run(second, out) == 2 and "--overwrite replaces it" in capsys.readouterr().err
    assert run(second, out, "--overwrite") == 0
    assert run(second, fresh) == 0
    assert all_files(out) == all_files(fresh)  # nothing of the first dataset lingers
    assert len(list((out / "images").iterdir())) == 16 and read_labels(out).labels == ("eel", "fox")


def test_a_pass_closes_its_stream_however_it_ends():
    from mitp.data.prepare.common import no_progress
    from mitp.data.prepare.hf import _rows

    closed = []

    def stream():
        try:
            yield from ({"n": n} for n in range(5))
        finally:
            closed.append("stream")

    with pytest.raises(BadRecord), _rows(stream(), no_progress, "reading") as rows:
        for index, _ in rows:
            if index == 1:
                raise BadRecord(None, None, "a bad row")
    with _rows(stream(), no_progress, "reading") as rows:
        next(rows)  # left half-read
    assert closed == ["stream", "stream"]  # closed now, not when the interpreter shuts down


# --- splits named as datasets names them, below the source only -----------------------------------


def manifest_texts(out: Path) -> dict[str, set[str]]:
    return {split: {s.text for s in read_split(out, split)[0]} for split in SPLITS}


def test_folders_above_the_source_never_name_a_split(tmp_path):
    """A source stored under a folder named train keeps its own validation and test: nothing re-carved."""
    source = tmp_path / "x" / "train" / "src"
    for name, n, seed in (("train.parquet", 20, 0), ("validation.parquet", 4, 100), ("test.parquet", 4, 200)):
        parquet_source(source, ["cat", "dog"] * (n // 2), name=name, seed=seed)
    conv = prepare("hf", source, tmp_path / "out")
    assert conv.counts == {"train": 20, "val": 4, "test": 4} and not any("carved" in n for n in conv.notes)
    texts = manifest_texts(tmp_path / "out")
    assert texts["test"] == {f"text number {200 + i}" for i in range(4)}  # the test file's rows, none of train's


@pytest.mark.parametrize(
    "layout",
    [
        {"training.parquet": "train", "testing.parquet": "test", "dev.parquet": "val"},
        {"train_0.parquet": "train", "test_0.parquet": "test", "valid-00000-of-00001.parquet": "val"},
        {"train-00000-of-00002.parquet": "train", "train-00001-of-00002.parquet": "train", "eval.parquet": "test"},
        {"data/train/part-0.parquet": "train", "data/validation/part-0.parquet": "val", "data/test/x.parquet": "test"},
    ],
    ids=["words", "underscores", "shards", "folders"],
)
def test_parquet_files_get_the_splits_datasets_gives_them(tmp_path, layout):
    for k, name in enumerate(layout):
        parquet_source(tmp_path / "src", ["cat", "dog"] * 3, name=name, seed=10 * k)
    prepare("hf", tmp_path / "src", tmp_path / "out")
    texts = manifest_texts(tmp_path / "out")
    for k, (name, split) in enumerate(layout.items()):
        rows = {f"text number {10 * k + i}" for i in range(6)}
        if split == "train":  # val or test may be carved from train: each row is still in train, val or test
            assert rows <= texts["train"] | texts["val"] | texts["test"] and not rows & texts["test"] & texts["val"]
        else:
            assert rows == texts[split], name
    carved = {"val", "test"} - set(layout.values())
    assert all(texts[split] for split in carved)


def test_a_file_whose_folder_and_name_say_different_splits_is_refused(tmp_path):
    from mitp.data.prepare.hf_source import HFError

    parquet_source(tmp_path / "src", ["cat", "dog"] * 3, name="train/test.parquet")
    with pytest.raises(HFError, match=r"test\.parquet: which split is this file\? its folders say train and its "):
        prepare("hf", tmp_path / "src", tmp_path / "out")


def test_a_file_that_names_no_split_beside_ones_that_do_is_left_out_with_a_warning(tmp_path):
    for k, name in enumerate(("train.parquet", "test.parquet", "extra.parquet")):
        parquet_source(tmp_path / "src", ["cat", "dog"] * 3, name=name, seed=10 * k)
    conv = prepare("hf", tmp_path / "src", tmp_path / "out")
    assert sum(conv.counts.values()) == 12
    assert any("name no split" in w and "extra.parquet" in w for w in conv.warnings)


# --- column types that differ between files --------------------------------------------------------


@pytest.mark.parametrize(
    "names", [("train-00000-of-00002.parquet", "train-00001-of-00002.parquet"), ("train.parquet", "test.parquet")]
)
def test_a_column_whose_type_differs_between_files_is_one_line_naming_both(tmp_path, capfd, names):
    parquet_source(tmp_path / "src", ["a", "b"] * 4, name=names[0])
    parquet_source(tmp_path / "src", [0, 1] * 4, name=names[1], seed=50)
    splits = [("test" if "test" in name else "train") for name in names]
    message = (
        rf"column 'label' holds string in \S+{names[0]} \({splits[0]}\) but int64 in \S+{names[1]} \({splits[1]}\)"
    )
    with pytest.raises(BadRecord, match=message):
        prepare("hf", tmp_path / "src", tmp_path / "out")
    assert main(["prepare", "hf", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1 and names[0] in err and names[1] in err and "int64" in err, err


# --- classes and carving count the rows kept ----------------------------------------------------------


def test_classes_are_those_of_the_rows_kept(tmp_path):
    labels = ["cat", "dog", "eel"] * 8
    texts = [None if label == "eel" else f"text {i}" for i, label in enumerate(labels)]  # no eel row is kept
    conv = prepare("hf", parquet_source(tmp_path / "src", labels, texts=texts), tmp_path / "out")
    assert read_labels(tmp_path / "out").labels == ("cat", "dog") and conv.dropped["empty text"] == 8
    assert sum(conv.counts.values()) == 16 and conv.counts["val"] and conv.counts["test"]
    no_text = [None if i % 2 == 0 else f"text {i}" for i in range(16)]  # no cat row is kept
    with pytest.raises(BadLabels, match=r"at least 2 classes, found \['dog'\] in the rows kept"):
        prepare("hf", parquet_source(tmp_path / "one", ["cat", "dog"] * 8, texts=no_text), tmp_path / "out2")


def test_splits_are_carved_from_the_rows_kept(tmp_path):
    """Bad images skipped: the carving sees only the rows written, so every split holds every class."""
    labels = ["cat", "dog"] * 6
    images = [{"bytes": write_image(tmp_path / "p" / f"{i}.png", seed=i).read_bytes()} for i in range(12)]
    for i in range(6, 12):
        images[i] = {"bytes": b"not an image"}  # 3 cats and 3 dogs kept: one of each per split
    source = parquet_source(tmp_path / "src", labels, images=images)
    conv = prepare("hf", source, tmp_path / "out", on_bad_sample="skip")
    assert conv.dropped["bad image (corrupt_image)"] == 6
    assert {split: dict(conv.label_counts(split)) for split in SPLITS} == {
        split: {"cat": 1, "dog": 1} for split in SPLITS
    }


# --- ids: refused before --out changes -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, "", "   "])
def test_a_null_or_blank_id_is_refused_before_out_changes(tmp_path, capfd, bad):
    good = parquet_source(tmp_path / "good", ["cat", "dog"] * 10)
    assert main(["prepare", "hf", str(good), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    before = all_files(tmp_path / "out")
    ids = [f"x{i}" for i in range(20)]
    ids[3] = bad
    source = parquet_source(tmp_path / "bad", ["cat", "dog"] * 10, ids=ids, seed=40)
    with pytest.raises(BadRecord, match=rf"train row 3: no id \(column 'id' holds {re.escape(repr(bad))}\)"):
        prepare("hf", source, tmp_path / "new", id_column="id")
    capfd.readouterr()
    argv = ["prepare", "hf", str(source), "--out", str(tmp_path / "out"), "--id-column", "id", "--overwrite"]
    assert main([*argv, "--no-progress"]) == 2
    assert "train row 3: no id" in capfd.readouterr().err
    assert all_files(tmp_path / "out") == before and not (tmp_path / "new").exists()


def test_a_manifest_that_does_not_read_back_never_replaces_out(tmp_path, monkeypatch):
    """The staged manifest is read back before it replaces --out: a converter bug cannot leave a dataset that
    runs refuse."""
    from mitp.data.prepare import hf
    from mitp.data.prepare.hf_source import HFError

    good = parquet_source(tmp_path / "good", ["cat", "dog"] * 10)
    prepare("hf", good, tmp_path / "out")
    before = all_files(tmp_path / "out")
    monkeypatch.setattr(hf, "_sample_id", lambda value, *args: "" if value == "x3" else str(value))
    source = parquet_source(tmp_path / "bad", ["cat", "dog"] * 10, ids=[f"x{i}" for i in range(20)], seed=40)
    with pytest.raises(HFError, match=r"does not read back \(\w+\.jsonl line 1: 'id' must be a non-empty string"):
        prepare("hf", source, tmp_path / "out", id_column="id")
    assert all_files(tmp_path / "out") == before


def test_an_id_column_of_floats_is_refused_before_any_row_is_read(tmp_path):
    source = parquet_source(tmp_path / "src", ["cat", "dog"] * 4, ids=[1.0 + i * 1e-17 for i in range(8)])
    with pytest.raises(BadRecord, match=r"id column 'id' holds float64 values; ids are strings or integers"):
        prepare("hf", source, tmp_path / "out", id_column="id")


# --- what the libraries refuse: one line naming the file -----------------------------------------------------


def damaged_sources(tmp_path: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (source, the file the error must name, its kind)."""
    out = {}
    folder = tmp_path / "imagefolder"
    for i in range(4):
        write_image(folder / f"{i}.png", seed=i)
    lines = [{"file_name": f"{i}.png", "text": f"t {i}", "label": "ab"[i % 2]} for i in range(4)]
    lines[2]["file_name"] = "../../../etc/x.png"
    (folder / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    out["imagefolder escape"] = (folder, f"{folder / 'metadata.jsonl'}:3", "missing_image")
    for name in ("missing arrow", "corrupt json"):
        saved = tmp_path / name.replace(" ", "_")
        dataset_dict(rows(tmp_path)).save_to_disk(str(saved))
        if name == "missing arrow":
            arrow = next((saved / "test").glob("*.arrow"))
            arrow.unlink()
            out[name] = (saved, str(arrow), "missing_file")
        else:
            (saved / "dataset_dict.json").write_text('{"splits": ["train"\n  "test"]}')
            out[name] = (saved, f"{saved / 'dataset_dict.json'}:2", "bad_json")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "train.parquet").write_bytes(b"PAR1 this is not parquet")
    out["not parquet"] = (tmp_path / "garbage", str(tmp_path / "garbage" / "train.parquet"), "bad_record")
    return out


def test_a_file_the_libraries_cannot_read_is_one_line_naming_it(tmp_path, capfd):
    for name, (source, named, kind) in damaged_sources(tmp_path).items():
        capfd.readouterr()
        assert main(["prepare", "hf", str(source), "--out", str(tmp_path / "out"), "--no-progress"]) == 2, name
        err = capfd.readouterr().err
        assert f"[{kind}] {named}:" in err and "Traceback" not in err, (name, err)
        assert len([line for line in err.splitlines() if "error" in line]) == 1, (name, err)
        assert not (tmp_path / "out").exists()


# --- image columns -----------------------------------------------------------------------------------------


def test_a_binary_column_of_encoded_images_is_an_image_column(tmp_path):
    pngs = [write_image(tmp_path / "p" / f"{i}.png", seed=i).read_bytes() for i in range(12)]
    prepare("hf", parquet_source(tmp_path / "src", ["cat", "dog"] * 6, images=pngs), tmp_path / "out")
    written = {
        s.id: Path(s.image_path()).read_bytes() for split in SPLITS for s in read_split(tmp_path / "out", split)[0]
    }
    assert written == {f"train-{i}": png for i, png in enumerate(pngs)}


def test_an_image_column_of_numbers_says_what_it_holds_before_any_row_is_read(tmp_path):
    source = parquet_source(tmp_path / "src", ["cat", "dog"] * 6, images=list(range(12)))
    with pytest.raises(BadRecord, match=r"image column 'image' holds int64 values, not images; an image column"):
        prepare("hf", source, tmp_path / "out")


# --- a source without train rows ------------------------------------------------------------------------


def test_a_source_without_train_rows_names_the_source(tmp_path):
    parquet_source(tmp_path / "src", ["cat", "dog"] * 4, name="validation.parquet")
    parquet_source(tmp_path / "src", ["cat", "dog"] * 4, name="test.parquet", seed=20)
    with pytest.raises(EmptySplit, match=r"no train rows \(train 0, val 8, test 8 rows kept\)") as caught:
        prepare("hf", tmp_path / "src", tmp_path / "out")
    assert caught.value.path == str(tmp_path / "src")


# --- docs/data.md's worked example, as written ----------------------------------------------------------------


def test_the_documented_worked_example_runs_as_written(tmp_path, monkeypatch, capsys):
    import shlex

    text = (Path(__file__).parents[1] / "docs" / "data.md").read_text()
    example = text[text.index("Worked example, a `DatasetDict` saved by `datasets`") :]
    code = re.search(r"```python\n(.*?)```", example, re.S).group(1)
    commands = re.search(r"```\n(mitp prepare hf .*?)```", example, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/data.md", "exec"), {})
    for command in commands.splitlines():
        argv = shlex.split(command.split("#")[0])
        assert argv[0] == "mitp" and main(argv[1:]) == 0, command
    assert {split: len(read_split(tmp_path / "data" / "mine", split)[0]) for split in SPLITS} == {
        "train": 4,
        "val": 2,
        "test": 2,
    }
