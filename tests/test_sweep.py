"""mitp sweep: the space syntax and its check against the config before any trial, named storage errors,
workers creating one storage at the same moment, workers sharing one storage that search (distinct settings)
without running a trial twice, a study of another sweep refused, pruning, a failed trial named in one line,
and a killed sweep resuming its trial where it stopped."""

import io
import json
import logging
import shutil
import sqlite3
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from rich.console import Console

from mitp.app.analysis import sweep as sweep_module
from mitp.app.analysis import sweep_study
from mitp.app.analysis.sweep import report, work
from mitp.app.analysis.sweep_space import Param, check_space, parse_space
from mitp.app.analysis.sweep_study import StorageError, Sweep, SweepConflict, counts, open_storage, prepare
from mitp.app.cli import main
from mitp.app.launch import CliProcess
from mitp.configuration import ConfigError

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"
# Optuna marks heartbeats and stale-trial retries experimental; the sweep uses them on purpose.
pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    # the tests below ask for trials by hand, without Study.optimize and its heartbeat thread
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize"),
]


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
        ("train.lr=uniform:0:inf", "train.lr", "finite bounds"),
        ("train.lr=loguniform:1e-4:nan", "train.lr", "finite bounds"),
        ("train.lr", "--space", "expected KEY=KIND:ARGS"),
    ],
)
def test_bad_space_syntax_names_the_key(spec, key, message, capsys):
    with pytest.raises(ConfigError, match=message) as err:
        parse_space([spec])
    assert err.value.key == key
    assert main(["sweep", "--config", str(CONFIG), "--space", spec, "--out", "/nonexistent/never-made"]) == 2
    assert message.split("'")[0] in capsys.readouterr().err


def sweep_args(toy_dataset, out, *extra):
    return ["sweep", "--config", str(CONFIG), "--set", f"data={toy_dataset}", "--out", str(out), *extra]


@pytest.mark.parametrize(
    "space, methods, key, message",
    [
        ("train.nope=uniform:0:1", "late_fusion", "train.nope", "unknown key"),
        ("train.epochs=uniform:1:2", "late_fusion", "train.epochs", "expected int, got 1.0"),
        ("methods.mitp.hub=choice:mean,nope", "mitp", "methods.mitp.hub", "'nope' is not one of"),
        ("train.batch_size=int:0:8", "late_fusion", "train.batch_size", "proposes 0"),
        ("methods.pmf.num_steps=int:1:2", "late_fusion", "methods.pmf.num_steps", "--methods leaves out"),
    ],
)
def test_a_space_no_trial_could_train_is_refused_before_the_first_trial(
    space, methods, key, message, toy_dataset, tmp_path, capsys
):
    with pytest.raises(ConfigError, match=message) as err:
        check_space(str(CONFIG), [f"data={toy_dataset}"], methods.split(","), parse_space([space]))
    assert err.value.key == key
    out = tmp_path / "sweep"
    assert main(sweep_args(toy_dataset, out, "--methods", methods, "--space", space)) == 2
    captured = capsys.readouterr()
    assert f"error: {key}:" in captured.err and message in captured.err and "Traceback" not in captured.err
    assert not out.exists(), "refused before any study or trial was made"


@pytest.mark.parametrize(
    "url, reason",
    [
        ("garbage", "not a database URL"),
        ("nosuchdb://host/db", "unknown kind of database 'nosuchdb'"),
        ("sqlite:////proc/no/such/dir/sweep.db", "cannot open it (unable to open database file)"),
    ],
)
def test_a_storage_that_cannot_be_opened_is_named_with_the_reason(url, reason, toy_dataset, tmp_path, capsys):
    with pytest.raises(StorageError, match="--storage") as err:
        open_storage(url)
    assert reason in str(err.value) and (url if url != "garbage" else "'garbage'") in str(err.value)
    args = sweep_args(
        toy_dataset, tmp_path / "sweep", "--methods", "late_fusion", "--space", "train.lr=uniform:0.01:0.1"
    )
    assert main([*args, "--storage", url]) == 2
    captured = capsys.readouterr()
    assert reason in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "sweep").exists()  # a refused sweep leaves no --out behind


