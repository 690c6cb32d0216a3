"""mitp prepare hf: save_to_disk folders, Parquet files and imagefolders give the manifest the equivalent
JSONL input gives; columns, labels, splits and bad rows are named. Every dataset is generated here."""

import json
import sys
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")  # an optional extra; CI installs the dev extras, which include it

from data_fixtures import write_image  # noqa: E402
from mitp.app.cli import main  # noqa: E402
from mitp.data.errors import BadRecord, CorruptImage, MissingColumn, UnknownLabel  # noqa: E402
from mitp.data.manifest import SPLITS, read_labels, read_split  # noqa: E402
from mitp.data.prepare import prepare  # noqa: E402

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
    assert main(["prepare", "hf", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
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
    with pytest.raises(BadRecord, match=r"test row 2: id 'train-5' is already used by train row 5"):
        prepare("hf", tmp_path / "source", tmp_path / "out", id_column="uid")
    assert not list((tmp_path / "out").glob(".mitp-rows-*"))


def test_generated_parquet_files_convert_with_carved_splits(tmp_path):
    """The generator behind docs/data.md's memory measurement: 3 files of Hub-style Parquet, all converted."""
    from mitp.synthetic import COLOURS, write_parquet_dataset

    write_parquet_dataset(tmp_path / "src", rows=50, rows_per_file=20)
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    conv = prepare("hf", tmp_path / "src", tmp_path / "out")
    assert sum(conv.counts.values()) == 50 and conv.counts["val"] > 0 and conv.counts["test"] > 0
    assert read_labels(tmp_path / "out").labels == tuple(sorted(COLOURS))
    assert len(list((tmp_path / "out" / "images").iterdir())) == 50  # distinct images, each written once
