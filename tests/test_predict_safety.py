"""mitp predict never destroys a file: outputs are written whole or not at all, never onto an input."""

import json
from pathlib import Path

import pytest

from mitp.app.cli import main

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"


def manifest_copy(toy_dataset, tmp_path, extra_lines=b""):
    path = tmp_path / "m.jsonl"
    lines = (toy_dataset / "test.jsonl").read_bytes().replace(b'"images/', f'"{toy_dataset}/images/'.encode())
    path.write_bytes(lines + extra_lines)
    return path


def test_out_equal_to_the_manifest_is_refused_and_the_manifest_kept(tiny_run, toy_dataset, tmp_path, capsys):
    manifest = manifest_copy(toy_dataset, tmp_path)
    before = manifest.read_bytes()
    assert main(["predict", str(tiny_run), "--manifest", str(manifest), "--out", str(manifest)]) == 2
    assert "it is an input of this command" in capsys.readouterr().err
    assert manifest.read_bytes() == before


def test_a_failed_predict_leaves_an_existing_output_untouched(tiny_run, toy_dataset, tmp_path, capsys):
    bad = json.dumps({"id": "x", "image": str(toy_dataset / "images" / "nope.png"), "text": "t"}).encode() + b"\n"
    manifest = manifest_copy(toy_dataset, tmp_path, bad)  # fails after the first batches were predicted
    out = tmp_path / "predictions.jsonl"
    out.write_text("earlier predictions\n")
    assert main(["predict", str(tiny_run), "--manifest", str(manifest), "--out", str(out), "--batch-size", "4"]) == 2
    assert out.read_text() == "earlier predictions\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".predict")] == []


def test_missing_output_directories_are_created_and_throughput_is_reported(tiny_run, toy_dataset, tmp_path, capsys):
    out = tmp_path / "a" / "b" / "predictions.jsonl"
    manifest = manifest_copy(toy_dataset, tmp_path)
    assert main(["predict", str(tiny_run), "--manifest", str(manifest), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 16
    err = capsys.readouterr().err
    assert "predicted 16 samples in" in err and "samples/s, batch 32" in err


@pytest.mark.parametrize("k", ["0", "-2"])
def test_top_k_below_one_is_refused(tiny_run, toy_dataset, k, capsys):
    args = [
        "predict",
        str(tiny_run),
        "--image",
        str(toy_dataset / "images" / "test-0000.png"),
        "--text",
        "apple",
        "--top-k",
        k,
    ]
    assert main(args) == 2
    assert f"argument --top-k: must be an integer >= 1, got {k}" in capsys.readouterr().err


def test_top_k_above_the_classes_is_capped_with_a_note(tiny_run, toy_dataset, capsys):
    args = [
        "predict",
        str(tiny_run),
        "--image",
        str(toy_dataset / "images" / "test-0000.png"),
        "--text",
        "apple",
        "--top-k",
        "9",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["predictions"]) == 4 and "showing all" in captured.err


def test_a_non_utf8_manifest_line_is_named(tiny_run, toy_dataset, tmp_path, capsys):
    manifest = manifest_copy(toy_dataset, tmp_path, b'{"image": "x.png", "text": "caf\xe9"}\n')
    assert main(["predict", str(tiny_run), "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert f"{manifest}:17: not valid UTF-8" in err