def test_a_storage_another_worker_creates_at_the_same_moment_is_opened(tmp_path, monkeypatch):
    """Two workers on one fresh SQLite file both create its tables: the one that loses the race is refused by
    SQLite ("table ... already exists", "UNIQUE constraint failed") and opens the storage again; any other
    error is named at once, and a race that never ends is named after the last try."""
    real, tries = sweep_study.RDBStorage, []
    races = [
        sqlalchemy.exc.OperationalError(
            "CREATE TABLE studies", {}, sqlite3.OperationalError("table studies already exists")
        ),
        sqlalchemy.exc.IntegrityError(
            "INSERT INTO alembic_version",
            {},
            sqlite3.IntegrityError("UNIQUE constraint failed: alembic_version.version_num"),
        ),
    ]

    def racing(*args, **kwargs):  # the other worker makes the tables while this one tries
        tries.append(args[0])
        storage = real(*args, **kwargs)
        if races:
            raise races.pop(0)
        return storage

    monkeypatch.setattr(sweep_study, "RDBStorage", racing)
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    assert isinstance(open_storage(url), real) and len(tries) == 3

    def refused(error):
        def make(*args, **kwargs):
            tries.append(args[0])
            raise error

        return make

    tries.clear()
    other = sqlalchemy.exc.OperationalError("SELECT", {}, sqlite3.OperationalError("disk I/O error"))
    monkeypatch.setattr(sweep_study, "RDBStorage", refused(other))
    with pytest.raises(StorageError, match=r"cannot open it \(disk I/O error\)"):
        open_storage(url)
    assert len(tries) == 1, "not the race: not tried again"
    tries.clear()
    monkeypatch.setattr(sweep_study, "RACE_WAIT_S", 0)
    always = sqlalchemy.exc.OperationalError(
        "CREATE TABLE", {}, sqlite3.OperationalError("table trials already exists")
    )
    monkeypatch.setattr(sweep_study, "RDBStorage", refused(always))
    with pytest.raises(StorageError, match=r"cannot open it \(table trials already exists\)"):
        open_storage(url)
    assert len(tries) == sweep_study.RACE_TRIES


def test_workers_and_a_restarted_worker_draw_settings_of_their_own(tmp_path, toy_dataset):
    """Two workers of one study (each with its own sampler, as two processes have) ask in turn; a third,
    started after the first was killed with its trial running, asks too: every trial gets its own setting,
    and the same seed gives the same settings again in a new study."""

    def worker(out: Path, seed: int = 0) -> optuna.Study:
        space = parse_space(["train.lr=loguniform:1e-4:1e-1", "head.dropout=uniform:0:0.5"])
        return Sweep(str(CONFIG), base(toy_dataset), ["late_fusion"], space, 4, out, seed=seed).open_study(
            "late_fusion"
        )

    def draw(study: optuna.Study) -> tuple:
        trial = study.ask()
        return (
            trial.suggest_float("train.lr", 1e-4, 1e-1, log=True),
            trial.suggest_float("head.dropout", 0, 0.5),
        )

    first, second = worker(tmp_path / "a"), worker(tmp_path / "a")
    drawn = [draw(first), draw(second), draw(first), draw(second)]  # two workers, four trials
    drawn.append(draw(worker(tmp_path / "a")))  # the first is killed (its trial left running); a new one starts
    assert len(set(drawn)) == len(drawn) == 5
    again = worker(tmp_path / "b")
    assert [draw(again) for _ in range(5)] == drawn  # a trial's setting follows from the seed and its number
    assert draw(worker(tmp_path / "c", seed=1)) != drawn[0]


def test_a_study_of_another_sweep_is_refused_not_reported(toy_dataset, tmp_path, capsys):
    out = tmp_path / "sweep"
    asked = sweep_args(toy_dataset, out, "--methods", "late_fusion", "--space", "train.lr=loguniform:1e-3:1e-2")
    space = parse_space(["train.lr=loguniform:1e-3:1e-2"])
    sweep = Sweep(str(CONFIG), [f"data={toy_dataset}"], ["late_fusion"], space, 2, out)
    prepare(sweep)
    study = sweep.open_study("late_fusion")
    study.tell(study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)}), 0.5)
    prepare(sweep)  # the same sweep continues its study
    other_space = [*asked[:-1], "train.lr=loguniform:1e-1:1"]
    other_config = [*asked, "--set", "train.epochs=2"]
    other_data = [*asked, "--set", f"data={tmp_path / 'data'}"]
    shutil.copytree(toy_dataset, tmp_path / "data")
    for argv, named in (
        (other_space, "--space train.lr: loguniform:0.001:0.01 in the study, loguniform:0.1:1.0 asked"),
        (other_config, "train.epochs: 3 in the study, 2 asked"),
        (other_data, f"data: {str(toy_dataset)!r} in the study, {str(tmp_path / 'data')!r} asked"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "study mitp-late_fusion" in err and "1 trial(s) of another sweep" in err and named in err, err
        assert "another --study or --out" in err
    with pytest.raises(SweepConflict, match="holds trial-0 of another study than other-late_fusion"):
        (out / "late_fusion" / "trial-0").mkdir(parents=True)
        prepare(Sweep(str(CONFIG), [f"data={toy_dataset}"], ["late_fusion"], space, 2, out, study="other"))
    assert len(optuna.load_study(study_name="mitp-late_fusion", storage=sweep.storage_url()).trials) == 1


def test_a_report_without_the_best_trials_run_directory_says_so(toy_dataset, tmp_path):
    """A worker on another machine trained the best trial, and no run directory is shared."""
    space = parse_space(["train.lr=loguniform:1e-3:1e-2"])
    sweep = Sweep(str(CONFIG), [f"data={toy_dataset}"], ["late_fusion"], space, 1, tmp_path / "sweep")
    study = sweep.open_study("late_fusion")
    trial = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)})
    trial.set_user_attr("selection_metric", "accuracy")
    study.tell(trial, 0.75)
    (row,) = report(sweep)
    assert row["best"]["test"] is None and row["best"]["val"] == 0.75 and row["best"]["metric"] == "accuracy"
    assert "| accuracy 0.7500 | - (not on this machine) |" in (tmp_path / "sweep" / "sweep.md").read_text()


