"""Converters: tiny raw datasets in each layout -> manifests; their errors; the CLI."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from data_fixtures import make_food101, make_mmimdb, make_snli_ve, write_image
from mitp.app.cli import main
from mitp.data.errors import (
    BadJson,
    BadRecord,
    DuplicateId,
    EmptySplit,
    MissingColumn,
    MissingSplitFile,
    UnknownLabel,
)
from mitp.data.manifest import SPLITS, read_labels, read_split
from mitp.data.prepare import MMIMDB_GENRES, PUBLISHED, prepare

FILES = [f"{s}.jsonl" for s in SPLITS] + ["labels.json"]


def read_in_place(out, split):
    """Converters reference raw images where they are, outside the output directory."""
    return read_split(out, split, allow_external_paths=True)


def manifest_bytes(out: Path) -> dict:
    return {name: (out / name).read_bytes() for name in FILES}


def labels_of(out: Path, split: str) -> Counter:
    samples, _ = read_in_place(out, split)
    return Counter(s.label for s in samples)


def assert_images_resolve(out: Path):
    for split in SPLITS:
        for s in read_in_place(out, split)[0]:
            assert Path(s.image_path()).is_file(), s
            assert not Path(s.image).is_absolute()  # relative to the manifest directory


# --- UPMC-Food101 -------------------------------------------------------------------------------


def test_food101_converts_with_stratified_val_and_drops(tmp_path):
    expected = make_food101(tmp_path / "raw")
    conv = prepare("food101", tmp_path / "raw", tmp_path / "out", val_fraction=0.1, seed=0)
    # per class ceil(0.1 * n) to val: apple_pie 20 -> 2, ramen 11 -> 2, sushi 3 -> 1
    assert labels_of(tmp_path / "out", "val") == {"apple_pie": 2, "ramen": 2, "sushi": 1}
    assert labels_of(tmp_path / "out", "train") == {"apple_pie": 18, "ramen": 9, "sushi": 2}
    assert labels_of(tmp_path / "out", "test") == expected["test"]
    assert conv.counts == {"train": 29, "val": 5, "test": 6}
    assert dict(conv.dropped) == expected["dropped"]
    assert conv.dropped_examples["image not found"] == [f"{tmp_path / 'raw' / 'texts' / 'train_titles.csv'}:36"]
    assert read_labels(tmp_path / "out").labels == ("apple_pie", "ramen", "sushi")
    # Tiny data never matches the published counts: one warning per split names both numbers.
    assert len(conv.warnings) == 3 and "61,142" in conv.warnings[0] and "22,716" in conv.warnings[2]
    sample = read_in_place(tmp_path / "out", "test")[0][0]
    assert sample.id == "test/apple_pie/apple_pie_test0"
    assert sample.text == "Recipe 0 for apple pie, with a comma"  # quoted comma kept
    assert_images_resolve(tmp_path / "out")
    # val ids come from train only
    assert all(s.id.startswith("train/") for s in read_in_place(tmp_path / "out", "val")[0])


def test_food101_twice_is_byte_identical_and_seed_matters(tmp_path):
    make_food101(tmp_path / "raw")
    prepare("food101", tmp_path / "raw", tmp_path / "a", seed=1)
    prepare("food101", tmp_path / "raw", tmp_path / "b", seed=1)
    prepare("food101", tmp_path / "raw", tmp_path / "c", seed=2)
    a, b, c = (manifest_bytes(tmp_path / d) for d in "abc")
    assert a == b
    assert a["val.jsonl"] != c["val.jsonl"] and a["test.jsonl"] == c["test.jsonl"]


def test_food101_unquoted_commas_and_header_are_tolerated(tmp_path):
    raw = tmp_path / "raw"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            for i in range(2):
                write_image(raw / "images" / split / cls / f"{cls}{i}.jpg", seed=i)
    (raw / "texts").mkdir()
    (raw / "texts" / "train_titles.csv").write_text(
        "filename,text,class\na0.jpg,one, two, three,a\na1.jpg,x,a\nb0.jpg,y,b\nb1.jpg,z,b\n"
    )
    (raw / "texts" / "test_titles.csv").write_text("a0.jpg,t,a\nb0.jpg,t,b\n")
    prepare("food101", raw, tmp_path / "out")
    texts = {s.id: s.text for split in ("train", "val") for s in read_in_place(tmp_path / "out", split)[0]}
    assert texts["train/a/a0"] == "one, two, three" and len(texts) == 4
    # no val asked for: a split without samples is refused, and nothing is written
    with pytest.raises(EmptySplit, match=r"again/val\.jsonl: no samples for val \(train 4, val 0, test 2\)"):
        prepare("food101", raw, tmp_path / "again", val_fraction=0.0)
    assert not (tmp_path / "again").exists()


def test_food101_missing_csv_and_missing_column(tmp_path):
    make_food101(tmp_path / "raw")
    csv_path = tmp_path / "raw" / "texts" / "train_titles.csv"
    rows = list(csv.reader(csv_path.open()))
    rows[4] = rows[4][:2]  # line 5: filename,text -- no class column
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(MissingColumn) as info:
        prepare("food101", tmp_path / "raw", tmp_path / "out")
    assert str(info.value).startswith(f"{csv_path}:5: ") and "expected 3 fields" in str(info.value)
    (tmp_path / "raw" / "texts" / "test_titles.csv").unlink()
    csv_path.unlink()
    with pytest.raises(MissingSplitFile, match="train_titles.csv"):
        prepare("food101", tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out" / "train.jsonl").exists()


# --- MM-IMDB ----------------------------------------------------------------------------------------


def test_mmimdb_converts_genres_plots_and_dev_split(tmp_path):
    expected = make_mmimdb(tmp_path / "raw")
    conv = prepare("mmimdb", tmp_path / "raw", tmp_path / "out")
    assert conv.counts == expected["counts"]
    assert dict(conv.dropped) == expected["dropped"]
    space = read_labels(tmp_path / "out")
    assert space.task == "multi_label" and space.labels == MMIMDB_GENRES and len(space.labels) == 23
    assert not {"News", "Reality-TV", "Talk-Show"} & set(space.labels)
    samples = {s.id: s for split in SPLITS for s in read_in_place(tmp_path / "out", split)[0]}
    for movie, genres in expected["labels"].items():
        assert list(samples[movie].label) == genres  # News removed, order = the 23-genre order
    for movie, text in expected["texts"].items():
        assert samples[movie].text == text  # the longest plot
    assert {s.id for s in read_in_place(tmp_path / "out", "val")[0]} == {"0000007", "0000008", "0000009"}
    assert "News (1)" in conv.notes[0] and "Talk-Show (1)" in conv.notes[0]
    assert any("15,552" in w for w in conv.warnings)
    assert_images_resolve(tmp_path / "out")
    prepare("mmimdb", tmp_path / "raw", tmp_path / "again")
    assert manifest_bytes(tmp_path / "out") == manifest_bytes(tmp_path / "again")


def test_mmimdb_missing_split_json(tmp_path):
    make_mmimdb(tmp_path / "raw")
    (tmp_path / "raw" / "split.json").unlink()
    with pytest.raises(MissingSplitFile) as info:
        prepare("mmimdb", tmp_path / "raw", tmp_path / "out")
    assert str(info.value).startswith(str(tmp_path / "raw" / "split.json"))


def test_mmimdb_bad_split_json_and_movie_json(tmp_path):
    make_mmimdb(tmp_path / "raw")
    split = tmp_path / "raw" / "split.json"
    split.write_text(json.dumps({"train": ["0000001"], "test": []}))
    with pytest.raises(BadRecord, match="'dev'"):
        prepare("mmimdb", tmp_path / "raw", tmp_path / "out")
    split.write_text(json.dumps({"train": ["0000001"], "dev": ["0000001"], "test": []}))
    with pytest.raises(DuplicateId, match="0000001"):
        prepare("mmimdb", tmp_path / "raw", tmp_path / "out")
    split.write_text(json.dumps({"train": ["0000001"], "dev": ["0000002"], "test": ["0000004"]}))
    movie = tmp_path / "raw" / "dataset" / "0000002.json"
    movie.write_text('{"genres": ["Drama"],\n "plot": ["x",]}')
    with pytest.raises(BadJson) as info:
        prepare("mmimdb", tmp_path / "raw", tmp_path / "out")
    assert str(info.value).startswith(f"{movie}:2: ")


# --- SNLI-VE ------------------------------------------------------------------------------------------


def test_snli_ve_converts_both_id_spellings_and_drops(tmp_path):
    expected = make_snli_ve(tmp_path / "raw")
    conv = prepare("snli-ve", tmp_path / "raw", tmp_path / "out")
    assert conv.counts == expected["counts"]
    assert dict(conv.dropped) == expected["dropped"]
    assert read_labels(tmp_path / "out").labels == ("entailment", "neutral", "contradiction")
    train = read_in_place(tmp_path / "out", "train")[0]
    assert Counter(s.label for s in train) == {"entailment": 2, "neutral": 2, "contradiction": 2}
    by_id = {s.id: s for s in train}
    assert by_id["1000.jpg#1"].image.endswith("flickr30k_images/1000.jpg")  # Flikr30kID with .jpg
    assert by_id["1000.jpg#1"].text == "Hypothesis 1 about picture 1000."
    assert any("529,527" in w for w in conv.warnings)
    assert_images_resolve(tmp_path / "out")
    prepare("snli-ve", tmp_path / "raw", tmp_path / "again")
    assert manifest_bytes(tmp_path / "out") == manifest_bytes(tmp_path / "again")


def test_snli_ve_images_elsewhere(tmp_path):
    make_snli_ve(tmp_path / "raw", images=tmp_path / "flickr")
    conv = prepare("snli-ve", tmp_path / "raw", tmp_path / "out", images=tmp_path / "flickr")
    assert conv.counts == {"train": 6, "val": 3, "test": 3}


def test_snli_ve_line_that_is_not_json(tmp_path):
    make_snli_ve(tmp_path / "raw")
    path = tmp_path / "raw" / "snli_ve_dev.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = '{"Flickr30K_ID": "3000", "sentence2": "cut off'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadJson) as info:
        prepare("snli-ve", tmp_path / "raw", tmp_path / "out")
    assert str(info.value).startswith(f"{path}:2: ")


def test_snli_ve_unknown_gold_label_and_missing_field(tmp_path):
    make_snli_ve(tmp_path / "raw")
    path = tmp_path / "raw" / "snli_ve_test.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({"Flickr30K_ID": "4000", "sentence2": "x", "gold_label": "maybe"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UnknownLabel, match=r"snli_ve_test\.jsonl:3: gold_label 'maybe'"):
        prepare("snli-ve", tmp_path / "raw", tmp_path / "out")
    lines[2] = json.dumps({"Flickr30K_ID": "4000", "gold_label": "neutral"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MissingColumn, match=r"snli_ve_test\.jsonl:3: no 'sentence2' field"):
        prepare("snli-ve", tmp_path / "raw", tmp_path / "out")
    lines[2] = json.dumps({"sentence2": "x", "gold_label": "neutral"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MissingColumn, match="Flickr30K_ID or Flikr30kID"):
        prepare("snli-ve", tmp_path / "raw", tmp_path / "out")


def test_snli_ve_missing_split_file(tmp_path):
    make_snli_ve(tmp_path / "raw")
    (tmp_path / "raw" / "snli_ve_dev.jsonl").unlink()
    with pytest.raises(MissingSplitFile, match="snli_ve_dev.jsonl"):
        prepare("snli-ve", tmp_path / "raw", tmp_path / "out")


# --- user JSONL / CSV --------------------------------------------------------------------------------------


def _user_rows(root: Path, n_per_class: dict, with_split: bool = False) -> list[dict]:
    rows, k = [], 0
    for label, n in n_per_class.items():
        for i in range(n):
            write_image(root / "pics" / f"{label}{i}.png", seed=k)
            row = {
                "uid": f"{label}-{i}",
                "path": f"pics/{label}{i}.png",
                "caption": f"a {label} number {i}",
                "y": label,
            }
            if with_split:
                row["part"] = ["train", "train", "dev", "test"][i % 4]
            rows.append(row)
            k += 1
    return rows


def test_jsonl_carves_stratified_val_and_test(tmp_path):
    rows = _user_rows(tmp_path, {"pos": 10, "neg": 20})
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kw = dict(
        input=tmp_path / "data.jsonl",
        image_column="path",
        text_column="caption",
        label_column="y",
        id_column="uid",
        val_fraction=0.1,
        test_fraction=0.2,
        seed=5,
    )
    conv = prepare("jsonl", None, tmp_path / "out", **kw)
    assert labels_of(tmp_path / "out", "val") == {"pos": 1, "neg": 2}
    assert labels_of(tmp_path / "out", "test") == {"pos": 2, "neg": 4}
    assert labels_of(tmp_path / "out", "train") == {"pos": 7, "neg": 14}
    assert read_labels(tmp_path / "out").labels == ("neg", "pos") and conv.warnings == []
    assert_images_resolve(tmp_path / "out")
    prepare("jsonl", None, tmp_path / "again", **kw)
    assert manifest_bytes(tmp_path / "out") == manifest_bytes(tmp_path / "again")


def test_jsonl_multi_label_lists_and_split_column(tmp_path):
    rows = _user_rows(tmp_path, {"a": 4, "b": 4}, with_split=True)
    for i, r in enumerate(rows):
        r["y"] = [r["y"], "c"] if i % 2 else [r["y"]]
    rows[3]["caption"] = ""  # dropped
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    conv = prepare(
        "jsonl",
        None,
        tmp_path / "out",
        input=tmp_path / "d.jsonl",
        image_column="path",
        text_column="caption",
        label_column="y",
        id_column="uid",
        split_column="part",
    )
    assert read_labels(tmp_path / "out").task == "multi_label"
    assert conv.counts == {"train": 4, "val": 2, "test": 1} and dict(conv.dropped) == {"empty text": 1}
    assert read_labels(tmp_path / "out").labels == ("a", "b", "c")
    assert [s.label for s in read_in_place(tmp_path / "out", "val")[0]] == [("a",), ("b",)]
    assert {s.id: s.label for s in read_in_place(tmp_path / "out", "train")[0]}["b-1"] == ("b", "c")


def test_jsonl_errors_bad_json_missing_field_duplicate_id_unknown_label(tmp_path):
    rows = _user_rows(tmp_path, {"a": 3, "b": 3})
    path = tmp_path / "d.jsonl"
    kw = dict(input=path, image_column="path", text_column="caption", label_column="y", id_column="uid")

    def write(lines):
        path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))

    write(rows[:2] + ["{oops"] + rows[2:])
    with pytest.raises(BadJson, match=rf"{path.name}:3: "):
        prepare("jsonl", None, tmp_path / "out", **kw)
    write(rows[:4] + [{k: v for k, v in rows[4].items() if k != "caption"}])
    with pytest.raises(MissingColumn, match=rf"{path.name}:5: no 'caption' field"):
        prepare("jsonl", None, tmp_path / "out", **kw)
    write(rows + [rows[1]])
    with pytest.raises(DuplicateId, match=rf"{path.name}:7: id 'a-1' already used at line 2"):
        prepare("jsonl", None, tmp_path / "out", **kw)
    write(rows)
    with pytest.raises(UnknownLabel, match=rf"{path.name}:4: label 'b'"):
        prepare("jsonl", None, tmp_path / "out", labels=["a", "z"], **kw)


def test_jsonl_text_that_is_not_text_is_named_not_dropped_as_empty(tmp_path):
    rows = _user_rows(tmp_path, {"a": 4, "b": 4})
    rows[4]["caption"] = 42
    rows[1]["caption"] = None  # no text: dropped and counted
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kw = dict(input=path, image_column="path", text_column="caption", label_column="y", id_column="uid")
    with pytest.raises(BadRecord, match=rf"{path.name}:5: text column 'caption' must be a string or null, got int"):
        prepare("jsonl", None, tmp_path / "out", **kw)
    rows[4]["caption"] = "a \ud800 text"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BadRecord, match=rf"{path.name}:5: text column 'caption' is not valid Unicode"):
        prepare("jsonl", None, tmp_path / "out", **kw)
    del rows[4]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    conv = prepare("jsonl", None, tmp_path / "out", val_fraction=0.2, test_fraction=0.2, **kw)
    assert dict(conv.dropped) == {"empty text": 1} and conv.counts == {"train": 2, "val": 2, "test": 2}


def test_csv_with_header_multilabel_and_generated_ids(tmp_path):
    rows = _user_rows(tmp_path, {"x": 5, "y": 5})
    with open(tmp_path / "d.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption", "tags"])
        for i, r in enumerate(rows):
            w.writerow([r["path"], r["caption"], f"{r['y']}|z" if i % 3 == 0 else r["y"]])
    conv = prepare(
        "csv",
        tmp_path,
        tmp_path / "out",
        input=tmp_path / "d.csv",
        image_column="path",
        text_column="caption",
        label_column="tags",
        multi_label=True,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    space = read_labels(tmp_path / "out")
    assert space.task == "multi_label" and space.labels == ("x", "y", "z")
    assert sum(conv.counts.values()) == 10
    ids = {s.id for split in SPLITS for s in read_in_place(tmp_path / "out", split)[0]}
    assert ids == {f"line{n:07d}" for n in range(2, 12)}  # header is line 1


def test_csv_missing_column_names_header_line(tmp_path):
    (tmp_path / "d.csv").write_text("image,caption,label\na.jpg,hello,cat\n")
    with pytest.raises(MissingColumn) as info:
        prepare("csv", None, tmp_path / "out", input=tmp_path / "d.csv")
    assert str(info.value).startswith(f"{tmp_path / 'd.csv'}:1: column(s) 'text' not in the header")
    assert "'caption'" in str(info.value)


def test_csv_bad_split_value(tmp_path):
    write_image(tmp_path / "a.jpg")
    (tmp_path / "d.csv").write_text("image,text,label,split\na.jpg,t,c1,train\na.jpg,t,c2,holdout\n")
    with pytest.raises(BadRecord, match=r"d\.csv:3: split 'holdout'"):
        prepare("csv", None, tmp_path / "out", input=tmp_path / "d.csv", split_column="split")


# --- CLI -------------------------------------------------------------------------------------------------


def test_cli_prepare_prints_summary_and_warns(tmp_path, capsys):
    make_food101(tmp_path / "raw")
    code = main(
        [
            "prepare",
            "food101",
            "--raw",
            str(tmp_path / "raw"),
            "--out",
            str(tmp_path / "out"),
            "--seed",
            "3",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "61,142" in out and "6,846" in out and "22,716" in out  # published column
    assert "1 x empty text" in out and "1 x image not found" in out
    assert "warning:" in out and "34 labels" not in out and "3 labels" in out
    assert (tmp_path / "out" / "labels.json").is_file()


def test_cli_prepare_errors_exit_2_with_named_error(tmp_path, capsys):
    make_mmimdb(tmp_path / "raw")
    (tmp_path / "raw" / "split.json").unlink()
    code = main(["prepare", "mmimdb", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "[missing_split_file]" in err and "split.json" in err
    assert main(["prepare", "csv", "--out", str(tmp_path / "o")]) == 2
    assert "the following arguments are required: --input" in capsys.readouterr().err
    # mmimdb has an official validation split: it takes no --val-fraction
    assert (
        main(["prepare", "mmimdb", "--raw", str(tmp_path), "--out", str(tmp_path / "o"), "--val-fraction", "0.2"]) == 2
    )
    assert "unrecognized arguments: --val-fraction" in capsys.readouterr().err


def test_prepare_lists_every_registered_converter(capsys):
    from mitp.data.prepare import converters

    assert set(converters()) == {
        "food101",
        "mmimdb",
        "snli-ve",
        "fashion-ve",
        "fashion-cues",
        "mvsa",
        "hf",
        "jsonl",
        "csv",
    }
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = capsys.readouterr().out
    assert all(kind in out for kind in converters())


def test_published_counts_table():
    assert PUBLISHED["food101"] == {"train": 61_142, "val": 6_846, "test": 22_716}
    assert PUBLISHED["mmimdb"] == {"train": 15_552, "val": 2_608, "test": 7_799}
    assert PUBLISHED["snli-ve"] == {"train": 529_527, "val": 17_858, "test": 17_901}


def test_matching_published_counts_give_no_warning():
    from mitp.data.manifest import Record
    from mitp.data.prepare import Conversion

    conv = Conversion("food101")
    for split, n in PUBLISHED["food101"].items():
        conv.splits[split] = [Record(f"{split}{i}", "x.jpg", "t", "a") for i in range(n)]
    conv.compare_published()
    assert conv.warnings == [] and "67,988 matches the published 67,988" in conv.notes[0]
    conv = Conversion("food101")
    conv.splits = {
        "train": [Record("a", "x", "t", "a")] * 61_000,
        "val": [Record("b", "x", "t", "a")] * 6_988,
        "test": [Record("c", "x", "t", "a")] * 22_716,
    }
    conv.compare_published()
    assert [w.split(":")[0] for w in conv.warnings] == ["train", "val"] and " matches" in conv.notes[0]


def test_cli_prepare_csv_and_snli_ve_flags(tmp_path, capsys):
    rows = _user_rows(tmp_path / "imgs", {"x": 4, "y": 4}, with_split=True)
    with open(tmp_path / "d.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "path", "caption", "tags", "part"])
        for i, r in enumerate(rows):
            w.writerow([r["uid"], r["path"], r["caption"], f"{r['y']};z" if i % 2 else r["y"], r["part"]])
    code = main(
        [
            "prepare",
            "csv",
            "--input",
            str(tmp_path / "d.csv"),
            "--raw",
            str(tmp_path / "imgs"),
            "--out",
            str(tmp_path / "out"),
            "--image-column",
            "path",
            "--text-column",
            "caption",
            "--label-column",
            "tags",
            "--id-column",
            "uid",
            "--split-column",
            "part",
            "--multi-label",
            "--label-separator",
            ";",
            "--labels",
            "z,y,x",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr()
    assert read_labels(tmp_path / "out").labels == ("z", "y", "x")
    assert {s.id: s.label for s in read_in_place(tmp_path / "out", "train")[0]}["x-1"] == ("z", "x")
    assert [len(read_in_place(tmp_path / "out", s)[0]) for s in SPLITS] == [4, 2, 2]
    make_snli_ve(tmp_path / "sv", images=tmp_path / "flickr")
    assert (
        main(
            [
                "prepare",
                "snli-ve",
                "--raw",
                str(tmp_path / "sv"),
                "--out",
                str(tmp_path / "sv_out"),
                "--images",
                str(tmp_path / "flickr"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "1 x image not found" in capsys.readouterr().out


# --- image roots: a dataset prepared by the user's own command needs no flag --------------------------
def test_prepared_datasets_read_their_raw_images_without_a_flag(tmp_path, capsys):
    from mitp.data.check import check_dataset
    from mitp.data.errors import BadImageRoots, ExternalPath
    from mitp.data.manifest import IMAGE_ROOTS_FILE

    make_food101(tmp_path / "raw")
    assert (
        main(["prepare", "food101", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--no-progress"])
        == 0
    )
    out = capsys.readouterr().out
    assert "recorded as this dataset's image root(s)" in out and "--allow-external-paths" not in out
    roots = json.loads((tmp_path / "out" / IMAGE_ROOTS_FILE).read_text())["image_roots"]
    assert roots == [str((tmp_path / "raw" / "images").resolve())]
    assert len(read_split(tmp_path / "out", "train")[0]) == 29  # no allow_external_paths
    assert main(["check", str(tmp_path / "out"), "--no-decode"]) == 0
    assert f"image root (recorded by mitp prepare in image_roots.json): {roots[0]}" in capsys.readouterr().out
    # outside the dataset and its roots stays refused
    test = (tmp_path / "out" / "test.jsonl").read_text().splitlines()
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes((tmp_path / "raw" / "images" / "test" / "ramen" / "ramen_test0.jpg").read_bytes())
    test[0] = json.dumps({**json.loads(test[0]), "image": str(outside)})
    (tmp_path / "out" / "test.jsonl").write_text("\n".join(test) + "\n")
    with pytest.raises(ExternalPath, match="outside the dataset directory .* and its recorded image roots"):
        read_split(tmp_path / "out", "test")
    # a roots file that tries to trust the whole filesystem is refused
    (tmp_path / "out" / IMAGE_ROOTS_FILE).write_text(json.dumps({"image_roots": ["/"]}))
    with pytest.raises(BadImageRoots, match="is a filesystem root"):
        read_split(tmp_path / "out", "train")
    assert check_dataset(tmp_path / "out", decode_images=False).problems_by_kind()["bad_image_roots"] == 1


def test_images_outside_the_recorded_root_still_need_the_flag(tmp_path, capsys):
    rows = _user_rows(tmp_path / "imgs", {"x": 3, "y": 3})
    elsewhere = tmp_path / "other" / "z.jpg"
    write_image(elsewhere)
    rows[0]["path"] = str(elsewhere)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        main(
            [
                "prepare",
                "jsonl",
                "--input",
                str(tmp_path / "d.jsonl"),
                "--raw",
                str(tmp_path / "imgs"),
                "--out",
                str(tmp_path / "out"),
                "--image-column",
                "path",
                "--text-column",
                "caption",
                "--label-column",
                "y",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "1 images lie outside" in out and "allow_external_paths: true" in out


def test_a_csv_byte_that_is_not_utf8_is_named_at_its_own_line(tmp_path, capsys):
    rows = ["image,text,label"] + [f"images/{i}.png,text {i},{'a' if i % 2 else 'b'}" for i in range(12)]
    raw = "\n".join(rows).encode().replace(b"text 9", b"caf\xe9 9")  # line 11
    (tmp_path / "data.csv").write_bytes(raw)
    assert main(["prepare", "csv", "--input", str(tmp_path / "data.csv"), "--out", str(tmp_path / "out")]) == 2
    assert "data.csv:11: not valid UTF-8: byte 0xe9 at column 17" in capsys.readouterr().err
