"""``mitp evaluate``: re-evaluate a run's best checkpoint on a split."""

from __future__ import annotations

import json

from ._args import positive_int

HELP = "evaluate a run's best checkpoint"


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--data", help="prepared dataset to evaluate on (default: the run's own)")
    p.add_argument("--batch-size", type=positive_int, help="default: the run's eval batch size")
    p.add_argument("--json", action="store_true", help="print only the metrics object as JSON")


def run(args) -> int:
    # torch: loaded when the command runs (`mitp --help` stays fast)
    from ..train.finished import evaluate_dataset, load_run, split_dataset

    loaded = load_run(args.run_dir, args.data)
    config = loaded.config
    result = evaluate_dataset(loaded, split_dataset(loaded, args.split), args.batch_size)
    if args.json:
        print(json.dumps(result["metrics"]))
        return 0
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
    print(
        f"{config.method} on {config.backbone}, {args.split} ({result['samples']} samples): {metrics}  "
        f"loss {result['loss']:.4f}"
    )
    return 0