def test_an_out_that_is_a_file_is_refused_before_the_work(toy_dataset, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    assert main(sweep_args(toy_dataset, out, "--methods", "late_fusion", "--space", "train.lr=uniform:0.01:0.1")) == 2
    assert "it exists and is not a directory" in capsys.readouterr().err and out.read_text() == "not a folder"


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
    assert len({t.params["train.lr"] for t in trials}) == len(trials), "the workers searched, not repeated"
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


def test_a_failed_trial_is_one_line_with_its_reason_and_the_sweep_goes_on(toy_dataset, tmp_path, monkeypatch):
    """A trial whose training raises is failed (the sweep goes on with the next one) and named in one line with
    the reason; neither the sweep nor Optuna prints its traceback, which is in OUT/logs/failed-trials.log."""
    sweep = Sweep(
        str(CONFIG), base(toy_dataset), ["late_fusion"], parse_space(["train.lr=uniform:0.01:0.1"]), 2, tmp_path / "s"
    )
    trained = []

    def train_run(config, run_dir, **kwargs):  # the first trial's training fails, the others finish
        trained.append(run_dir)
        if len(trained) == 1:
            raise RuntimeError("the loss is not finite at step 3\nits second line of detail")
        run_dir.mkdir(parents=True)
        return {"val": {"accuracy": 0.5}, "selection_metric": "accuracy", "epochs": 1}

    monkeypatch.setattr(sweep_module, "train_run", train_run)
    printed, logged = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(logged)  # what Optuna would print
    logging.getLogger("optuna").addHandler(handler)
    try:
        work(sweep, Console(file=printed, soft_wrap=True))
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    study = sweep.open_study("late_fusion")
    State = optuna.trial.TrialState
    assert [t.state for t in study.get_trials()] == [State.FAIL, State.COMPLETE, State.COMPLETE]
    log = tmp_path / "s" / "logs" / "failed-trials.log"
    (line,) = [x for x in printed.getvalue().splitlines() if " failed: " in x]
    assert line == f"late_fusion trial 0 failed: RuntimeError: the loss is not finite at step 3 (traceback in {log})"
    assert "Traceback" not in printed.getvalue() and "Traceback" not in logged.getvalue(), logged.getvalue()
    text = log.read_text()
    assert text.startswith("late_fusion trial 0:\nTraceback") and "its second line of detail" in text


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


def test_the_report_links_to_the_significance_of_the_best_trials_and_draws_every_trial(toy_dataset, tmp_path):
    """Two methods' best trials (one run each: the command counts sample variance only, and says so)."""
    import shlex

    space = parse_space(["train.lr=loguniform:1e-3:1e-2"])
    sweep = Sweep(str(CONFIG), [f"data={toy_dataset}"], ["late_fusion", "mitp"], space, 1, tmp_path / "sweep")
    for method, value in (("late_fusion", 0.75), ("mitp", 0.8)):
        study = sweep.open_study(method)
        trial = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)})
        trial.set_user_attr("selection_metric", "accuracy")
        study.tell(trial, value)
    report(sweep)
    text = (tmp_path / "sweep" / "sweep.md").read_text()
    (command,) = [shlex.split(line) for line in text.splitlines() if line.startswith("mitp significance")]
    out = tmp_path / "sweep"
    assert command == ["mitp", "significance", "--a", str(out / "mitp" / "trial-0"), "--b",
                       str(out / "late_fusion" / "trial-0"), "--split", "test", "--samples-only"]  # fmt: skip
    assert (out / "sweep.png").stat().st_size > 0
