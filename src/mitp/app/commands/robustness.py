"""``mitp robustness RUN [RUN ...]``: the test metric as a modality goes missing, rate by rate.

Each rate evaluates the split with ``eval.missing`` set to that fraction of samples without their
image (``--modality image``), their text (``text``), or half each (``both``, the missing-aware
prompts protocol). The drop pattern is the runs' own ``eval.missing.seed`` (0 by default), so every
run loses the same samples, and a higher rate drops a superset of a lower one's. Writes
``robustness.json`` and ``robustness.png`` (one curve per run) into ``--out`` (default: the run
directory when there is one run).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ._args import positive_int

HELP = "a run's metric as the image or the text goes missing, on one plot for several runs"


def add_arguments(p) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument(
        "--modality",
        choices=("image", "text", "both"),
        default="image",
        help="what goes missing: the image, the text, or half of the samples each (default image)",
    )
    p.add_argument(
        "--rates",
        default="0,0.3,0.5,0.7,0.9",
        help="comma-separated fractions of the split's samples (default 0,0.3,0.5,0.7,0.9)",
    )
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--batch-size", type=positive_int, help="default: each run's eval batch size")
    p.add_argument("--out", help="where robustness.json and .png go (default: the run directory, for one run)")


def parse_rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--rates: expected comma-separated numbers, got {text!r}") from None
    if not rates or any(not 0 <= r <= 1 for r in rates):
        raise UserError(f"--rates: every rate must be in [0, 1], got {text!r}")
    return sorted(set(rates))


def run(args) -> int:
    # torch: loaded when the command runs (`mitp --help` stays fast)
    from ..analysis.robustness import write_report

    rates = parse_rates(args.rates)
    runs = [Path(r) for r in args.run_dirs]
    if args.out is None and len(runs) > 1:
        raise UserError("several runs go on one plot: give --out DIR")
    out = Path(args.out) if args.out else runs[0]
    table = write_report(runs, args.modality, rates, args.split, args.batch_size, out)
    print(table + f"wrote {out / 'robustness.json'}, {out / 'robustness.png'}, {out / 'robustness.md'}")
    return 0
