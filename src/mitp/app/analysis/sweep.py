"""`mitp sweep`: a search over any config keys with Optuna, the same trial budget for every method.

The studies (storage, sampler, what each searches) are :mod:`.sweep_study`, the space :mod:`.sweep_space`.
Here the trials are trained and reported. A median pruner, fed each epoch's validation selection metric,
stops trials that fall behind. Every trial is a normal run directory, ``OUT/<method>/trial-<n>``, trained
through the guards of ``mitp train`` (its lock included) without reading its test split; test is read
once, for each method's best trial, chosen on validation. The command checks everything first, then starts
its workers (the same command with ``--worker``) through the launcher, ``app/launch.py``. A killed worker's
trial is tried again with the same parameters in the same run directory, resumed from its last checkpoint,
so no trial is trained twice and none is lost; an interrupted (Ctrl-C) trial is tried again the same way.
A trial that fails (an error in its training) is recorded as failed and the sweep goes on: it is named in one
line with the reason, its traceback goes to ``OUT/logs/failed-trials.log``.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from mitp.atomic import write_json_atomic, write_text_atomic
from mitp.errors import MitpError
from mitp.markdown import table
from mitp.runs import Run

from ..errors import UserError
from ..figures import draw_if_possible
from ..figures import sweep as sweep_figure
from ..launch import CliProcess, run_at_most
from ..outputs import check_outputs
from ..threads import available_cores
from ..train.finished import evaluate_dataset, load_run, split_dataset
from ..train.runner import train_run
from .compare_report import significance_section
from .sweep_space import method_config
from .sweep_study import MAX_RETRY, Sweep, counts, failures, frozen, prepare, run_dir_of

REPORT_FILES = ("sweep.json", "sweep.md", "sweep.png")
METRIC = "selection_metric"  # a complete trial's user attribute: the metric its value is
FAILURES_LOG = Path("logs") / "failed-trials.log"  # under OUT: the traceback of every failed trial


def objective(sweep: Sweep, method: str, console=None):
    def run_trial(trial: optuna.Trial) -> float:
        params = {p.key: p.suggest(trial) for p in sweep.space if p.applies_to(method)}
        run_dir = run_dir_of(sweep, method, trial)
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen(trial)) is not None
        config = method_config(sweep.config_path, sweep.overrides, method, params)

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
        try:
            results = train_run(
                config,
                run_dir,
                resume=retried and Run(run_dir).is_run(),
                test=False,
                command=f"mitp sweep (trial {trial.number})",
                on_validation=report,
            )
        except KeyboardInterrupt:  # failed by Optuna on the way out; the next worker tries it again, resumed
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(trial.study, frozen(trial))
            raise
        except optuna.TrialPruned:
            raise
        except Exception as err:  # failed by Optuna, which goes on with the next trial (and logs nothing of it)
            _report_failure(sweep, method, trial.number, err, console)
            raise
        score = results["val"][results["selection_metric"]]
        trial.set_user_attr(METRIC, results["selection_metric"])  # for a report on a machine without the run
        _record(run_dir, trial.number, params, "complete", results["epochs"], score)
        return score

    return run_trial


def _report_failure(sweep: Sweep, method: str, number: int, err: Exception, console=None) -> None:
    """One line naming a failed trial and the reason; its traceback appended to ``OUT/logs/failed-trials.log``."""
    log = Path(sweep.out) / FAILURES_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    text = f"{method} trial {number}:\n" + "".join(traceback.format_exception(err)) + "\n"
    with open(log, "ab", buffering=0) as file:  # one write: workers append to the same log
        file.write(text.encode())
    line = f"{method} trial {number} failed: {failure_reason(err)} (traceback in {log})"
    if console is None:
        print(line)
    else:
        console.print(line, markup=False, highlight=False)


def failure_reason(err: Exception) -> str:
    """An error's message in one line (its first), after its kind unless it is one of mitp's own errors."""
    message = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    if isinstance(err, (UserError, MitpError)) and message:
        return message
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def _record(run_dir: Path, number: int, params: dict, state: str, epochs: int, value: float | None = None) -> None:
    write_json_atomic(
        run_dir / "trial.json",
        {"trial": number, "params": params, "state": state, "epochs_trained": epochs, "value": value},
    )


def work(sweep: Sweep, console=None) -> None:
    """One worker: trials of every method in turn until each study has ``trials`` finished ones."""
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
                        f"{method}: {failures(study)} trials failed; stopping (their tracebacks in "
                        f"{Path(sweep.out) / FAILURES_LOG})",
                        markup=False,
                    )
                break
            if not n["waiting"] and n["complete"] + n["pruned"] + n["running"] >= sweep.trials:
                time.sleep(min(sweep.heartbeat_s, 5))  # running elsewhere, or stale: failed after the grace
                continue
            study.optimize(objective(sweep, method, console), n_trials=1, catch=(Exception,))


def sweep_command(
    sweep: Sweep, worker_argv: list[str], jobs: int = 1, console=None, worker_only: bool = False
) -> list[dict]:
    """`mitp sweep`: check everything (:func:`prepare`), then start ``jobs`` workers (``mitp WORKER_ARGV``, the
    same command with ``--worker``) through the launcher and report once they end. ``worker_only``: this
    process is a worker (:func:`work`) and writes no report."""
    out = Path(sweep.out)
    check_outputs(
        folders=[out], files=[out / name for name in REPORT_FILES], inputs=[sweep.config_path], creates="sweep"
    )
    url = sweep.storage_url()
    if url.startswith("sqlite:///"):  # a database file is written too: never over a run's or a dataset's files
        check_outputs(files=[url.removeprefix("sqlite:///")], flag="--storage", own_runs=[])
    prepare(sweep)
    if worker_only:
        work(sweep, console)
        return []
    logs = out / "logs"
    env = {"OMP_NUM_THREADS": str(max(1, available_cores() // jobs))} if jobs > 1 else {}
    if console is not None and jobs > 1:
        console.print(f"{jobs} workers, {env['OMP_NUM_THREADS']} thread(s) each; their logs in {logs}", markup=False)
    workers: list[CliProcess] = []

    def start(i: int) -> CliProcess:
        workers.append(CliProcess(worker_argv, logs / f"worker-{i}.log", env))
        return workers[-1]

    codes = run_at_most(
        jobs, [lambda slot, i=i: start(i) for i in range(jobs)], follow=_write_stdout if jobs == 1 else None
    )
    failed = [f"worker {i}: {worker.failure()}" for i, (code, worker) in enumerate(zip(codes, workers)) if code != 0]
    if failed:
        raise UserError(f"a sweep worker failed ({'; '.join(failed)}); see {logs}")
    return report(sweep, console)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


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
            test = None
            if Run(run_dir).is_run():  # a worker on another machine without a shared run directory trained it
                loaded = load_run(run_dir)
                test = evaluate_dataset(loaded, split_dataset(loaded, "test"))["metrics"]
            row["best"] = {
                "trial": best.number,
                "params": best.params,
                "val": best.value,
                "test": test,
                "run_dir": str(run_dir),
                "metric": best.user_attrs.get(METRIC) or Run(run_dir).read_results()["selection_metric"],
            }
        rows.append(row)
    write_json_atomic(Path(sweep.out) / "sweep.json", rows)
    write_text_atomic(Path(sweep.out) / "sweep.md", markdown(rows, sweep))
    trials = {method: trial_points(sweep.open_study(method)) for method in sweep.methods}
    draw_if_possible(
        sweep_figure, trials, Path(sweep.out) / "sweep.png", note=print if console is None else console.print
    )
    if console is not None:
        console.print(markdown(rows, sweep), markup=False, highlight=False)
    return rows


def trial_points(study) -> list[dict]:
    """Every finished trial's settings and value (a pruned one's last reported validation value)."""
    points = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.COMPLETE:
            points.append({"params": trial.params, "value": trial.value, "state": "complete"})
        elif trial.state == TrialState.PRUNED and trial.intermediate_values:
            last = trial.intermediate_values[max(trial.intermediate_values)]
            points.append({"params": trial.params, "value": last, "state": "pruned"})
    return points


def markdown(rows: list[dict], sweep: Sweep) -> str:
    body = []
    for row in rows:
        n, best = row["trials"], row["best"]
        finished = f"{n['complete']} / {n['pruned']} / {n['fail']}"
        if best is None:
            body.append([row["method"], finished, "-", "-", "-", "-"])
            continue
        settings = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        body.append(
            [
                row["method"],
                finished,
                best["trial"],
                settings,
                f"{best['metric']} {best['val']:.4f}",
                f"{best['metric']} {best['test'][best['metric']]:.4f}" if best["test"] else "- (not on this machine)",
            ]
        )
    return (
        f"# Sweep `{sweep.study}`: {sweep.trials} trials per method\n\n"
        "Each method's best trial is chosen on validation; test is read for that trial alone (from its run "
        "directory, where this machine has it).\n\n"
        + table(["method", "complete / pruned / failed", "best trial", "its settings", "val", "test"], body, "llrlrr")
        + significance_section(
            [
                {**row, "run_dirs": [row["best"]["run_dir"]], "val": {"value": {"mean": row["best"]["val"]}}}
                for row in rows
                if row["best"]
            ],
            "value",
        )
    )


__all__ = [
    "FAILURES_LOG",
    "REPORT_FILES",
    "failure_reason",
    "markdown",
    "objective",
    "report",
    "sweep_command",
    "work",
]
