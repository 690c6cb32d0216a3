"""One training run from a config to a finished run directory: `mitp train`, every run of `mitp compare` (a
`mitp train` process) and every trial of `mitp sweep` go through :func:`train_run` and its guards."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mitp import runs
from mitp.atomic import write_json_atomic, write_text_atomic
from mitp.model_folder import write_model_config
from mitp.records import read_model_config
from mitp.runs import Run

from ..errors import UserError
from ..figures import curves, draw_if_possible
from ..outputs import check_run_output
from ..threads import oversubscribed, use_threads
from .config import RunConfig, load_run_config
from .loop import Trainer, TrainingDiverged
from .reports import summary_table
from .rundir import MetricsLog, RunDirError, clear_outputs, run_lock, write_marker


def _train(config: RunConfig, run_dir: Path, resume: bool, console, command: str | None, on_validation, test) -> dict:
    """Train (or resume) into ``run_dir`` and write config.yaml, results.json and curves.png; ``on_validation``
    and ``test`` as for the Trainer."""
    threads = use_threads(config.for_method(config.method).train.num_threads)  # before any torch work
    crowded = oversubscribed(threads)
    if crowded and console is not None and int(os.environ.get("RANK", "0")) == 0:
        console.print(crowded, markup=False, highlight=False)
    trainer = Trainer(config, run_dir, resume=resume, console=console, on_validation=on_validation, test=test)
    if trainer.main:
        write_marker(run_dir)
        write_text_atomic(run_dir / runs.CONFIG, trainer.config.to_yaml())
        if console is not None:
            console.print(f"run directory: {run_dir}", markup=False, highlight=False)
    trainer.accelerator.wait_for_everyone()
    results = trainer.fit()
    results["command"] = command  # how this run was made (or resumed), for the model card
    results["num_threads"] = threads
    if trainer.main:
        write_json_atomic(run_dir / runs.RESULTS, results)
        best = Run(run_dir).best_checkpoint()  # its config.json gains what only the end knows
        update = {"threshold": results.get("threshold"), "results": results}
        write_model_config(best, read_model_config(best).model_copy(update=update))
        records = MetricsLog(run_dir / runs.METRICS).records()
        say = print if console is None else (lambda text: console.print(text, markup=False, highlight=False))
        draw_if_possible(curves, records, results["selection_metric"], run_dir / runs.CURVES, note=say)
        if console is not None:
            console.print(summary_table(results))
            console.print(f"results: {run_dir / runs.RESULTS}", markup=False, highlight=False)
    return results


def train_run(
    config: RunConfig,
    run_dir,
    resume: bool = False,
    overwrite: bool = False,
    console=None,
    command: str | None = None,
    on_validation=None,
    test: bool = True,
) -> dict:
    """Train ``config`` into ``run_dir`` (a fresh directory, or with ``overwrite`` an earlier run), or with
    ``resume`` continue the run there (from its last checkpoint; from the beginning when it has none and
    has nothing finished to lose). The guards: a dataset or another folder is never a run, a resume never
    deletes results, and the run's lock is held throughout, so two trainings never share a directory.
    Every refusal is a UserError; ``on_validation`` and ``test`` as for the Trainer."""
    run_dir = Path(run_dir)
    # Under torchrun every process runs this; only the first checks, clears and locks the directory.
    main_process = int(os.environ.get("RANK", "0")) == 0
    check = (lambda: check_run_output(run_dir, overwrite)) if not resume else (lambda: _check_resumable(run_dir))
    try:
        if main_process:
            check()  # before the lock file is created in the directory
        with run_lock(run_dir, main_process):
            resuming = resume and Run(run_dir).has_checkpoint("last")
            if main_process:
                check()  # again, now that no one else can start
                if not resume:
                    clear_outputs(run_dir)
                elif not resuming:
                    if console is not None:
                        console.print(
                            f"{run_dir}: no checkpoint yet (the run stopped in its first epoch); "
                            "starting it from the beginning",
                            markup=False,
                            highlight=False,
                        )
                    clear_outputs(run_dir)
            return _train(config, run_dir, resuming, console, command, on_validation, test)
    except (RunDirError, TrainingDiverged) as err:
        raise UserError(str(err)) from err


def _check_resumable(run_dir: Path) -> None:
    """A resume never deletes results: without checkpoint/last there is nothing to resume from."""
    run = Run(run_dir)
    kept = [] if run.has_checkpoint("last") else run.finished_work()
    if kept:
        raise RunDirError(
            f"{run_dir}: cannot resume, checkpoint/last is missing, and starting over would delete "
            f"{' and '.join(kept)}; train it again with --config {run_dir / 'config.yaml'} --out {run_dir} "
            "--overwrite if that is meant"
        )


def train_command(
    config_path,
    overrides: list[str],
    out=None,
    resume=None,
    overwrite: bool = False,
    console=None,
    command: str | None = None,
) -> dict:
    """`mitp train`: a new run from a config (into ``out``, a fresh directory or, with ``overwrite``, an
    earlier run), or ``resume`` a run directory with its saved config; :func:`train_run` guards and trains."""
    if resume:
        if config_path or overrides or overwrite:
            raise UserError("--resume continues a run with its saved config.yaml; drop --config/--set/--overwrite")
        run_dir = Path(resume)
        if not Run(run_dir).is_run():
            raise UserError(f"{run_dir}: not a run directory (no run marker or config.yaml)")
        config = load_run_config(Run(run_dir).config_path)
    else:
        if not config_path and not overrides:
            raise UserError("give --config FILE (and/or --set data=... --set backbone=... --set method=...)")
        config = load_run_config(config_path, overrides)
        run_dir = _new_run_dir(out, config)
    return train_run(config, run_dir, resume=bool(resume), overwrite=overwrite, console=console, command=command)


def _new_run_dir(out, config: RunConfig) -> Path:
    if out:
        return Path(out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("--out is required when several processes train together")
    return Path("runs") / f"{config.method}-{time.strftime('%Y%m%d-%H%M%S')}"
