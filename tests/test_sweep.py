"""mitp sweep: the space syntax, workers sharing one storage without running a trial twice, pruning,
and a killed sweep resuming its trial where it stopped."""

import json
import time
from pathlib import Path

import optuna
import pytest

from mitp.app.analysis.sweep import Param, Sweep, counts, parse_space, work
from mitp.app.cli import main
from mitp.app.launch import CliProcess
from mitp.configuration import ConfigError

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"
# Optuna marks heartbeats and stale-trial retries experimental; the sweep uses them on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def base(toy_dataset, *extra):
    return [f"data={toy_dataset}", "train.log_with=none", *extra]


@pytest.mark.parametrize(
    "spec, key, message",
    [
        ("train.lr=normal:0:1", "train.lr", "unknown distribution 'normal'"),
        ("train.lr=loguniform:0:1", "train.lr", "LOW > 0 for loguniform"),
        ("train.lr=uniform:1", "train.lr", "needs LOW:HIGH numbers"),
        ("train.epochs=int:5:2", "train.epochs", "LOW < HIGH"),
        ("methods.mitp.hub=choice:mean,mean", "methods.mitp.hub", "distinct"),
        ("seed=int:0:3", "seed", "cannot be searched"),
        ("train.lr", "--space", "expected KEY=KIND:ARGS"),
    ],
)
def test_bad_space_syntax_names_the_key(spec, key, message, capsys):
    with pytest.raises(ConfigError, match=message) as err:
        parse_space([spec])
    assert err.value.key == key
    assert main(["sweep", "--config", str(CONFIG), "--space", spec, "--out", "/nonexistent/never-made"]) == 2
    assert message.split("'")[0] in capsys.readouterr().err


def test_the_space_parses_each_kind_and_keeps_method_keys_to_their_method():
    lr, hub, steps, drop = parse_space(
        [
            "train.lr=loguniform:1e-4:3e-3",
            "methods.mitp.hub=choice:mean,none",
            "methods.mitp.num_steps=int:1:3",
            "head.dropout=uniform:0:0.5",
        ]
    )
    assert lr == Param("train.lr", "loguniform", (1e-4, 3e-3)) and hub.args == ("mean", "none")
    assert steps.args == (1, 3) and drop.kind == "uniform"
    assert hub.applies_to("mitp") and not hub.applies_to("late_fusion") and lr.applies_to("late_fusion")


@pytest.mark.slow
def test_two_workers_on_one_storage_finish_the_budget_without_running_a_trial_twice(toy_dataset, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert (
        main(
            [
                "sweep",
                "--config",
                str(CONFIG),
                *[a for o in base(toy_dataset, "train.epochs=2") for a in ("--set", o)],
                "--methods",
                "late_fusion",
                "--space",
                "train.lr=loguniform:1e-3:1e-1",
                "--trials",
                "4",
                "--no-prune",
                "--jobs",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "2 workers" in capsys.readouterr().out
    study = optuna.load_study(study_name="mitp-late_fusion", storage=f"sqlite:///{out / 'sweep.db'}")
    trials = study.get_trials()
    assert 4 <= counts(study)["complete"] <= 5 and counts(study)["fail"] == 0  # two may start the last at once
    dirs = sorted((out / "late_fusion").iterdir())
    assert [d.name for d in dirs] == [f"trial-{t.number}" for t in sorted(trials, key=lambda t: t.number)]
    for run in dirs:  # each trained once: one record per epoch, a value that is its trial's
        epochs = [
            json.loads(x)["epoch"]
            for x in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(x)["split"] == "val"
        ]
        assert epochs == [1, 2]
        record = json.loads((run / "trial.json").read_text())
        assert record["state"] == "complete" and record["value"] == study.trials[record["trial"]].value
        assert json.loads((run / "results.json").read_text())["test"] is None  # a trial never reads test
    rows = json.loads((out / "sweep.json").read_text())
    assert rows[0]["best"]["val"] == max(t.value for t in trials) and "accuracy" in rows[0]["best"]["test"]


def test_a_trial_below_the_median_is_pruned_and_marked(toy_dataset, tmp_path):
    sweep = Sweep(
        str(CONFIG),
        base(toy_dataset, "train.epochs=4"),
        ["late_fusion"],
        parse_space(["train.lr=choice:0.05,0.03,0.02,1e-7"]),
        trials=4,
        out=tmp_path / "sweep",
    )
    study = sweep.open_study("late_fusion")
    for lr in (0.05, 0.03, 0.02, 1e-7):  # three that learn first, then one that cannot
        study.enqueue_trial({"train.lr": lr})
    work(sweep)
    last = sorted(study.get_trials(), key=lambda t: t.number)[-1]
    assert last.params == {"train.lr": 1e-7} and last.state == optuna.trial.TrialState.PRUNED
    record = json.loads((tmp_path / "sweep" / "late_fusion" / f"trial-{last.number}" / "trial.json").read_text())
    assert record["state"] == "pruned" and record["epochs_trained"] < 4


@pytest.mark.slow
def test_a_killed_sweep_resumes_its_trial_where_it_stopped(toy_dataset, tmp_path):
    out = tmp_path / "sweep"
    sets = [a for o in base(toy_dataset, "train.epochs=6", "train.batch_size=4") for a in ("--set", o)]
    argv = [
        "sweep",
        "--config",
        str(CONFIG),
        *sets,
        "--methods",
        "mitp",
        "--space",
        "train.lr=loguniform:1e-3:1e-2",
        "--trials",
        "1",
        "--no-prune",
        "--out",
        str(out),
    ]
    worker = CliProcess(argv, tmp_path / "worker.log", env={"OMP_NUM_THREADS": "1"}).process
    last = out / "mitp" / "trial-0" / "checkpoint" / "last"
    deadline = time.monotonic() + 180
    while not (last / "training_state.json").is_file():  # killed once the first epoch is saved
        assert worker.is_alive() and time.monotonic() < deadline, "the worker never saved an epoch"
        time.sleep(0.1)
    worker.kill()
    worker.join()
    sweep = Sweep(
        str(CONFIG),
        base(toy_dataset, "train.epochs=6", "train.batch_size=4"),
        ["mitp"],
        parse_space(["train.lr=loguniform:1e-3:1e-2"]),
        trials=1,
        out=out,
        prune=False,
        heartbeat_s=1,
        grace_s=2,
    )
    time.sleep(2.5)  # the killed worker's last heartbeat is older than the grace
    work(sweep)
    study = sweep.open_study("mitp")
    assert counts(study)["complete"] == 1 and counts(study)["fail"] == 1  # the killed one, retried
    assert sorted(p.name for p in (out / "mitp").iterdir()) == ["trial-0"]  # resumed in its own directory
    lines = [json.loads(x) for x in (out / "mitp" / "trial-0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["split"] == "val"] == [1, 2, 3, 4, 5, 6]  # no epoch trained twice
    retried = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE][0]
    assert retried.params == study.trials[0].params
