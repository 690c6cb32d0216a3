"""``mitp train``: train a method from a YAML run config, or resume a run."""

from __future__ import annotations

import shlex

from rich.console import Console

from ._args import add_overrides

HELP = "train a method (YAML config; resumable)"


def add_arguments(p) -> None:
    p.add_argument("--config", help="YAML run config (data, backbone, method, model:, train:, eval:)")
    add_overrides(p, "override any config key, e.g. --set train.lr=1e-4 (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/<method>-<time>)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint (from the beginning if it has none)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="--out holds an earlier run: delete its results and train again from the beginning",
    )


def run(args) -> int:
    from ..train.runner import train_command  # torch: loaded when the command runs (`mitp --help` stays fast)

    train_command(
        args.config,
        args.overrides,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        console=Console(soft_wrap=True),
        command="mitp " + shlex.join(getattr(args, "argv", [])),
    )
    return 0
