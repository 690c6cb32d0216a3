"""``mitp significance --a RUN [RUN ...] --b RUN [RUN ...]``: a paired bootstrap of A's metrics against B's.

Both sides' runs (typically one per seed) are scored on one split of the same dataset; each side is
the mean over its runs, and the split's samples are resampled with both sides paired on every draw.
Prints a markdown table (A, B, A - B, its interval, the fraction of resamples in which A does not
beat B, the per-run values); ``--json`` prints the whole report instead.
"""

from __future__ import annotations

import json
import sys

from ._args import positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "significance", help="paired bootstrap: does method A beat method B by more than the split's size resolves?"
    )
    p.add_argument("--a", nargs="+", required=True, metavar="RUN_DIR", help="method A's runs (e.g. its seeds)")
    p.add_argument("--b", nargs="+", required=True, metavar="RUN_DIR", help="method B's runs")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--resamples", type=positive_int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="the resampling seed (default 0)")
    p.add_argument("--batch-size", type=positive_int, help="default: each run's eval batch size")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    # torch: loaded when the command runs (`mitp --help` stays fast)
    from ..analysis.significance import compare_runs, format_report

    report = compare_runs(
        args.a,
        args.b,
        args.split,
        args.resamples,
        args.seed,
        args.batch_size,
        progress=lambda message: print(message, file=sys.stderr),
    )
    print(json.dumps(report, indent=1) if args.json else format_report(report, args.split).rstrip("\n"))
    return 0
