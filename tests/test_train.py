"""Training, evaluation and prediction end to end on the tiny backbone and generated data."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mitp.app.cli import main
from mitp.app.launch import CliProcess
from mitp.app.serve.local import free_port
from mitp.app.train.config import load_run_config, resolve_method_config
from mitp.app.train.rundir import MetricsLog
from mitp.configuration import ConfigError
from mitp.synthetic import write_toy_dataset

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), sizes=(64, 32, 32))


@pytest.fixture(scope="module")
def toy_multi(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy_multi"), sizes=(32, 16, 16), task="multi_label")


def train_args(data, out, *extra):
    return ["train", "--config", str(CONFIG), "--set", f"data={data}", "--out", str(out), *extra]


def read_json(path):
    return json.loads(Path(path).read_text())


# --- config -------------------------------------------------------------------------------------


def test_config_overrides_and_unknown_keys(tmp_path):
    config = load_run_config(CONFIG, ["train.lr=0.01", "model.prompt_length=2", "eval.threshold=0.4"])
    assert config.train.lr == 0.01 and config.model["prompt_length"] == 2 and config.eval.threshold == 0.4
    for override, key in (
        ("train.lrr=1", "train.lrr"),
        ("evaluation.x=1", "evaluation"),
        ("train.epochs=0", "train.epochs"),
        ("train.mixed_precision=fp8", "train.mixed_precision"),
        ("seed=abc", "seed"),
    ):
        with pytest.raises(ConfigError) as err:
            load_run_config(CONFIG, [override])
        assert err.value.key == key
    bad_model = load_run_config(CONFIG, ["model.prompt_lenght=2"])
    with pytest.raises(ConfigError) as err:
        resolve_method_config(bad_model, 4, "single_label")
    assert err.value.key == "model.prompt_lenght"
    with pytest.raises(ConfigError) as err:
        resolve_method_config(load_run_config(CONFIG, ["model.num_classes=7"]), 4, "single_label")
    assert err.value.key == "model.num_classes"
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text("data: d\nbackbone: tiny-clip\nmethod: mitp\n")
    assert load_run_config(minimal).train.epochs == 10
    minimal.write_text("backbone: tiny-clip\nmethod: mitp\n")
    with pytest.raises(ConfigError, match="data: is required"):
        load_run_config(minimal)


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("max_text_length", 0, "[2, 65536]"),
        ("max_text_length", -3, "[2, 65536]"),
        ("max_text_length", 1, "[2, 65536]"),
        ("max_text_length", 10**9, "[2, 65536]"),
        ("image_size", 0, "[14, 4096]"),
        ("image_size", -224, "[14, 4096]"),
        ("image_size", 13, "[14, 4096]"),
        ("image_size", 10**6, "[14, 4096]"),
    ],
)
def test_text_length_and_image_size_out_of_range_are_named_when_the_config_is_read(key, value, allowed):
    """The same ranges as the Preprocessor's and a model folder's config.json, checked before any run starts,
    for the train section and a method's own train keys."""
    for override, named in ((f"train.{key}={value}", f"train.{key}"), (f"methods.mitp.train.{key}={value}", None)):
        with pytest.raises(ConfigError) as err:
            load_run_config(CONFIG, [override])
        assert err.value.key == (named or f"methods.mitp.train.{key}")
        assert f"must be an integer in {allowed} or null, got {value}" in str(err.value)
    low, high = (int(n) for n in allowed.strip("[]").split(", "))
    for fine in (low, high, None):
        assert getattr(load_run_config(CONFIG, [f"train.{key}={'null' if fine is None else fine}"]).train, key) == fine


# --- end to end ---------------------------------------------------------------------------------


