"""``mitp compare``: train several methods (over seeds and a grid of settings) under one config and report them
side by side.

The plan (every run, resolved and validated before anything trains) is :mod:`.compare_plan`; the report
(each method's setting chosen on validation, its table and figure) is :mod:`.compare_report`. Here the runs
are trained: each is a ``mitp train`` in a fresh process (``app/launch.py``), with that command's guards on
its run directory, so a crash cannot take the others down. Finished runs are reused and interrupted ones
resumed, but only when their resolved config is the one asked for.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

from rich.markup import escape

from mitp.atomic import write_text_atomic
from mitp.methods import available_methods
from mitp.runs import Run

from ..launch import CliProcess, run_at_most
from ..outputs import check_outputs
from ..threads import available_cores
from ..train.config import RunConfig, load_run_config
from .compare_plan import GridPoint, PlannedRun, check_existing, parse_grid, plan
from .compare_report import REPORT_FILES, aggregate, write_reports


class RunFailed(RuntimeError):
    pass


def _log_of(out: Path, run: PlannedRun) -> Path:
    return Path(out) / "logs" / f"{run.config_path.stem}.log"


def train_arguments(run: PlannedRun) -> list[str] | None:
    """The ``mitp train`` arguments that finish ``run.run_dir``: None when it finished earlier (reused), a
    resume when it has a checkpoint, else a new run from its config (written under ``OUT/configs``)."""
    existing = Run(run.run_dir)
    if existing.results_path.is_file():
        return None
    if existing.checkpoint("last").exists():
        return ["train", "--resume", str(run.run_dir)]
    run.config_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run.config_path, run.config.to_yaml())
    shutil.rmtree(run.run_dir, ignore_errors=True)  # a run that died before its first checkpoint starts over
    return ["train", "--config", str(run.config_path), "--out", str(run.run_dir)]


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_comparison(
    config: RunConfig,
    methods: list[str],
    seeds: list[int],
    out: Path,
    grid=None,
    force: bool = False,
    console=None,
    jobs: int = 1,
    devices: list[str] | None = None,
) -> list[dict]:
    """Train every planned run; a failing run is recorded with its error and the others go on.

    With ``jobs`` > 1, that many runs train at once, each with its share of the cores
    (``train.num_threads`` = cores / jobs) and, given ``devices``, a device of its own. Every run's output
    goes to ``out/logs/``, and also to stdout when runs go one at a time. The records come back in the
    plan's order whatever finished first."""
    runs = plan(config, methods, seeds, grid or [GridPoint()], out)
    check_existing(runs, force, console)
    threads = None
    if jobs > 1:
        threads = max(1, available_cores() // jobs)
        runs = [
            dataclasses.replace(
                run,
                config=dataclasses.replace(
                    run.config, train=dataclasses.replace(run.config.train, num_threads=threads)
                ),
            )
            for run in runs
        ]
        if console is not None:
            console.print(
                f"{len(runs)} runs, {jobs} at a time, {threads} thread(s) each"
                + (f", devices {', '.join(devices)}" if devices else "")
                + f"; their logs in {out / 'logs'}",
                markup=False,
                highlight=False,
            )
    one_at_a_time = jobs <= 1
    records = [
        {"method": run.method, "setting": run.point.as_dict(), "seed": run.seed, "run_dir": str(run.run_dir)}
        for run in runs
    ]
    names = [
        escape(
            f"[{i}/{len(runs)}] {run.method}"
            + (f", {run.point.label()}" if run.point.values else "")
            + f", seed {run.seed}"
        )
        for i, run in enumerate(runs, 1)
    ]

    def say(text: str) -> None:
        if console is not None:
            console.print(text)

    def failed(i: int, reason: str) -> None:
        say(f"[red]{names[i]} failed: {escape(reason)}[/red]")
        records[i]["error"] = reason

    def start(i: int, slot: int) -> CliProcess | None:
        run = runs[i]
        if console is not None:
            console.rule(names[i]) if one_at_a_time else console.print(f"{names[i]}: started")
        try:
            argv = train_arguments(run)
        except OSError as err:  # its config or directory cannot be written: this run fails, the others go on
            failed(i, f"{type(err).__name__}: {err}")
            return None
        if argv is None:
            say(f"[dim]{escape(str(run.run_dir))}: finished earlier with the same config, reusing its results[/dim]")
            finish(i)
            return None
        env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
        if devices and not one_at_a_time:  # one at a time, a run sees the devices this process sees
            env["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
        return CliProcess(argv, _log_of(out, run), env)

    def finish(i: int, process: CliProcess | None = None) -> None:
        if process is not None and process.process.exitcode != 0:
            error = RunFailed(f"mitp train exited with {process.process.exitcode}: {process.failure()}")
            failed(i, f"{type(error).__name__}: {error}")
            return
        try:
            records[i]["results"] = Run(runs[i].run_dir).read_results()
        except Exception as err:  # a results file that cannot be read fails this run, not the comparison
            failed(i, f"{type(err).__name__}: {err}")
            return
        if not one_at_a_time:
            metric = records[i]["results"]["selection_metric"]
            say(f"{names[i]}: finished, val {metric} {records[i]['results']['val'][metric]:.4f}")

    run_at_most(
        max(1, jobs),
        [lambda slot, i=i: start(i, slot) for i in range(len(runs))],
        on_end=finish,
        follow=_write_stdout if one_at_a_time else None,
    )
    return records


def compare(
    config_path,
    overrides: list[str],
    methods: list[str] | None,
    seeds: list[int],
    grid: list[str],
    out: Path,
    force: bool = False,
    console=None,
    jobs: int = 1,
    devices: list[str] | None = None,
) -> list[dict]:
    """`mitp compare`: plan, train or reuse every run, choose each method's setting on val, write and print the
    reports; returns the runs (a failed one holds its ``error``). ``methods`` None: every registered method."""
    out = Path(out)
    check_outputs(
        folders=[out], files=[out / name for name in REPORT_FILES], inputs=[config_path], creates="comparison"
    )
    config = load_run_config(config_path, overrides)
    methods = methods or available_methods()
    points = parse_grid(grid)
    runs = run_comparison(config, methods, seeds, out, points, force=force, console=console, jobs=jobs, devices=devices)
    rows = aggregate(runs, methods)
    write_reports(rows, runs, config, seeds, out, points)
    if console is not None:
        console.rule("comparison")
        console.print((out / "compare.md").read_text(), markup=False, highlight=False)
        console.print(f"wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}", markup=False)
        failures = [r for r in runs if "error" in r]
        if failures:
            console.print(f"[red]{len(failures)} of {len(runs)} run(s) failed[/red]")
    return runs


__all__ = ["RunFailed", "compare", "run_comparison", "train_arguments"]
