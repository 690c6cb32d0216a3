"""``mitp train``: train a method from a YAML run config, or resume a run."""

from __future__ import annotations

import os
import time
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a method (YAML config; resumable)")
    p.add_argument("--config", help="YAML run config (data, backbone, method, model:, train:, eval:)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.lr=1e-4 (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/<method>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.set_defaults(func=run)


def _run_dir(args, config) -> Path:
    if args.out:
        return Path(args.out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from ..cli import UserError

        raise UserError("--out is required when several processes train together")
    return Path("runs") / f"{config.method}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(args) -> int:
    from rich.console import Console

    from ..cli import UserError
    from ..train.config import load_run_config
    from ..train.runner import run_training

    if args.resume:
        if args.config or args.overrides:
            raise UserError("--resume continues a run with its saved config.yaml; drop --config/--set")
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{run_dir}: not a run directory (no config.yaml)")
        config = load_run_config(run_dir / "config.yaml")
    else:
        if not args.config and not args.overrides:
            raise UserError("give --config FILE (and/or --set data=... --set backbone=... --set method=...)")
        config = load_run_config(args.config, args.overrides)
        run_dir = _run_dir(args, config)
        if (run_dir / "config.yaml").exists():
            raise UserError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    run_training(config, run_dir, resume=bool(args.resume), console=Console(soft_wrap=True))
    return 0
