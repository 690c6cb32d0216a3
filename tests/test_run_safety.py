"""Run directories are safe to use carelessly: no pickle is ever loaded, nothing foreign is
overwritten, two trainings cannot share a directory, and a run that died early can be rerun."""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock, Timeout

from mitp.app.cli import main
from mitp.app.train.state import load_state, save_state
from mitp.files import CheckpointError
from mitp.runs import LOCK as LOCK_NAME

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def train(toy_dataset, out, *extra):
    return main(
        [
            "train",
            "--config",
            str(CONFIG),
            "--set",
            f"data={toy_dataset}",
            "--set",
            "train.epochs=1",
            "--out",
            str(out),
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def finished_run(toy_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "done"
    assert train(toy_dataset, run) == 0
    return run


# --- no pickle ---------------------------------------------------------------------------------
def test_training_state_round_trips_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": (3, (1, 2), None)},
        "position": {"epoch": 2, "best": None, "loss": 0.5},
    }
    paths = save_state(state, tmp_path, "state")
    assert sorted(p.name for p in paths) == ["state.json", "state.safetensors"]
    back = load_state(tmp_path, "state", required=("optimizer", "rng"))
    assert back["position"] == state["position"] and back["rng"]["python"] == (3, (1, 2), None)
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])
    numpy_state = back["rng"]["numpy"]
    assert numpy_state[0] == "MT19937" and numpy_state[1].dtype == np.uint32
    assert np.array_equal(numpy_state[1], state["rng"]["numpy"][1])
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert set(back["optimizer"]["state"]) == {0, 1}  # integer keys survive
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    np.random.set_state(numpy_state)  # what resume does with it
    with pytest.raises(CheckpointError, match=r"state.json: missing scheduler"):
        load_state(tmp_path, "state", required=("scheduler",))