def test_train_evaluate_predict_end_to_end(toy, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(toy, run, "--set", "train.epochs=2", "--set", "train.log_with=tensorboard")) == 0
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "results.json",
        "curves.png",
        "checkpoint/best/model.safetensors",
        "checkpoint/best/config.json",
        "checkpoint/last/training_state.json",
        "checkpoint/last/training_state.safetensors",
    ):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())

    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["num_classes"] == 4 and resolved["model"]["hub"] == "similarity"
    assert resolved["train"]["epochs"] == 2

    results = read_json(run / "results.json")
    for key in (
        "method",
        "backbone",
        "trainable_params",
        "total_params",
        "best_epoch",
        "val",
        "test",
        "peak_memory_mb",
        "train_seconds",
    ):
        assert key in results, key
    assert results["method"] == "mitp" and results["test_samples"] == 32
    records = MetricsLog(run / "metrics.jsonl").records()
    assert [(r["epoch"], r["split"]) for r in records] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    best_val = max(r["metrics"]["accuracy"] for r in records if r["split"] == "val")
    assert results["val"]["accuracy"] == pytest.approx(best_val)

    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(results["test"])

    assert (
        main(
            [
                "predict",
                str(run),
                "--image",
                str(toy / "images" / "test-0000.png"),
                "--text",
                "apple amber",
                "--top-k",
                "3",
            ]
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out)
    assert len(line["predictions"]) == 3
    assert {p["label"] for p in line["predictions"]} <= {"green-alpha", "green-beta", "red-alpha", "red-beta"}
    scores = [p["score"] for p in line["predictions"]]
    assert scores == sorted(scores, reverse=True)

    out = tmp_path / "predictions.jsonl"
    assert main(["predict", str(run), "--manifest", str(toy / "test.jsonl"), "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 32 and lines[0]["id"] == "test-0000"

    # predictions agree with evaluate's accuracy
    truth = [json.loads(x)["label"] for x in (toy / "test.jsonl").read_text().splitlines()]
    accuracy = sum(p["predictions"][0]["label"] == t for p, t in zip(lines, truth)) / len(truth)
    assert accuracy == pytest.approx(results["test"]["accuracy"])

    assert main(train_args(toy, run)) == 2, "an existing run directory is never overwritten"


def test_multi_label_run_reports_f1(toy_multi, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(toy_multi, run, "--set", "train.epochs=1", "--set", "train.batch_size=8")) == 0
    results = read_json(run / "results.json")
    assert set(results["test"]) == {"f1_micro", "f1_macro", "f1_samples", "f1_weighted"}
    assert results["selection_metric"] == "f1_micro"
    capsys.readouterr()
    assert main(["predict", str(run), "--image", str(toy_multi / "images" / "test-0001.png"), "--text", "berry"]) == 0
    predictions = json.loads(capsys.readouterr().out)["predictions"]
    assert all(p["score"] > 0.5 for p in predictions)


def test_auto_threshold_is_chosen_on_val_and_used_for_test(toy_multi, tmp_path, capsys):
    from mitp.app.train.finished import load_run, split_dataset
    from mitp.data.dataset import model_inputs
    from mitp.metrics import THRESHOLD_CANDIDATES, compute_metrics

    run = tmp_path / "run"
    assert (
        main(
            train_args(
                toy_multi,
                run,
                "--set",
                "train.epochs=2",
                "--set",
                "train.batch_size=8",
                "--set",
                "eval.threshold=auto",
                "--set",
                "eval.select=f1_macro",
            )
        )
        == 0
    )
    results = read_json(run / "results.json")
    assert results["selection_metric"] == "f1_macro" and results["threshold"] in THRESHOLD_CANDIDATES
    # val at the chosen threshold is the best any candidate gives; test is scored at val's threshold
    loaded = load_run(run)
    logits = {}
    for split in ("val", "test"):
        dataset = split_dataset(loaded, split)
        batch = dataset.collate([dataset[i] for i in range(len(dataset))])
        with torch.no_grad():
            logits[split] = (loaded.model(**model_inputs(batch)).logits, batch["labels"])
    val = {t: compute_metrics(*logits["val"], "multi_label", t)["f1_macro"] for t in THRESHOLD_CANDIDATES}
    assert results["val"]["f1_macro"] == pytest.approx(max(val.values()), abs=1e-6)
    assert results["test"] == pytest.approx(
        compute_metrics(*logits["test"], "multi_label", results["threshold"]), abs=1e-6
    )
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0  # evaluate never re-tunes on the split it scores
    assert json.loads(capsys.readouterr().out) == pytest.approx(results["test"], abs=1e-6)
    val_records = [r for r in MetricsLog(run / "metrics.jsonl").records() if r["split"] == "val"]
    assert all(r["threshold"] in THRESHOLD_CANDIDATES for r in val_records)


def test_eval_select_picks_the_checkpoint_and_must_fit_the_task(toy, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(toy, run, "--set", "train.epochs=3", "--set", "eval.select=f1_weighted")) == 0
    results = read_json(run / "results.json")
    val = [r["metrics"] for r in MetricsLog(run / "metrics.jsonl").records() if r["split"] == "val"]
    assert results["selection_metric"] == "f1_weighted"
    assert results["best_epoch"] == 1 + max(range(len(val)), key=lambda i: (val[i]["f1_weighted"], -i))
    assert set(results["test"]) == {"accuracy", "f1_macro", "f1_weighted"}
    capsys.readouterr()
    assert main(train_args(toy, tmp_path / "bad", "--set", "eval.select=f1_micro")) == 2
    assert "eval.select: 'f1_micro' is not a single_label metric" in capsys.readouterr().err


def test_same_seed_same_run_and_loss_goes_down(toy, tmp_path):
    for name in ("a", "b"):
        assert main(train_args(toy, tmp_path / name, "--set", "train.epochs=3")) == 0
    a, b = (
        [
            {k: v for k, v in r.items() if k not in ("epoch_seconds", "epoch_cpu_seconds")}
            for r in MetricsLog(tmp_path / n / "metrics.jsonl").records()
        ]
        for n in ("a", "b")
    )
    assert a == b  # everything but the wall-clock time
    train_losses = [r["loss"] for r in a if r["split"] == "train"]
    assert train_losses[-1] < train_losses[0]


def test_errors_name_the_problem(toy, tmp_path, capsys):
    assert main(train_args(toy, tmp_path / "r", "--set", "train.lrr=1")) == 2
    assert "train.lrr: unknown key" in capsys.readouterr().err
    assert main(train_args(tmp_path / "nowhere", tmp_path / "r2")) == 2
    assert "not a prepared dataset" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


# --- crash safety ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_and_resume_matches_an_uninterrupted_run(toy, tmp_path):
    settings = ["--set", "train.epochs=6", "--set", "train.batch_size=8", "--set", "train.checkpoint_every_steps=1"]
    reference = tmp_path / "reference"
    assert main(train_args(toy, reference, *settings)) == 0

    crashed = tmp_path / "crashed"
    proc = CliProcess(train_args(toy, crashed, *settings), tmp_path / "crashed.log", env=ENV).process
    deadline = time.time() + 120
    metrics = crashed / "metrics.jsonl"
    # kill -9 somewhere inside the second epoch, once the first has been logged and checkpointed
    while time.time() < deadline and proc.is_alive():
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            time.sleep(0.3)
            break
        time.sleep(0.02)
    assert proc.is_alive(), "training finished before it could be killed"
    proc.kill()
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    assert not (crashed / "results.json").exists()

    assert main(["train", "--resume", str(crashed)]) == 0
    want, got = read_json(reference / "results.json"), read_json(crashed / "results.json")
    assert got["best_epoch"] == want["best_epoch"]
    for split in ("val", "test"):
        for key, value in want[split].items():
            assert got[split][key] == pytest.approx(value, abs=1e-4)
    assert got["test_loss"] == pytest.approx(want["test_loss"], abs=1e-4)
    want_log, got_log = (MetricsLog(d / "metrics.jsonl").records() for d in (reference, crashed))
    assert [(r["epoch"], r["split"]) for r in got_log] == [(r["epoch"], r["split"]) for r in want_log]
    for w, g in zip(want_log, got_log):
        assert g["loss"] == pytest.approx(w["loss"], abs=1e-4)


# --- several processes ---------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_under_torchrun_match_one_process(toy, tmp_path):
    settings = ["--set", "train.epochs=2"]
    assert main(train_args(toy, tmp_path / "one", *settings)) == 0
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "mitp",
        *train_args(toy, tmp_path / "two", *settings),
    ]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = read_json(tmp_path / "one" / "results.json"), read_json(tmp_path / "two" / "results.json")
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    assert two["val"]["accuracy"] == pytest.approx(one["val"]["accuracy"], abs=1e-4)
    assert two["test"]["accuracy"] == pytest.approx(one["test"]["accuracy"], abs=1e-4)
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)
    assert two["test_samples"] == one["test_samples"] == 32  # sharded evaluation, no duplicates
    one_log = MetricsLog(tmp_path / "one" / "metrics.jsonl").records()
    two_log = MetricsLog(tmp_path / "two" / "metrics.jsonl").records()
    assert len(one_log) == len(two_log)
    for a, b in zip(one_log, two_log):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4)


