"""``mitp train``: train a method from a YAML run config, or resume a run."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from ..errors import UserError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a method (YAML config; resumable)")
    p.add_argument("--config", help="YAML run config (data, backbone, method, model:, train:, eval:)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.lr=1e-4 (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/<method>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint (from the beginning if it has none)")
    p.add_argument("--overwrite", action="store_true",
                   help="--out holds an earlier run: delete its results and train again from the beginning")
    p.set_defaults(func=run)


def _run_dir(args, config) -> Path:
    if args.out:
        return Path(args.out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("--out is required when several processes train together")
    return Path("runs") / f"{config.method}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(args) -> int:
    from rich.console import Console

    from ..train.config import load_run_config
    from mitp.runs import Run

    from ..train.rundir import RunDirError, check_new_run_dir, clear_outputs, run_lock
    from ..train.loop import TrainingDiverged
    from ..train.runner import run_training

    console = Console(soft_wrap=True)
    # Under torchrun every process runs this; only the first checks, clears and locks the directory.
    main_process = int(os.environ.get("RANK", "0")) == 0
    if args.resume:
        if args.config or args.overrides or args.overwrite:
            raise UserError("--resume continues a run with its saved config.yaml; drop --config/--set/--overwrite")
        run_dir = Path(args.resume)
        if not Run(run_dir).is_run():
            raise UserError(f"{run_dir}: not a run directory (no run marker or config.yaml)")
        config = load_run_config(Run(run_dir).config_path)
    else:
        if not args.config and not args.overrides:
            raise UserError("give --config FILE (and/or --set data=... --set backbone=... --set method=...)")
        config = load_run_config(args.config, args.overrides)
        run_dir = _run_dir(args, config)
    try:
        if main_process and not args.resume:
            check_new_run_dir(run_dir, args.overwrite)  # before the lock file is created in it
        with run_lock(run_dir, main_process):
            resume = bool(args.resume) and Run(run_dir).has_checkpoint("last")
            if main_process:
                if not args.resume:
                    check_new_run_dir(run_dir, args.overwrite)  # again, now that no one else can start
                    clear_outputs(run_dir)
                elif not resume:
                    kept = Run(run_dir).finished_work()
                    if kept:  # a resume never deletes results: without checkpoint/last there is nothing to resume
                        raise RunDirError(f"{run_dir}: cannot resume, checkpoint/last is missing, and starting over "
                                          f"would delete {' and '.join(kept)}; train it again with --config "
                                          f"{run_dir / 'config.yaml'} --out {run_dir} --overwrite if that is meant")
                    console.print(f"{run_dir}: no checkpoint yet (the run stopped in its first epoch); "
                                  "starting it from the beginning", markup=False, highlight=False)
                    clear_outputs(run_dir)
            run_training(config, run_dir, resume=resume, console=console,
                         command="mitp " + shlex.join(getattr(args, "argv", [])))
    except (RunDirError, TrainingDiverged) as err:
        raise UserError(str(err)) from err
    return 0
