"""``mitp compare``: train methods over seeds and a grid, choose each one's setting on val, report."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from ..errors import UserError
from ._args import add_methods, add_overrides, positive_int

HELP = "train methods side by side, settings chosen on val (compare.md/.json/.png)"
DESCRIPTION = (
    "Train every method (and seed, and grid point) under one config. `model:` keys go to every "
    "method; keys for one method go under `methods: {NAME: {...}}`. With --grid, each method's "
    "setting is chosen on validation and test is reported for that setting only. Exit status 1 "
    "when any run failed."
)


def add_arguments(p) -> None:
    p.add_argument("--config", required=True, help="YAML run config shared by every method")
    add_methods(p)
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    add_overrides(p, "override a config key for every run (repeatable)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="values to try for a config key, e.g. train.lr=1e-4,3e-4,1e-3,3e-3 (repeatable: the "
        "cartesian product); every method gets the same grid",
    )
    p.add_argument(
        "--missing",
        metavar="MODALITY=RATE,...",
        help="train and evaluate every method with these simulated missing modalities, e.g. "
        "image=0.35,text=0.35 (train.missing and eval.missing; keys image, text, both, seed)",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="runs training at once, each with cores / N threads and its own device when --devices "
        "lists several (default 1); their output goes to OUT/logs/",
    )
    p.add_argument(
        "--devices",
        help="comma-separated CUDA devices handed to the jobs in turn (default: $CUDA_VISIBLE_DEVICES when set)",
    )
    p.add_argument(
        "--force", action="store_true", help="train again runs under --out whose config differs from the one asked for"
    )
    p.add_argument("--out", default="runs/compare", help="output directory (default: runs/compare)")


def _list(text: str, kind, flag: str) -> list:
    try:
        items = [kind(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise UserError(f"{flag}: {err}") from err
    if not items:
        raise UserError(f"{flag}: empty list")
    return items


def missing_overrides(spec: str | None) -> list[str]:
    """``image=0.35,text=0.35`` -> the same keys under train.missing and eval.missing, as --set pairs."""
    if not spec:
        return []
    pairs = []
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in ("image", "text", "both", "seed"):
            raise UserError(f"--missing: expected image=RATE, text=RATE, both=RATE or seed=N items, got {item!r}")
        pairs += [f"{section}.missing.{key.strip()}={value.strip()}" for section in ("train", "eval")]
    return pairs


def run(args) -> int:
    from ..analysis.compare import compare  # torch: loaded when the command runs (`mitp --help` stays fast)

    methods = _list(args.methods, str, "--methods") if args.methods else None
    devices = args.devices or os.environ.get("CUDA_VISIBLE_DEVICES")
    runs = compare(
        args.config,
        args.overrides + missing_overrides(args.missing),
        methods,
        _list(args.seeds, int, "--seeds"),
        args.grid,
        Path(args.out),
        force=args.force,
        console=Console(soft_wrap=True),
        jobs=args.jobs,
        devices=[d.strip() for d in devices.split(",") if d.strip()] if devices else None,
    )
    return 1 if any("error" in r for r in runs) else 0
