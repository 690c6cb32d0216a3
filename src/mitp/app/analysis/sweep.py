"""`mitp sweep`: a search over any config keys with Optuna, the same trial budget for every method.

One Optuna study per method (``<study>-<method>``) in one storage: SQLite in the output directory by
default, or any database URL, so that workers on many machines join the same studies by running the
same command. TPE samples the space; a median pruner, fed each epoch's validation selection metric,
stops trials that fall behind. Every trial is a normal run directory, ``OUT/<method>/trial-<n>``,
trained without reading its test split; test is read once, for each method's best trial, chosen on
validation. Workers send heartbeats: the trial of a killed worker is failed after a grace period and
tried again with the same parameters in the same run directory, resumed from its last checkpoint, so
no trial is trained twice and none is lost.

Space syntax (``--space``): ``KEY=loguniform:LOW:HIGH``, ``uniform:LOW:HIGH``, ``int:LOW:HIGH`` or
``choice:V1,V2,...`` (values parsed as YAML). ``methods.<name>.KEY`` applies to that method only.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from mitp.atomic import write_json_atomic, write_text_atomic
from mitp.configuration import ConfigError, parse_value
from mitp.methods import get_method
from mitp.runs import Run

from ..errors import UserError
from ..launch import CliProcess
from ..threads import available_cores
from ..train.config import load_run_config
from ..train.finished import evaluate_dataset, load_run, split_dataset
from ..train.runner import run_training

KINDS = ("loguniform", "uniform", "int", "choice")
# Heartbeats and the retry of stale trials are marked experimental in Optuna; they are what makes a killed
# worker's trial resume, so they are used on purpose.
warnings.filterwarnings("ignore", category=ExperimentalWarning)
HEARTBEAT_S, GRACE_S = 10, 30  # a killed worker's trial is failed (and retried) this long after its last beat


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched config key: ``kind`` and its arguments (bounds, or the choices)."""

    key: str
    kind: str
    args: tuple

    def suggest(self, trial: optuna.Trial):
        if self.kind == "loguniform":
            return trial.suggest_float(self.key, *self.args, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(self.key, *self.args)
        if self.kind == "int":
            return trial.suggest_int(self.key, *self.args)
        return trial.suggest_categorical(self.key, list(self.args))

    def applies_to(self, method: str) -> bool:
        return not self.key.startswith("methods.") or self.key.split(".")[1] == method


def parse_space(specs: list[str]) -> list[Param]:
    """``["train.lr=loguniform:1e-4:3e-3", "methods.mitp.tau=choice:0.05,0.1"]`` -> Params; a bad one is a
    ConfigError naming its key."""
    params = []
    for spec in specs:
        key, sep, rest = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--space", f"expected KEY=KIND:ARGS, got {spec!r}")
        kind, _, args = rest.partition(":")
        if kind not in KINDS:
            raise ConfigError(key, f"unknown distribution {kind!r}; use one of {', '.join(KINDS)}")
        if key in ("method", "seed", "data") or any(p.key == key for p in params):
            raise ConfigError(key, "cannot be searched, or is given twice")
        if kind == "choice":
            values = tuple(parse_value(v.strip()) for v in args.split(","))
            if not args.strip() or len(set(map(repr, values))) != len(values):
                raise ConfigError(key, f"choice needs distinct comma-separated values, got {args!r}")
            params.append(Param(key, kind, values))
            continue
        bounds = args.split(":")
        try:
            low, high = (int(b) if kind == "int" else float(b) for b in bounds)
        except ValueError:
            raise ConfigError(key, f"{kind} needs LOW:HIGH numbers, got {args!r}") from None
        if not low < high or (kind == "loguniform" and low <= 0):
            raise ConfigError(key, f"{kind} needs LOW < HIGH (and LOW > 0 for loguniform), got {args!r}")
        params.append(Param(key, kind, (low, high)))
    if not params:
        raise ConfigError("--space", "give at least one KEY=KIND:ARGS to search")
    return params


@dataclasses.dataclass
class Sweep:
    """What every worker of a sweep agrees on (they are started with the same command)."""

    config_path: str | None
    overrides: list[str]
    methods: list[str]
    space: list[Param]
    trials: int
    out: Path
    storage: str | None = None
    study: str = "mitp"
    seed: int = 0
    prune: bool = True
    heartbeat_s: int = HEARTBEAT_S
    grace_s: int = GRACE_S

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out / 'sweep.db').resolve()}"

    def open_study(self, method: str) -> optuna.Study:
        self.out.mkdir(parents=True, exist_ok=True)
        sqlite = self.storage_url().startswith("sqlite")  # several local workers wait for the file's lock
        storage = RDBStorage(
            self.storage_url(),
            heartbeat_interval=self.heartbeat_s,
            grace_period=self.grace_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            engine_kwargs={"connect_args": {"timeout": 120}} if sqlite else None,
        )
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
            if self.prune
            else optuna.pruners.NopPruner()
        )
        return optuna.create_study(
            study_name=f"{self.study}-{method}",
            storage=storage,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=self.seed),
            pruner=pruner,
            load_if_exists=True,
        )


def counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {state.name.lower(): states.count(state) for state in TrialState}


def failures(study: optuna.Study) -> int:
    """Failed trials that are not being tried again (a killed worker's trial is retried, not lost)."""
    trials = study.get_trials(deepcopy=False)
    retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials}
    # a retry records the first failed trial: a chain of retries names it, and its later failures are retries too
    return sum(
        1
        for t in trials
        if t.state == TrialState.FAIL
        and t.number not in retried
        and RetryHeartbeatStaleTrialCallback.retried_trial_number(t) is None
    )


def run_dir_of(sweep: Sweep, method: str, trial: optuna.trial.FrozenTrial | optuna.Trial) -> Path:
    """A trial's run directory; a retried trial (its worker was killed) resumes the original's."""
    if isinstance(trial, optuna.Trial):
        trial = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    number = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return sweep.out / method / f"trial-{trial.number if number is None else number}"


def objective(sweep: Sweep, method: str, console=None):
    def run_trial(trial: optuna.Trial) -> float:
        params = {p.key: p.suggest(trial) for p in sweep.space if p.applies_to(method)}
        run_dir = run_dir_of(sweep, method, trial)
        overrides = [*sweep.overrides, f"method={method}", *(f"{k}={json.dumps(v)}" for k, v in params.items())]
        config = load_run_config(sweep.config_path, overrides)
        resume = Run(run_dir).has_checkpoint("last")

        def report(epoch: int, score: float) -> None:
            trial.report(score, epoch)
            if trial.should_prune():
                _record(run_dir, trial.number, params, "pruned", epoch)
                raise optuna.TrialPruned(f"epoch {epoch}: val {score:.4f} is below the median of earlier trials")

        if console is not None:
            console.print(
                f"{method} trial {trial.number} ({run_dir}): " + ", ".join(f"{k}={v}" for k, v in params.items()),
                markup=False,
                highlight=False,
            )
        results = run_training(
            config,
            run_dir,
            resume=resume,
            console=None,
            test=False,
            command=f"mitp sweep (trial {trial.number})",
            on_validation=report,
        )
        score = results["val"][results["selection_metric"]]
        _record(run_dir, trial.number, params, "complete", results["epochs"], score)
        return score

    return run_trial


def _record(run_dir: Path, number: int, params: dict, state: str, epochs: int, value: float | None = None) -> None:
    write_json_atomic(
        run_dir / "trial.json",
        {"trial": number, "params": params, "state": state, "epochs_trained": epochs, "value": value},
    )