def test_metrics_log_drops_lines_of_unfinished_epochs(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for epoch in (1, 2):
        for split in ("train", "val"):
            log.append({"epoch": epoch, "step": 4 * epoch, "split": split, "metrics": {}, "loss": 1.0, "lr": 0.1})
    with log.path.open("a") as f:
        f.write('{"epoch": 3, "st')  # a line cut short by kill -9
    assert len(log.records()) == 4
    # killed after logging epoch 2 but before its end-of-epoch checkpoint: resume redoes epoch 2
    log.truncate_after(completed_epochs=1)
    assert [(r["epoch"], r["split"]) for r in log.records()] == [(1, "train"), (1, "val")]


def test_image_size_override_trains_and_predicts(toy, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(toy, run, "--set", "train.epochs=1", "--set", "train.image_size=16")) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["image_size"] == 16
    capsys.readouterr()
    assert main(["predict", str(run), "--image", str(toy / "images" / "test-0000.png"), "--text", "apple"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"]
    assert main(train_args(toy, tmp_path / "bad", "--set", "train.image_size=4")) == 2
    assert "train.image_size: must be an integer in [14, 4096] or null, got 4" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(train_args(toy, tmp_path / "long", "--set", "train.max_text_length=64")) == 2  # tiny-clip: 32
    assert "train.max_text_length: 64 exceeds the text tower's limit of 32" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_logits_equal_eager_ones():
    """The dynamo path (graph capture, guards, dynamic text length) on the aot_eager backend; the trainer
    uses the same helper with inductor (`train.compile`), whose code generation is torch's own. On a
    shallower tiny CLIP (2 text, 3 vision layers): tracing time grows with depth, what is checked does not."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from mitp.app.train.setup import compile_model
    from mitp.backbones.families.clip import from_clip_model
    from mitp.backbones.specs import TINY_CLIP
    from mitp.methods import build_model, make_config

    config = CLIPConfig(
        text_config={**TINY_CLIP["text_config"], "num_hidden_layers": 2},
        vision_config={**TINY_CLIP["vision_config"], "num_hidden_layers": 3},
        projection_dim=TINY_CLIP["projection_dim"],
    )
    backbone = from_clip_model("tiny-clip", CLIPModel(config).eval())
    model = build_model(make_config("mitp", num_classes=3, num_steps=2), backbone).eval()
    with torch.no_grad():
        model.text_gates.fill_(0.5)
        model.vision_gates.fill_(0.5)
        batches = [backbone.random_batch(4, n, torch.Generator().manual_seed(n)) for n in (10, 12)]
        eager = [model(**b).logits for b in batches]
        compile_model(model, backend="aot_eager")
        compiled = [model(**b).logits for b in batches]
    for e, c in zip(eager, compiled):
        assert torch.allclose(e, c, atol=1e-5)
