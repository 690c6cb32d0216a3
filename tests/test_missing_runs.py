"""Missing modalities end to end: training with drops (and the prefix cache), robustness curves,
single-modality prediction from the CLI and the API, compare --missing."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mitp import Classifier
from mitp.app.cli import main
from mitp.app.commands.compare import missing_overrides

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def missing_run(toy_dataset, tmp_path_factory):
    """MITP trained with a third of the images and a third of the texts dropped, with the prefix cache."""
    run = tmp_path_factory.mktemp("missing") / "mitp"
    cache = tmp_path_factory.mktemp("cache")
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIG),
                "--set",
                f"data={toy_dataset}",
                "--set",
                "train.epochs=2",
                "--set",
                "train.missing.image=0.35",
                "--set",
                "train.missing.text=0.35",
                "--set",
                "train.cache_prefix=true",
                "--set",
                f"train.cache_dir={cache}",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    return run, cache


def test_a_run_with_missing_modalities_trains_resolves_missing_aware_and_keys_its_cache(
    missing_run, toy_dataset, tmp_path
):
    import yaml

    run, cache = missing_run
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["missing_aware"] is True and config["train"]["missing"]["image"] == 0.35
    from safetensors.torch import load_file

    weights = load_file(run / "checkpoint" / "best" / "model.safetensors")
    assert weights["missing_text.prompts"].abs().sum() > 0, "the case prompts trained"
    stores = {p.name for p in cache.iterdir() if p.is_dir()}
    assert len(stores) == 3
    # the same data without drops would be another store: the train split's key differs
    other = tmp_path / "run2"
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIG),
                "--set",
                f"data={toy_dataset}",
                "--set",
                "train.epochs=1",
                "--set",
                "train.cache_prefix=true",
                "--set",
                f"train.cache_dir={cache}",
                "--out",
                str(other),
            ]
        )
        == 0
    )
    after = {p.name for p in cache.iterdir() if p.is_dir()}
    assert len(after - stores) == 1, "only the train split (the one with drops) gets a new store"


def test_robustness_writes_a_curve_per_run_and_rate_zero_is_plain_evaluation(missing_run, tiny_run, tmp_path, capsys):
    run, _ = missing_run
    out = tmp_path / "robust"
    assert (
        main(["robustness", str(run), str(tiny_run), "--modality", "image", "--rates", "0,0.5,1", "--out", str(out)])
        == 0
    )
    report = json.loads((out / "robustness.json").read_text())
    assert report["rates"] == [0.0, 0.5, 1.0] and (out / "robustness.png").stat().st_size > 0
    aware, plain = report["runs"]
    assert aware["run"] == str(run) and aware["missing_aware"] is True and plain["missing_aware"] is False
    assert len(aware["values"]) == 3 and "missing-aware" in aware["label"]
    capsys.readouterr()
    for curve in report["runs"]:
        assert main(["evaluate", curve["run"], "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(curve["values"][0])
    # with every image gone, the label (colour and words) can only be guessed by half
    assert max(c["values"][2] for c in report["runs"]) <= 0.75
    # two different configs: two groups of one run each, and a table row for each
    assert [g["runs"] for g in report["groups"]] == [[str(run)], [str(tiny_run)]]
    assert [g["mean"] for g in report["groups"]] == [c["values"] for c in report["runs"]]
    table = (out / "robustness.md").read_text().splitlines()
    assert table[0].startswith("| test accuracy, image missing | 0% | 50% | 100% |") and len(table) == 4


def test_runs_that_differ_only_in_the_seed_are_averaged_with_their_sample_std():
    from mitp.app.analysis.robustness import markdown_table, seed_groups

    def curve(run, seed, values, method="mitp", aware=True):
        return {
            "run": run,
            "seed": seed,
            "method": method,
            "missing_aware": aware,
            "label": f"{method} ({run})",
            "values": values,
            "metric": "accuracy",
        }

    curves = [
        curve("a/mitp/seed-0", 0, [0.8, 0.6]),
        curve("a/lr=0.1/seed-0", 0, [0.5, 0.5]),
        curve("a/lr=0.1/seed-1", 1, [0.5, 0.5]),
        curve("b/late_fusion/seed-0", 0, [0.7, 0.5], "late_fusion", None),
        curve("a/mitp/seed-1", 1, [0.9, 0.4]),
    ]
    groups = seed_groups(curves, ["g1", "g3", "g3", "g2", "g1"])
    assert [g["runs"] for g in groups] == [
        ["a/mitp/seed-0", "a/mitp/seed-1"],
        ["a/lr=0.1/seed-0", "a/lr=0.1/seed-1"],
        ["b/late_fusion/seed-0"],
    ]
    assert groups[1]["label"] == "mitp, missing-aware (lr=0.1), 2 seeds", "a grid point's directory names its group"
    assert groups[0]["seeds"] == [0, 1] and groups[0]["label"] == "mitp, missing-aware, 2 seeds"
    assert groups[0]["mean"] == pytest.approx([0.85, 0.5])
    assert groups[0]["std"] == pytest.approx([0.0707107, 0.1414214])  # sample std (ddof 1)
    assert groups[2]["mean"] == [0.7, 0.5] and groups[2]["std"] == [0.0, 0.0]
    table = markdown_table({"modality": "text", "split": "test", "rates": [0.0, 0.9], "runs": curves, "groups": groups})
    assert table.splitlines()[2] == "| mitp, missing-aware, 2 seeds | 0.8500 ± 0.0707 | 0.5000 ± 0.1414 |"
    assert table.splitlines()[4] == "| late_fusion (b/late_fusion/seed-0) | 0.7000 | 0.5000 |"


def test_robustness_of_several_runs_needs_an_out_directory(missing_run, tiny_run, capsys):
    assert main(["robustness", str(missing_run[0]), str(tiny_run)]) == 2
    assert "--out" in capsys.readouterr().err


def test_predict_with_one_modality_from_the_api_and_the_cli(missing_run, toy_dataset, tmp_path, capsys):
    run, _ = missing_run
    clf = Classifier.from_pretrained(run)
    image = toy_dataset / "images" / "test-0001.png"
    text = "berry bronze basin"
    image_only, text_only, both = (
        clf.predict(images=[image], top_k=4)[0],
        clf.predict(texts=[text], top_k=4)[0],
        clf.predict([image], [text], top_k=4)[0],
    )
    assert (image_only.modalities, text_only.modalities, both.modalities) == (("image",), ("text",), ("image", "text"))
    # the API feeds exactly the blank input and the mask
    sample = clf.prepare(image, None)
    model_inputs = {
        "pixel_values": sample.pixels[None],
        "input_ids": torch.tensor([sample.tokens]),
        "attention_mask": torch.ones(1, len(sample.tokens), dtype=torch.long),
        "modality_mask": torch.tensor([[True, False]]),
    }
    with torch.no_grad():
        logits = clf.model(**model_inputs).logits
    assert clf.to_predictions(logits, 4)[0] == image_only
    capsys.readouterr()
    assert main(["predict", str(run), "--text", text, "--top-k", "4"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["modalities"] == ["text"] and line["predictions"] == text_only
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"id": "a", "image": str(image), "text": None}) + "\n" + json.dumps({"id": "b", "text": text}) + "\n"
    )
    assert main(["predict", str(run), "--manifest", str(manifest), "--top-k", "4"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["modalities"] for x in lines] == [["image"], ["text"]]
    assert lines[0]["predictions"] == image_only and lines[1]["predictions"] == text_only
    manifest.write_text(json.dumps({"id": "c", "image": None, "text": None}) + "\n")
    assert main(["predict", str(run), "--manifest", str(manifest)]) == 2
    assert f"{manifest}:1" in capsys.readouterr().err


def test_compare_missing_sets_train_and_eval_alike():
    assert missing_overrides("image=0.35,text=0.35") == [
        "train.missing.image=0.35",
        "eval.missing.image=0.35",
        "train.missing.text=0.35",
        "eval.missing.text=0.35",
    ]
    assert missing_overrides(None) == []
    assert main(["compare", "--config", str(CONFIG), "--missing", "colour=0.3", "--out", "/nonexistent/x"]) == 2


def test_robustness_refuses_runs_of_two_datasets_or_one_run_twice(tiny_run, toy_dataset, tmp_path, capsys):
    other_data = shutil.copytree(toy_dataset, tmp_path / "other-data")
    other_run = shutil.copytree(tiny_run, tmp_path / "other-run")
    config = yaml.safe_load((other_run / "config.yaml").read_text())
    config["data"] = (
        {**config["data"], "path": str(other_data)} if isinstance(config["data"], dict) else str(other_data)
    )
    (other_run / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert main(["robustness", str(tiny_run), str(other_run), "--rates", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{other_run} evaluates {other_data}" in err and "give runs of one dataset" in err
    assert main(["robustness", str(tiny_run), f"{tiny_run}/.", "--rates", "0", "--out", str(out)]) == 2
    assert "is given twice" in capsys.readouterr().err
    assert not out.exists()  # refused before any evaluation
