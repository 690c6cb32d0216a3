"""MVSA: the official Single and Multiple layouts and the labelled subset -> manifests; errors; the CLI.

Every fixture is generated (tests/data_fixtures.py): no MVSA tweet or photo is stored here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from data_fixtures import make_mvsa
from mitp.app.cli import main
from mitp.data.errors import MissingColumn, MissingFile, UnknownLabel
from mitp.data.manifest import SPLITS, read_labels, read_split
from mitp.data.prepare import prepare
from mitp.data.prepare.mvsa import combine, decode_text, majority


def samples(out: Path, split: str):
    return read_split(out, split, allow_external_paths=True)[0]


def labels(out: Path) -> dict[str, Counter]:
    return {split: Counter(s.label for s in samples(out, split)) for split in SPLITS}


def test_combine_and_majority_follow_the_fields_cleaning():
    assert combine("positive", "positive") == "positive"
    assert combine("neutral", "negative") == "negative" and combine("positive", "neutral") == "positive"
    assert combine("positive", "negative") is None and combine("negative", "positive") is None
    assert majority(["neutral", "positive", "neutral"]) == "neutral"
    assert majority(["neutral", "positive", "negative"]) is None


def test_decode_text_falls_back_to_gb18030_then_latin1():
    assert decode_text("caf\u00e9 \u201cok\u201d".encode()) == ("caf\u00e9 \u201cok\u201d", "utf-8")
    assert decode_text("\u201cquoted\u201d\n next".encode("gbk")) == ("\u201cquoted\u201d next", "gb18030")
    assert decode_text(b"\xff\xfe\xff") == ("\u00ff\u00fe\u00ff", "latin-1")


def test_single_layout_cleans_and_splits_8_1_1_by_label(tmp_path):
    make_mvsa(tmp_path / "raw", "single")
    conv = prepare("mvsa", tmp_path / "raw", tmp_path / "out")
    # 20 pos/pos + 6 neutral/pos -> positive; 8 neg/neutral + 6 neg/neg -> negative; 10 neutral; 3 pos/neg dropped
    total = Counter()
    for counts in labels(tmp_path / "out").values():
        total.update(counts)
    assert total == {"positive": 26, "negative": 14, "neutral": 10}
    # per label ceil(0.1 n) to val and to test: positive 3 + 3, negative 2 + 2, neutral 1 + 1
    assert labels(tmp_path / "out")["val"] == {"positive": 3, "negative": 2, "neutral": 1}
    assert labels(tmp_path / "out")["test"] == labels(tmp_path / "out")["val"]
    assert conv.counts == {"train": 38, "val": 6, "test": 6}
    assert dict(conv.dropped) == {"text and image labels conflict (positive against negative)": 3, "image not found": 1}
    assert conv.dropped_examples["image not found"] == [f"{tmp_path / 'raw' / 'labelResultAll.txt'}:55"]
    assert read_labels(tmp_path / "out").labels == ("negative", "neutral", "positive")
    by_id = {s.id: s for split in SPLITS for s in samples(tmp_path / "out", split)}
    assert by_id["3"].text == "tweet 3 \u201cquoted\u201d #tag second line"  # GBK decoded, line break joined
    assert by_id["21"].label == "positive" and by_id["27"].label == "negative"
    assert Path(by_id["1"].image_path()).read_bytes() == (tmp_path / "raw" / "data" / "1.jpg").read_bytes()
    assert any("MVSA-Single" in note for note in conv.notes)
    assert any("utf-8 34, gb18030 16" in note for note in conv.notes)


def test_multiple_layout_takes_the_annotators_majority_per_modality(tmp_path):
    make_mvsa(tmp_path / "raw", "multiple")
    conv = prepare("mvsa", tmp_path / "raw", tmp_path / "out")
    by_id = {s.id: s.label for split in SPLITS for s in samples(tmp_path / "out", split)}
    assert Counter(by_id.values()) == {"positive": 10, "negative": 10, "neutral": 10}
    assert by_id["1"] == "positive" and by_id["11"] == "negative" and by_id["21"] == "neutral"
    assert dict(conv.dropped) == {
        "no label given by 2 of 3 annotators (text or image)": 2,
        "text and image labels conflict (positive against negative)": 3,
        "image not found": 1,
    }
    assert any("MVSA-Multiple" in note for note in conv.notes)


def test_subset_layout_gives_the_same_manifests_as_the_official_one(tmp_path):
    make_mvsa(tmp_path / "single", "single")
    make_mvsa(tmp_path / "subset", "subset")
    prepare("mvsa", tmp_path / "single", tmp_path / "a")
    conv = prepare("mvsa", tmp_path / "subset", tmp_path / "b", labels="label/train.txt")
    for split in SPLITS:
        assert [(s.id, s.text, s.label) for s in samples(tmp_path / "a", split)] == [
            (s.id, s.text, s.label) for s in samples(tmp_path / "b", split)
        ]
    assert dict(conv.dropped) == {"no label (tag null or empty)": 1, "image not found": 1}


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    make_mvsa(tmp_path / "raw", "single")
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        prepare("mvsa", tmp_path / "raw", tmp_path / name, seed=seed)
    files = {name: {s: (tmp_path / name / f"{s}.jsonl").read_bytes() for s in SPLITS} for name in "abc"}
    assert files["a"] == files["b"]
    assert files["a"]["val"] != files["c"]["val"]


def test_bad_label_files_name_file_and_line(tmp_path):
    make_mvsa(tmp_path / "raw", "single")
    label_file = tmp_path / "raw" / "labelResultAll.txt"
    lines = label_file.read_text().splitlines()
    label_file.write_text("\n".join(lines[:4] + ["4\tpositive,happy"] + lines[5:]) + "\n")
    with pytest.raises(UnknownLabel, match=r"labelResultAll\.txt:5: image label 'happy'"):
        prepare("mvsa", tmp_path / "raw", tmp_path / "out")
    label_file.write_text("\n".join(lines[:3] + ["3\tpositive,positive\tneutral,neutral"] + lines[4:]) + "\n")
    with pytest.raises(MissingColumn, match=r"labelResultAll\.txt:4: expected 2 tab-separated fields"):
        prepare("mvsa", tmp_path / "raw", tmp_path / "out")
    label_file.unlink()
    with pytest.raises(MissingFile, match="labelResultAll.txt"):
        prepare("mvsa", tmp_path / "raw", tmp_path / "out")
    (tmp_path / "raw" / "tags.csv").write_text("guid,tag\n1,positive\n2,sad\n")
    with pytest.raises(UnknownLabel, match=r"tags\.csv:3: tag label 'sad'"):
        prepare("mvsa", tmp_path / "raw", tmp_path / "out", labels="tags.csv")
    with pytest.raises(MissingFile, match="label file not found"):
        prepare("mvsa", tmp_path / "raw", tmp_path / "out", labels="nope.csv")


def test_cli_prepare_mvsa_reports_counts_drops_and_decoding(tmp_path, capsys):
    make_mvsa(tmp_path / "raw", "subset")
    code = main(
        [
            "prepare",
            "mvsa",
            "--raw",
            str(tmp_path / "raw"),
            "--labels",
            "label/train.txt",
            "--out",
            str(tmp_path / "out"),
            "--seed",
            "0",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1 x image not found" in out and "1 x no label (tag null or empty)" in out
    assert "labelled subset" in out and "gb18030 16" in out and "3 labels" in out
    assert (
        main(["prepare", "mvsa", "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--no-progress"])
        == 2
    )
    assert "[missing_file]" in capsys.readouterr().err
