"""Seeing inside a prompt method: per-step diagnostics while training, and `mitp explain` afterwards."""

import json
from pathlib import Path

import pytest
import torch

from mitp.app.cli import main
from mitp.app.train.rundir import MetricsLog
from mitp.app.train.step import gradient_norms
from mitp.methods import build_model, make_config

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def mitp_run(toy_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "mitp"
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIG),
                "--set",
                f"data={toy_dataset}",
                "--out",
                str(run),
                "--set",
                "train.epochs=2",
                "--set",
                "train.batch_size=8",
                "--set",
                "train.log_every_steps=2",
                "--set",
                "train.log_with=tensorboard",
            ]
        )
        == 0
    )
    return run


def test_gradient_norms_per_component_match_a_reference(tiny_clip):
    model = build_model(make_config("mitp", num_classes=3), tiny_clip)
    with torch.no_grad():
        model.text_gates.fill_(0.3)
    batch = tiny_clip.random_batch(3, 8, torch.Generator().manual_seed(0))
    model(**batch, labels=torch.tensor([0, 1, 2])).loss.backward()
    norms = gradient_norms(model)
    expected = torch.cat([model.hub.vision_proj.weight.grad.flatten(), model.hub.vision_proj.bias.grad.flatten()])
    assert norms["grad_norm/hub.vision_proj"] == pytest.approx(expected.norm().item(), rel=1e-5)
    assert norms["grad_norm/text_prompt"] == pytest.approx(model.text_prompt.grad.norm().item(), rel=1e-5)
    assert not any(key.startswith("grad_norm/backbone") for key in norms), "the frozen towers hold no gradient"


def test_training_logs_gradients_gates_prompts_and_hub_entropy(mitp_run):
    records = [r for r in MetricsLog(mitp_run / "metrics.jsonl").records() if r["split"] == "diagnostics"]
    assert [r["step"] for r in records] == [2, 4, 6, 8]  # 4 steps per epoch, every 2 steps
    last = records[-1]["metrics"]
    for key in (
        "grad_norm/head.classifier",
        "grad_norm/text_gates",
        "grad_norm/text_prompt",
        "gate/text/step0",
        "gate/vision/step2",
        "prompt_norm/text",
        "hub/similarity_entropy/step0",
        "hub/similarity_entropy/step1",
    ):
        assert key in last, key
    assert 0 < last["gate/text/step0"] < 1, "the gates opened from 0"
    assert 0 <= last["hub/similarity_entropy/step0"] <= 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(mitp_run / "tensorboard" / "mitp")).Reload()
    assert "diagnostics/gate/text/step0" in events.Tags()["scalars"]


def test_explain_saves_the_hub_similarity_and_attention_on_prompts(mitp_run, toy_dataset, capsys):
    figure = mitp_run / "why" / "pair.png"
    assert (
        main(
            [
                "explain",
                str(mitp_run),
                "--image",
                str(toy_dataset / "images" / "test-0000.png"),
                "--text",
                "apple amber",
                "--out",
                str(figure),
            ]
        )
        == 0
    )
    assert figure.stat().st_size > 0
    report = json.loads(figure.with_suffix(".json").read_text())
    prompt_length = 4  # configs/tiny.yaml: 3 steps, so the hub runs twice (the last memory is unused)
    assert len(report["hub_similarity"]) == 2
    for matrix in report["hub_similarity"]:
        assert len(matrix) == prompt_length and all(sum(row) == pytest.approx(1, abs=1e-5) for row in matrix)
    assert set(report["prompt_attention_share"]) == {f"{t}/step{k}" for t in ("text", "vision") for k in range(3)}
    assert all(0 < v < 1 for shares in report["prompt_attention_share"].values() for v in shares)
    assert -1 <= report["cosine_to_frozen"]["image"] <= 1 and len(report["predictions"]) == 3
    assert "cosine to the frozen embeddings" in capsys.readouterr().out


def test_explain_refuses_a_method_without_prompts(toy_dataset, tmp_path, capsys):
    run = tmp_path / "late"
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIG),
                "--set",
                f"data={toy_dataset}",
                "--set",
                "method=late_fusion",
                "--out",
                str(run),
                "--set",
                "train.epochs=1",
            ]
        )
        == 0
    )
    assert main(["explain", str(run), "--image", str(toy_dataset / "images" / "test-0000.png"), "--text", "x"]) == 2
    assert "inserts no prompts" in capsys.readouterr().err


@pytest.mark.parametrize(
    "tracker, made", [("tensorboard", "tensorboard/mitp"), ("mlflow", "mlruns"), ("wandb", "wandb"), ("none", None)]
)
def test_experiment_trackers_work_offline_inside_the_run(toy_dataset, tmp_path, monkeypatch, tracker, made):
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network: wandb writes its files and syncs later
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIG),
                "--set",
                f"data={toy_dataset}",
                "--out",
                str(run),
                "--set",
                "train.epochs=1",
                "--set",
                "train.batch_size=8",
                "--set",
                "train.log_every_steps=2",
                "--set",
                f"train.log_with={tracker}",
            ]
        )
        == 0
    )
    written = {p.name for p in run.iterdir()}
    others = {"tensorboard", "mlruns", "wandb"} - ({made.split("/")[0]} if made else set())
    assert not written & others, f"{tracker} wrote another tracker's files"
    if made is None:
        return
    files = [p for p in (run / made).rglob("*") if p.is_file()]
    assert files, f"{tracker} wrote nothing under {made}"
    if tracker == "mlflow":  # the logged metrics are there, by name
        assert any(p.parent.name == "metrics" and p.name == "val" for p in run.rglob("val")) or any(
            "diagnostics" in str(p) for p in files
        )


def test_a_tracker_that_is_not_installed_is_named(toy_dataset, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aim" else real(name, *a))
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIG),
                "--set",
                f"data={toy_dataset}",
                "--out",
                str(tmp_path / "r"),
                "--set",
                "train.log_with=aim",
            ]
        )
        == 2
    )
    assert "train.log_with: aim needs the 'aim' package: pip install aim" in capsys.readouterr().err


def test_cross_modal_influence_is_zero_for_towers_that_never_meet(tiny_run, toy_dataset, tmp_path, capsys):
    from mitp.app.analysis.exchange import cross_modal_influence

    mitp = cross_modal_influence(tiny_run, samples=16)
    assert mitp["samples"] == 16 and mitp["text_when_image_swapped"]["mean"] > 0  # the hub carries the image
    assert mitp["image_when_text_swapped"]["mean"] > 0 and len(mitp["gate_opening"]["text"]) == 3  # tiny.yaml: 3 steps
    deep = tmp_path / "deep"
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIG),
                "--set",
                f"data={toy_dataset}",
                "--set",
                "method=deep_prompts",
                "--set",
                "train.epochs=1",
                "--out",
                str(deep),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["explain", str(deep), "--exchange", "--samples", "16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["text_when_image_swapped"] == {"mean": 0.0, "max": 0.0}
    assert report["image_when_text_swapped"] == {"mean": 0.0, "max": 0.0}
    assert main(["explain", str(deep)]) == 2
    assert "give --image and --text (or --exchange)" in capsys.readouterr().err