def work(sweep: Sweep, console=None) -> None:
    """One worker: trials of every method in turn until each study has ``trials`` finished ones."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for method in sweep.methods:
        study = sweep.open_study(method)
        while True:
            optuna.storages.fail_stale_trials(study)  # a killed worker's trial: failed, then retried
            n = counts(study)
            if n["complete"] + n["pruned"] >= sweep.trials:
                break
            if failures(study) >= sweep.trials:  # every setting fails: stop instead of trying forever
                if console is not None:
                    console.print(
                        f"{method}: {failures(study)} trials failed; stopping (see the run directories)", markup=False
                    )
                break
            if not n["waiting"] and n["complete"] + n["pruned"] + n["running"] >= sweep.trials:
                time.sleep(min(sweep.heartbeat_s, 5))  # running elsewhere, or stale: failed after the grace
                continue
            study.optimize(objective(sweep, method, console), n_trials=1, catch=(Exception,))


def sweep_command(sweep: Sweep, jobs: int = 1, console=None, worker_only: bool = False) -> list[dict]:
    """Run the sweep with ``jobs`` worker processes here (1: in this process), then report."""
    sweep.out.mkdir(parents=True, exist_ok=True)
    for method in sweep.methods:
        get_method(method)
        sweep.open_study(method)  # the storage's tables and studies exist before workers race to make them
    if jobs > 1:
        threads = max(1, available_cores() // jobs)
        logs = sweep.out / "logs"
        workers = [
            CliProcess(worker_argv(sweep), logs / f"worker-{i}.log", env={"OMP_NUM_THREADS": str(threads)})
            for i in range(jobs)
        ]
        if console is not None:
            console.print(f"{jobs} workers, {threads} thread(s) each; their logs in {logs}", markup=False)
        if any([worker.wait() != 0 for worker in workers]):  # a list: wait for every worker
            raise UserError(f"a sweep worker failed; see {logs}")
    else:
        work(sweep, console)
    return [] if worker_only else report(sweep, console)


def worker_argv(sweep: Sweep) -> list[str]:
    argv = [
        "sweep",
        "--worker",
        "--methods",
        ",".join(sweep.methods),
        "--trials",
        str(sweep.trials),
        "--out",
        str(sweep.out),
        "--study",
        sweep.study,
        "--seed",
        str(sweep.seed),
        "--storage",
        sweep.storage_url(),
    ]
    if sweep.config_path:
        argv += ["--config", str(sweep.config_path)]
    for override in sweep.overrides:
        argv += ["--set", override]
    for param in sweep.space:
        args = ":".join(map(str, param.args)) if param.kind != "choice" else ",".join(map(str, param.args))
        argv += ["--space", f"{param.key}={param.kind}:{args}"]
    return argv + ([] if sweep.prune else ["--no-prune"])


def report(sweep: Sweep, console=None) -> list[dict]:
    """One row per method: its best trial on validation, with test read now for that trial alone."""
    rows = []
    for method in sweep.methods:
        study = sweep.open_study(method)
        n = counts(study)
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        row = {"method": method, "trials": n, "best": None}
        if complete:
            best = max(complete, key=lambda t: t.value)
            run_dir = run_dir_of(sweep, method, best)
            loaded = load_run(run_dir)
            test = evaluate_dataset(loaded, split_dataset(loaded, "test"))["metrics"]
            row["best"] = {
                "trial": best.number,
                "params": best.params,
                "val": best.value,
                "test": test,
                "run_dir": str(run_dir),
                "metric": Run(run_dir).read_results()["selection_metric"],
            }
        rows.append(row)
    write_json_atomic(sweep.out / "sweep.json", rows)
    write_text_atomic(sweep.out / "sweep.md", markdown(rows, sweep))
    if console is not None:
        console.print(markdown(rows, sweep), markup=False, highlight=False)
    return rows


def markdown(rows: list[dict], sweep: Sweep) -> str:
    lines = [
        f"# Sweep `{sweep.study}`: {sweep.trials} trials per method",
        "",
        "Each method's best trial is chosen on validation; test is read for that trial alone.",
        "",
        "| method | complete / pruned / failed | best trial | its settings | val | test |",
        "|---|---|---:|---|---:|---:|",
    ]
    for row in rows:
        n, best = row["trials"], row["best"]
        done = f"{n['complete']} / {n['pruned']} / {n['fail']}"
        if best is None:
            lines.append(f"| {row['method']} | {done} | - | - | - | - |")
            continue
        settings = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        lines.append(
            f"| {row['method']} | {done} | {best['trial']} | {settings} | {best['metric']} "
            f"{best['val']:.4f} | {best['metric']} {best['test'][best['metric']]:.4f} |"
        )
    return "\n".join(lines) + "\n"


__all__ = ["Param", "Sweep", "counts", "parse_space", "report", "sweep_command", "work"]
