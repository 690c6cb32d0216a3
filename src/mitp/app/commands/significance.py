"""``mitp significance --a RUN [RUN ...] --b RUN [RUN ...]``: a paired bootstrap of A's metrics against B's.

Both sides' runs (one per seed) are scored on one split of the same dataset; each side is the mean over
its runs. By default each resample draws each side's runs with replacement and then the split's samples
(shared by both sides), so the interval counts seed variance and sample variance; the samples-only
interval (the runs fixed) is printed beside it. Prints a markdown table (A, B, A - B, both intervals,
the fraction of resamples in which A does not beat B, the per-run values); ``--json`` prints the whole
report instead.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError
from ._args import positive_float, positive_int

DESCRIPTION = """\
Does method A beat method B? Both sides' runs (one per seed) are scored on one split; each side is
the mean over its runs, and A - B is bootstrapped with both sides paired on the same samples.

Two intervals of A - B (95%, percentile), each with P(A <= B), the fraction of resamples in which A
does not beat B:
  seeds + samples (default): each resample draws each side's runs with replacement, then the split's
    samples. Answers: does A beat B by more than other seeds and another split of this size could
    change? Needs at least 2 runs a side; the table says how many seeds it rests on. Few seeds make it
    coarse (3 runs have only 10 distinct draws a side): --target-width estimates the seeds needed.
  samples only (--samples-only, or the column beside): the runs fixed, only the split's samples
    resampled. Answers: do these very runs differ by more than the split's size resolves? Seed
    variance is not in it.

Every run is scored with its own eval.missing unless --missing names one condition for all runs,
scored as `mitp robustness` scores that rate (same drop pattern for every run)."""


HELP = "paired bootstrap: does method A beat method B by more than seeds and the split's size resolve?"


def add_arguments(p) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # DESCRIPTION's layout is kept
    p.add_argument("--a", nargs="+", required=True, metavar="RUN_DIR", help="method A's runs (one per seed, each once)")
    p.add_argument("--b", nargs="+", required=True, metavar="RUN_DIR", help="method B's runs (one per seed, each once)")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument(
        "--samples-only",
        action="store_true",
        help="resample only the split's samples, not the runs: counts sample variance only, not seed "
        "variance (for a side with one run)",
    )
    p.add_argument(
        "--missing",
        metavar="CONDITION",
        help="score every run under one missing-modality condition: image=RATE, text=RATE, both=RATE (half "
        "each, as `mitp robustness --modality both`) or none (complete data); default: each run's own "
        "eval.missing",
    )
    p.add_argument(
        "--missing-seed",
        type=int,
        metavar="N",
        help="with --missing: which samples lose what (default: the runs' eval.missing.seed, which must agree)",
    )
    p.add_argument(
        "--target-width",
        type=positive_float,
        metavar="W",
        help="also estimate, per metric, the seeds a side for a seeds + samples interval W wide (e.g. 0.02)",
    )
    p.add_argument("--resamples", type=positive_int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="the resampling seed (default 0)")
    p.add_argument("--batch-size", type=positive_int, help="default: each run's eval batch size")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    # torch: loaded when the command runs (`mitp --help` stays fast)
    from ..analysis.significance import compare_runs, format_report, parse_missing

    if args.missing_seed is not None and args.missing is None:
        raise UserError("--missing-seed chooses the drop pattern of --missing: give --missing too")
    if args.target_width is not None and args.samples_only:
        raise UserError("--target-width estimates seeds for the seeds + samples interval: drop --samples-only")
    try:
        missing = None if args.missing is None else parse_missing(args.missing)
    except ValueError as err:
        raise UserError(f"--missing: {err}") from None
    report = compare_runs(
        args.a,
        args.b,
        args.split,
        args.resamples,
        args.seed,
        args.batch_size,
        progress=lambda message: print(message, file=sys.stderr),
        resample_runs=not args.samples_only,
        missing=missing,
        drop_seed=args.missing_seed,
        target_width=args.target_width,
    )
    print(json.dumps(report, indent=1) if args.json else format_report(report, args.split).rstrip("\n"))
    return 0
