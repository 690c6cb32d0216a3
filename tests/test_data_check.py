"""``mitp check``: every kind of problem is reported with its file and line, and the exit code."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from data_fixtures import get_line, make_manifest, set_line, truncate, write_image
from mitp.app.cli import main
from mitp.data.check import check_dataset
from mitp.data.errors import (
    BadJson,
    BadLabels,
    BadRecord,
    CorruptImage,
    DuplicateId,
    EmptyText,
    ExternalPath,
    MissingFile,
    MissingImage,
    MissingSplitFile,
    UnknownLabel,
)
from mitp.data.progress import rich_tracker


@pytest.fixture
def data(tmp_path):
    return make_manifest(tmp_path / "data")


def only_problem(report, error):
    assert len(report.problems) == 1, [str(p) for p in report.problems]
    problem = report.problems[0]
    assert type(problem) is error
    return problem


def test_valid_dataset_passes(data):
    report = check_dataset(data)
    assert report.ok and report.problems == []
    assert report.lines == {"train": 8, "val": 4, "test": 4} and report.valid == report.lines
    assert report.images_checked == 16 and report.warnings == []


def test_missing_image(data):
    (data / get_line(data / "val.jsonl", 2)["image"]).unlink()
    problem = only_problem(check_dataset(data), MissingImage)
    assert str(problem).startswith(f"{data / 'val.jsonl'}:2: image ") and "not found" in str(problem)
    assert "val-001" in str(problem)


def test_truncated_jpeg(data):
    truncate(data / get_line(data / "train.jsonl", 4)["image"], keep=0.6)
    report = check_dataset(data)
    problem = only_problem(report, CorruptImage)
    assert str(problem).startswith(f"{data / 'train.jsonl'}:4: image ") and "cannot be decoded" in str(problem)
    assert report.valid["train"] == 7


def test_file_that_is_not_an_image(data):
    (data / get_line(data / "test.jsonl", 1)["image"]).write_bytes(b"GIF89a definitely not")
    problem = only_problem(check_dataset(data), CorruptImage)
    assert str(problem).startswith(f"{data / 'test.jsonl'}:1: ")


def test_empty_text(data):
    set_line(data / "train.jsonl", 6, {**get_line(data / "train.jsonl", 6), "text": "  "})
    problem = only_problem(check_dataset(data), EmptyText)
    assert str(problem).startswith(f"{data / 'train.jsonl'}:6: empty text")


def test_unknown_label(data):
    set_line(data / "test.jsonl", 3, {**get_line(data / "test.jsonl", 3), "label": "horse"})
    problem = only_problem(check_dataset(data), UnknownLabel)
    assert str(problem).startswith(f"{data / 'test.jsonl'}:3: label 'horse' is not in labels.json")


def test_line_that_is_not_json(data):
    set_line(data / "val.jsonl", 4, '{"id": "val-003", "image": ')
    problem = only_problem(check_dataset(data), BadJson)
    assert str(problem).startswith(f"{data / 'val.jsonl'}:4: not valid JSON")


def test_missing_field(data):
    obj = get_line(data / "val.jsonl", 1)
    del obj["image"]
    set_line(data / "val.jsonl", 1, obj)
    problem = only_problem(check_dataset(data), BadRecord)
    assert "missing field(s) 'image'" in str(problem) and ":1: " in str(problem)


def test_duplicate_id_across_splits(data):
    set_line(data / "test.jsonl", 2, {**get_line(data / "test.jsonl", 2), "id": "train-003"})
    problem = only_problem(check_dataset(data), DuplicateId)
    assert str(problem) == f"{data / 'test.jsonl'}:2: id 'train-003' already used at {data / 'train.jsonl'}:4"


def test_missing_split_file(data):
    (data / "val.jsonl").unlink()
    report = check_dataset(data)
    problem = only_problem(report, MissingSplitFile)
    assert problem.path == str(data / "val.jsonl")
    assert report.valid["train"] == 8  # the other splits are still checked


def test_bad_labels_json_still_checks_lines(data):
    (data / "labels.json").write_text(json.dumps({"task": "single_label", "labels": ["cat"]}))
    (data / get_line(data / "train.jsonl", 1)["image"]).unlink()
    report = check_dataset(data)
    assert [type(p) for p in report.problems] == [BadLabels, MissingImage]


def test_missing_labels_json(data):
    (data / "labels.json").unlink()
    assert isinstance(check_dataset(data).problems[0], MissingFile)


def test_several_problems_sorted_by_split_and_line_and_shared_images(data):
    image = get_line(data / "train.jsonl", 2)["image"]
    for split, line in (("test", 4), ("train", 7)):  # two more lines use the same image
        set_line(data / f"{split}.jsonl", line, {**get_line(data / f"{split}.jsonl", line), "image": image})
    (data / image).unlink()
    set_line(data / "train.jsonl", 5, "nope")
    report = check_dataset(data, workers=2)
    assert [(type(p), p.path.rsplit("/", 1)[-1], p.line) for p in report.problems] == [
        (MissingImage, "train.jsonl", 2),
        (BadJson, "train.jsonl", 5),
        (MissingImage, "train.jsonl", 7),
        (MissingImage, "test.jsonl", 4),
    ]
    assert report.problems_by_kind() == {"missing_image": 3, "bad_json": 1}


def test_no_decode_only_checks_existence(data):
    truncate(data / get_line(data / "train.jsonl", 1)["image"], keep=0.3)
    assert check_dataset(data, decode_images=False).ok
    assert not check_dataset(data, decode_images=True).ok


def test_grayscale_png_and_absolute_paths_inside_the_dataset_are_fine(data):
    img = write_image(data / "images" / "g.png", (9, 40), mode="L")
    set_line(data / "val.jsonl", 2, {**get_line(data / "val.jsonl", 2), "image": str(img.resolve())})
    assert check_dataset(data).ok


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_paths_that_escape_the_dataset_are_refused_unless_allowed(data, tmp_path, how, capsys):
    outside = write_image(tmp_path / "elsewhere" / "secret.png", (9, 9))
    if how == "absolute":
        ref = str(outside)
    elif how == "dotdot":
        ref = "../elsewhere/secret.png"
    else:
        (data / "images" / "link.png").symlink_to(outside)
        ref = "images/link.png"
    set_line(data / "val.jsonl", 2, {**get_line(data / "val.jsonl", 2), "image": ref})
    problem = only_problem(check_dataset(data), ExternalPath)
    assert problem.line == 2 and str(outside.resolve()) in problem.message
    assert check_dataset(data, allow_external_paths=True).ok
    assert main(["check", str(data), "--no-progress"]) == 1
    assert "val.jsonl:2: [external_path]" in capsys.readouterr().out
    assert main(["check", str(data), "--no-progress", "--allow-external-paths"]) == 0


def test_cli_check_ok_and_failure_output(data, capsys):
    assert main(["check", str(data), "--no-progress"]) == 0
    assert "OK" in capsys.readouterr().out
    truncate(data / get_line(data / "val.jsonl", 3)["image"], keep=0.5)
    set_line(data / "train.jsonl", 2, {**get_line(data / "train.jsonl", 2), "text": ""})
    code = main(["check", str(data), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{data / 'train.jsonl'}:2: [empty_text] empty text")
    assert lines[1].startswith(f"{data / 'val.jsonl'}:3: [corrupt_image] image ")
    assert "FAILED: 2 problem(s): 1 corrupt_image, 1 empty_text" in out


def test_check_progress_bar_on_a_terminal(data):
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with rich_tracker(console) as track:
        report = check_dataset(data, track=track)
    assert report.ok and "decoding images" in buffer.getvalue()
    with rich_tracker(Console(file=io.StringIO())) as track:  # not a terminal: items pass through untouched
        assert list(track(iter([1, 2]), description="x")) == [1, 2]


def test_cli_check_missing_dir(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_multi_label_rows_with_no_label_are_valid_and_counted(tmp_path, capsys):
    data = make_manifest(tmp_path / "multi", task="multi_label")
    for line in (2, 5):
        set_line(data / "train.jsonl", line, {**get_line(data / "train.jsonl", line), "label": []})
    report = check_dataset(data)
    assert report.ok and report.no_label == {"train": 2, "val": 0, "test": 0}
    assert main(["check", str(data), "--no-progress"]) == 0
    assert "no label (all negative)" in capsys.readouterr().out


def test_a_multi_label_row_with_no_label_trains_as_all_negative(tmp_path, tiny_clip):
    from mitp.data.dataset import ManifestDataset

    data = make_manifest(tmp_path / "multi", task="multi_label")
    set_line(data / "train.jsonl", 1, {**get_line(data / "train.jsonl", 1), "label": []})
    item = ManifestDataset(data, "train", backbone=tiny_clip)[0]
    assert item["label"].tolist() == [0.0, 0.0, 0.0]
