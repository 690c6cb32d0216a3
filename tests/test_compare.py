"""mitp compare: methods side by side, failures reported, finished runs reused."""

import json
from pathlib import Path

import pytest

from mitp.cli import main
from mitp.compare import method_config_for
from mitp.synthetic import write_toy_dataset
from mitp.train.config import load_run_config

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"
ROW_KEYS = {"method", "trainable_params", "test", "val", "peak_memory_mb", "train_seconds", "seeds"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), sizes=(32, 16, 16))


def test_model_keys_follow_the_methods_that_know_them():
    config = load_run_config(CONFIG)
    assert method_config_for(config, "deep_prompts", 3).model == {"num_steps": 3, "prompt_length": 4}
    assert method_config_for(config, "late_fusion", 1).model == {}
    assert method_config_for(config, "late_fusion", 1).seed == 1


def test_compare_two_methods_end_to_end(toy, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--config", str(CONFIG), "--set", f"data={toy}", "--set", "train.epochs=1",
            "--methods", "mitp,late_fusion", "--seeds", "0", "--out", str(out)]
    assert main(args) == 0
    rows = json.loads((out / "compare.json").read_text())
    assert [r["method"] for r in rows] == ["mitp", "late_fusion"]
    for row in rows:
        assert ROW_KEYS <= set(row) and row["status"] == "ok" and row["seeds"] == [0]
        results = json.loads((out / row["method"] / "seed-0" / "results.json").read_text())
        assert row["test"]["accuracy"] == {"mean": results["test"]["accuracy"], "std": 0.0}
        assert row["trainable_params"] == results["trainable_params"]
    assert rows[0]["trainable_params"] > rows[1]["trainable_params"]
    table = (out / "compare.md").read_text()
    assert "| mitp |" in table and "| late_fusion |" in table
    assert (out / "compare.png").stat().st_size > 0

    capsys.readouterr()
    assert main(args) == 0, "a finished comparison is reused, not retrained"
    assert "finished earlier, reusing its results" in capsys.readouterr().out


def test_a_failing_method_is_reported_and_the_others_run(toy, tmp_path):
    out = tmp_path / "cmp"
    # prompt_length=0 is invalid for mitp only; late_fusion has no such key and trains
    args = ["compare", "--config", str(CONFIG), "--set", f"data={toy}", "--set", "train.epochs=1",
            "--set", "model.prompt_length=0", "--methods", "mitp,late_fusion", "--out", str(out)]
    assert main(args) == 0
    rows = {r["method"]: r for r in json.loads((out / "compare.json").read_text())}
    assert rows["mitp"]["status"] == "failed" and "prompt_length" in rows["mitp"]["errors"]["0"]
    assert rows["late_fusion"]["status"] == "ok"
    assert "failed:" in (out / "compare.md").read_text()


def test_unknown_method_fails_before_training(tmp_path, capsys):
    assert main(["compare", "--config", str(CONFIG), "--methods", "mitp,nope", "--out", str(tmp_path)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
