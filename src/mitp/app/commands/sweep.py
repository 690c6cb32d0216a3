"""``mitp sweep``: an Optuna search over config keys, the same trial budget per method (mitp.app.analysis.sweep)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from ..extras import require
from ._args import add_methods, add_overrides, positive_int

HELP = "search config keys with Optuna (TPE, median pruning), the same budget for every method"
DESCRIPTION = (
    "One study per method; every trial is a run directory under OUT/<method>/; each method's "
    "best trial is chosen on validation and only its test split is read. Workers started with the "
    "same command (and a shared --storage) share the trials; a killed sweep resumes."
)


def add_arguments(p) -> None:
    p.add_argument("--config", help="YAML run config shared by every trial")
    add_overrides(p, "override a config key for every trial (repeatable)")
    add_methods(p)
    p.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="KEY=KIND:ARGS",
        help="a searched key: loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or choice:V1,V2,... "
        "(repeatable; methods.NAME.KEY applies to that method only)",
    )
    p.add_argument(
        "--trials",
        type=positive_int,
        default=20,
        help="finished (complete or pruned) trials per method, shared by all workers (default 20)",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="worker processes here, each with cores / N threads (default 1)",
    )
    p.add_argument(
        "--storage",
        help="Optuna storage URL (default: SQLite in OUT; a PostgreSQL URL lets workers on "
        "many machines share the studies)",
    )
    p.add_argument("--study", default="mitp", help="study name prefix (default: mitp)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    p.add_argument("--no-prune", action="store_true", help="train every trial to the end")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a process of --jobs: no report
    p.add_argument("--out", default="runs/sweep", help="output directory (default: runs/sweep)")


def run(args) -> int:
    require("sweep", "mitp sweep")
    # torch and optuna: loaded when the command runs (`mitp --help` stays fast)
    from mitp.methods import available_methods

    from ..analysis.sweep import Sweep, sweep_command
    from ..analysis.sweep_space import parse_space

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or available_methods()
    sweep = Sweep(
        args.config,
        args.overrides,
        methods,
        parse_space(args.space),
        args.trials,
        Path(args.out),
        storage=args.storage,
        study=args.study,
        seed=args.seed,
        prune=not args.no_prune,
    )
    # a worker is this very command with --worker: it checks and joins the same studies, and writes no report
    worker_argv = [*args.argv, "--worker"]
    rows = sweep_command(sweep, worker_argv, jobs=args.jobs, console=Console(soft_wrap=True), worker_only=args.worker)
    return 0 if args.worker or all(row["best"] for row in rows) else 1
