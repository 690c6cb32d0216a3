"""``mitp params``: trainable and total parameter counts of a method on a backbone."""

from __future__ import annotations

import json

from mitp.configuration import parse_overrides

from ._args import add_overrides, positive_int

HELP = "count trainable and total parameters, by component"


def add_arguments(p) -> None:
    p.add_argument("--backbone", default="tiny-clip", help="backbone spec (default: tiny-clip)")
    p.add_argument("--method", default="mitp", help="registered method name (default: mitp)")
    p.add_argument("--num-classes", type=positive_int, default=2, help="number of classes of the head")
    add_overrides(p, "override a method config key, e.g. --set prompt_length=16 (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args) -> int:
    # torch: loaded when the command runs (`mitp --help` stays fast)
    from mitp.params import count_parameters, render_breakdown

    config, breakdown = count_parameters(args.method, args.backbone, args.num_classes, parse_overrides(args.overrides))
    if args.json:
        print(json.dumps({"method": config.method, "backbone": args.backbone, **breakdown, "config": config.to_dict()}))
        return 0
    from rich.console import Console

    console = Console()
    console.print(render_breakdown(breakdown, title=f"{config.method} on {args.backbone}"))
    console.print(
        f"trainable: {breakdown['trainable_params']:,} of {breakdown['total_params']:,} "
        f"({breakdown['trainable_percent']:.3f}%)"
    )
    return 0
