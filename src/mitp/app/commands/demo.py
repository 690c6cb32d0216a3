"""``mitp demo``: build MITP on a tiny CLIP and train it briefly on a generated fusion task."""

from __future__ import annotations

from ._args import non_negative_int, positive_int

HELP = "build MITP on tiny-clip and train it on generated image-text batches"


def add_arguments(p) -> None:
    p.add_argument("--backbone", default="tiny-clip", help="backbone spec (default: tiny-clip)")
    p.add_argument("--steps", type=positive_int, default=60, help="optimizer steps (default: 60)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=non_negative_int, default=0)


def run(args) -> int:
    from ..demo import run_demo  # torch: loaded when the command runs (`mitp --help` stays fast)

    run_demo(args.backbone, args.steps, args.batch_size, args.lr, args.seed)
    return 0
