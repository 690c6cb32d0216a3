"""``mitp compare``: train several methods and seeds under one config, report them side by side."""

from __future__ import annotations

from pathlib import Path

DEFAULT_METHODS = "mitp,deep_prompts,pmf,late_fusion,full_finetune"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("compare", help="train methods side by side (compare.md/.json/.png)")
    p.add_argument("--config", required=True, help="YAML run config shared by every method")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default: {DEFAULT_METHODS})")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every run (repeatable)")
    p.add_argument("--out", default="runs/compare", help="output directory (default: runs/compare)")
    p.set_defaults(func=run)


def _list(text: str, kind, flag: str) -> list:
    from ..cli import UserError

    try:
        items = [kind(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise UserError(f"{flag}: {err}") from err
    if not items:
        raise UserError(f"{flag}: empty list")
    return items


def run(args) -> int:
    from rich.console import Console

    from ..compare import aggregate, run_comparison, write_reports
    from ..train.config import load_run_config

    config = load_run_config(args.config, args.overrides)
    methods = _list(args.methods, str, "--methods")
    seeds = _list(args.seeds, int, "--seeds")
    console = Console(soft_wrap=True)
    out = Path(args.out)
    runs = run_comparison(config, methods, seeds, out, console)
    rows = aggregate(runs, methods)
    write_reports(rows, runs, config, seeds, out)
    console.rule("comparison")
    console.print((out / "compare.md").read_text())
    console.print(f"wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}")
    return 1 if all(r["status"] == "failed" for r in rows) else 0