def test_a_pickle_in_a_run_is_never_loaded(finished_run, tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    last = finished_run / "checkpoint" / "last"
    for name in ("training_state.json", "training_state.safetensors"):
        (last / name).rename(tmp_path / name)
    (last / "training_state.pt").write_bytes(pickle.dumps(Payload()))
    try:
        assert main(["train", "--resume", str(finished_run)]) == 2
        err = capsys.readouterr().err
        assert str(last / "training_state.json") in err and "no resumable checkpoint" in err
        assert not marker.exists(), "the pickle ran"
    finally:
        (last / "training_state.pt").unlink()
        for name in ("training_state.json", "training_state.safetensors"):
            (tmp_path / name).rename(last / name)


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_checkpoint_files_are_named_errors(finished_run, damage, capsys):
    weights = finished_run / "checkpoint" / "best" / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes({"empty": b"", "truncated": original[: len(original) // 2], "garbage": b"\x00" * 64}[damage])
    try:
        assert main(["evaluate", str(finished_run)]) == 2
        err = capsys.readouterr().err
        assert str(weights) in err and "Traceback" not in err
    finally:
        weights.write_bytes(original)


def test_a_state_file_missing_a_key_is_named(finished_run, tmp_path, capsys):
    import json

    structure = finished_run / "checkpoint" / "last" / "training_state.json"
    original = structure.read_text()
    data = json.loads(original)
    data["state"]["__dict__"] = [pair for pair in data["state"]["__dict__"] if pair[0] != "scheduler"]
    structure.write_text(json.dumps(data))
    (finished_run / "results.json").rename(tmp_path / "results.json")
    try:
        assert main(["train", "--resume", str(finished_run)]) == 2
        assert "training_state.json: missing scheduler" in capsys.readouterr().err
    finally:
        structure.write_text(original)
        (tmp_path / "results.json").rename(finished_run / "results.json")


# --- where a run may be written ------------------------------------------------------------------
def test_a_run_never_goes_into_a_directory_of_other_files(toy_dataset, tmp_path, capsys):
    labels = (toy_dataset / "labels.json").read_text()
    assert train(toy_dataset, toy_dataset) == 2
    assert "not empty and not a mitp run directory" in capsys.readouterr().err
    assert (toy_dataset / "labels.json").read_text() == labels and not (toy_dataset / LOCK_NAME).exists()


def test_an_existing_run_needs_resume_or_overwrite(toy_dataset, finished_run, tmp_path, capsys):
    run = tmp_path / "again"
    assert train(toy_dataset, run) == 0
    assert train(toy_dataset, run) == 2
    assert "--overwrite" in capsys.readouterr().err
    first = (run / "results.json").stat().st_mtime_ns
    assert train(toy_dataset, run, "--overwrite") == 0
    assert (run / "results.json").stat().st_mtime_ns != first


def test_a_second_training_on_the_same_directory_is_refused(toy_dataset, tmp_path, capsys):
    run = tmp_path / "busy"
    run.mkdir()
    with FileLock(str(run / LOCK_NAME), timeout=0):  # as a running `mitp train` holds it
        assert train(toy_dataset, run) == 2
    assert "another `mitp train` is using this run directory" in capsys.readouterr().err
    assert not (run / "metrics.jsonl").exists()


def test_the_lock_dies_with_its_process(tmp_path):
    run = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import time
        from mitp.app.train.rundir import run_lock
        with run_lock({str(run)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(Timeout):
        FileLock(str(run / LOCK_NAME), timeout=0).acquire()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with FileLock(str(run / LOCK_NAME), timeout=0):
        pass  # released by the kernel with the killed process


def test_a_run_that_died_in_its_first_epoch_can_be_resumed_from_the_start(toy_dataset, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(toy_dataset, data)  # the shared dataset is never changed
    image = data / "images" / "train-0003.png"
    original = image.read_bytes()
    run = tmp_path / "early"
    image.write_bytes(b"not a png")
    assert train(data, run) == 2  # the bad image stops the first epoch
    image.write_bytes(original)
    assert (run / "config.yaml").is_file() and not (run / "checkpoint").exists()
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    assert "starting it from the beginning" in capsys.readouterr().out
    assert (run / "results.json").is_file()


# --- no command writes over its inputs or a run's files ---------------------------------------------
def snapshot(*paths) -> dict:
    """Every file under ``paths`` with its bytes."""
    files = {}
    for path in map(Path, paths):
        for f in [path] if path.is_file() else sorted(path.rglob("*")):
            if f.is_file():
                files[str(f)] = f.read_bytes()
    return files


def test_a_resume_never_deletes_a_finished_result(toy_dataset, tmp_path, capsys):
    import shutil

    run = tmp_path / "finished"
    assert train(toy_dataset, run) == 0
    shutil.rmtree(run / "checkpoint" / "last")
    (run / LOCK_NAME).unlink()  # a run copied from elsewhere: the refusal must not leave a lock file behind
    before = snapshot(run)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "checkpoint/best and results.json" in err and "--overwrite" in err
    assert snapshot(run) == before and not (run / LOCK_NAME).exists()


@pytest.mark.parametrize(
    "victim",
    [
        "config.yaml",
        "results.json",
        "checkpoint/best/config.json",
        "metrics.jsonl",
        "checkpoint/best/model.safetensors",
    ],
)
def test_predict_never_writes_over_a_run_file(finished_run, victim, capsys):
    before = snapshot(finished_run)
    assert main(["predict", str(finished_run), "--text", "apple", "--out", str(finished_run / victim)]) == 2
    assert f"refusing to write {finished_run / victim}: it belongs to the run" in capsys.readouterr().err
    assert snapshot(finished_run) == before


def test_explain_and_predict_never_write_over_their_input(toy_dataset, finished_run, tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes((toy_dataset / "images" / "test-0000.png").read_bytes())
    before = snapshot(image, finished_run)
    assert main(["explain", str(finished_run), "--image", str(image), "--text", "a", "--out", str(image)]) == 2
    assert "it is an input of this command" in capsys.readouterr().err
    assert main(["predict", str(finished_run), "--image", str(image), "--out", str(image)]) == 2
    assert "it is an input of this command" in capsys.readouterr().err
    assert main(["robustness", str(finished_run), "--rates", "0", "--out", str(finished_run / "checkpoint")]) == 2
    assert "it belongs to the run" in capsys.readouterr().err
    assert (
        main(
            [
                "explain",
                str(finished_run),
                "--image",
                str(image),
                "--text",
                "a",
                "--out",
                str(finished_run / "curves.png"),
            ]
        )
        == 2
    )
    assert snapshot(image, finished_run) == before


def test_overwrite_replaces_runs_only_never_a_dataset_with_a_config(toy_dataset, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(toy_dataset, data)
    (data / "config.yaml").write_text(CONFIG.read_text())
    (data / "checkpoint").mkdir()
    (data / "checkpoint" / "notes.txt").write_text("mine")
    (data / "metrics.jsonl").write_text('{"mine": 1}\n')
    before = snapshot(data)
    assert train(data, data, "--overwrite") == 2
    assert "not a mitp run directory" in capsys.readouterr().err
    assert snapshot(data) == before
    # prepare never writes a dataset into a run, nor its manifest over the file it reads
    run = tmp_path / "run"
    assert train(toy_dataset, run) == 0
    before = snapshot(run)
    assert (
        main(["prepare", "jsonl", "--input", str(toy_dataset / "train.jsonl"), "--out", str(run), "--no-progress"]) == 2
    )
    assert "it holds a run" in capsys.readouterr().err and snapshot(run) == before
    copy = tmp_path / "copy"
    shutil.copytree(toy_dataset, copy)
    before = snapshot(copy)
    prepare = ["prepare", "jsonl", "--input", str(copy / "train.jsonl"), "--out", str(copy), "--no-progress"]
    assert main(prepare) == 2
    assert "it holds a dataset (--overwrite replaces it)" in capsys.readouterr().err and snapshot(copy) == before
    assert main([*prepare, "--overwrite"]) == 2
    assert "it is an input of this command" in capsys.readouterr().err and snapshot(copy) == before


def test_a_diverging_loss_stops_with_a_named_error_and_keeps_the_last_checkpoint(
    toy_dataset, tmp_path, capsys, monkeypatch
):
    import json

    import mitp.app.train.loop as loop

    real, calls = loop.train_step, []

    def diverging(*args, **kwargs):  # the sixth step (epoch 2 of 4-step epochs) returns nan
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 6 else loss

    monkeypatch.setattr(loop, "train_step", diverging)
    run = tmp_path / "diverged"
    assert train(toy_dataset, run, "--set", "train.epochs=3", "--set", "train.batch_size=8") == 2
    err = capsys.readouterr().err
    assert "the training loss became nan at epoch 2, batch 2" in err and "Lower train.lr" in err
    assert f"{run / 'checkpoint' / 'last'}" in err and not (run / "results.json").exists()
    state = json.loads((run / "checkpoint" / "last" / "training_state.json").read_text())["state"]
    position = dict(dict(state["__dict__"])["position"]["__dict__"])
    assert position["epoch"] == 1 and position["step"] == 4  # the end of epoch 1, nothing after
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 1]


def all_finite(run: Path) -> bool:
    """Every tensor of every checkpoint of ``run`` (weights and training state) is finite."""
    from safetensors.torch import load_file

    files = list((run / "checkpoint").rglob("*.safetensors"))
    return bool(files) and all(torch.isfinite(t).all() for f in files for t in load_file(f).values())


def test_non_finite_values_are_counted_per_tensor_and_large_finite_ones_are_not():
    from mitp.model_folder import non_finite_counts

    tensors = {"a": torch.zeros(4, 3), "b": torch.ones(5), "steps": torch.arange(3)}
    assert non_finite_counts(tensors) == {}
    tensors["a"][1, 2], tensors["b"][:2] = float("nan"), float("-inf")
    assert non_finite_counts(tensors) == {"a": 1, "b": 2}
    large = {"f32": torch.full((10,), 3e38), "f16": torch.full((10,), 6e4, dtype=torch.float16)}  # sums overflow
    assert non_finite_counts(large) == {}
    assert non_finite_counts({"bf16": torch.tensor([1.0, float("inf")], dtype=torch.bfloat16)}) == {"bf16": 1}


def test_weights_turned_non_finite_stop_the_run_and_leave_the_checkpoints_as_they_were(
    toy_dataset, tmp_path, capsys, monkeypatch
):
    import json

    import mitp.app.train.loop as loop

    real, calls, before = loop.train_step, [], {}
    run = tmp_path / "poisoned"

    def poisoning(model, *args, **kwargs):  # the sixth step (epoch 2 of 4-step epochs) leaves a NaN weight
        calls.append(1)
        if len(calls) == 5:
            before.update(snapshot(run / "checkpoint"))  # what epoch 1 saved
        loss = real(model, *args, **kwargs)
        if len(calls) == 6:
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).view(-1)[0] = float("nan")
        return loss  # still finite

    monkeypatch.setattr(loop, "train_step", poisoning)
    assert train(toy_dataset, run, "--set", "train.epochs=3", "--set", "train.batch_size=8") == 2
    out, err = capsys.readouterr()
    [line] = [x for x in err.splitlines() if "non-finite" in x]  # one line says what, where and what is kept
    assert "the trainable weights became non-finite (1 of " in line and "at epoch 2, batch 2;" in line
    assert f"The last good checkpoint: {run / 'checkpoint' / 'last'}." in line
    assert before and snapshot(run / "checkpoint") == before and all_finite(run)
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 1]
    assert [x.split(":")[0] for x in out.splitlines() if "(best)" in x] == ["epoch 1/3"]
    assert not (run / "results.json").exists()


def test_a_huge_learning_rate_never_saves_or_marks_best_a_non_finite_model(toy_dataset, tmp_path, capsys):
    run = tmp_path / "huge"  # one step per epoch: its first step makes every weight infinite, its loss finite
    assert train(toy_dataset, run, "--set", "train.lr=1e300", "--set", "train.batch_size=32") == 2
    out, err = capsys.readouterr()
    [line] = [x for x in err.splitlines() if "non-finite" in x]
    assert "the trainable weights became non-finite" in line and "at epoch 1, batch 1;" in line
    assert "The last good checkpoint: none yet." in line and "Lower train.lr" in line
    assert "(best)" not in out and not (run / "checkpoint").exists()
    assert not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text()


def test_a_non_finite_validation_metric_is_never_best_nor_saved(toy_dataset, tmp_path, capsys, monkeypatch):
    import json

    import mitp.app.train.loop as loop

    real, calls, before = loop.evaluate, [], {}
    run = tmp_path / "nan-val"

    def overflowing(*args, **kwargs):  # the second validation's loss is NaN, its accuracy a fine number
        calls.append(1)
        result = real(*args, **kwargs)
        if len(calls) == 2:
            before.update(snapshot(run / "checkpoint"))
            return {**result, "loss": float("nan")}
        return result

    monkeypatch.setattr(loop, "evaluate", overflowing)
    assert train(toy_dataset, run, "--set", "train.epochs=3") == 2
    out, err = capsys.readouterr()
    [line] = [x for x in err.splitlines() if "validation" in x]
    assert "the validation loss became nan at epoch 2;" in line
    assert f"The last good checkpoint: {run / 'checkpoint' / 'last'}." in line
    assert before and snapshot(run / "checkpoint") == before and all_finite(run)
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 1]
    assert [x.split(":")[0] for x in out.splitlines() if "(best)" in x] == ["epoch 1/3"]


def test_non_finite_and_negative_values_are_refused_before_training(toy_dataset, tmp_path, capsys):
    assert train(toy_dataset, tmp_path / "inf", "--set", "train.lr=.inf") == 2
    assert "train.lr: must be a finite number" in capsys.readouterr().err
    assert train(toy_dataset, tmp_path / "nan", "--set", "train.weight_decay=.nan") == 2
    assert "must be a finite number" in capsys.readouterr().err
    assert train(toy_dataset, tmp_path / "seed", "--set", "seed=-1") == 2
    assert "seed: must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "inf").exists() or not any((tmp_path / "inf").iterdir())
