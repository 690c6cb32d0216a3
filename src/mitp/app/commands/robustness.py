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


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("robustness", help="a run's metric as the image or the text goes missing, on one plot "
                                                 "for several runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--modality", choices=("image", "text", "both"), default="image",
                   help="what goes missing: the image, the text, or half of the samples each (default image)")
    p.add_argument("--rates", default="0,0.3,0.5,0.7,0.9", help="comma-separated fractions of the split's samples "
                                                                 "(default 0,0.3,0.5,0.7,0.9)")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--batch-size", type=int, help="default: each run's eval batch size")
    p.add_argument("--out", help="where robustness.json and .png go (default: the run directory, for one run)")
    p.set_defaults(func=run)


def parse_rates(text: str) -> list[float]:
    from ..cli import UserError

    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--rates: expected comma-separated numbers, got {text!r}") from None
    if not rates or any(not 0 <= r <= 1 for r in rates):
        raise UserError(f"--rates: every rate must be in [0, 1], got {text!r}")
    return sorted(set(rates))


def missing_at(modality: str, rate: float, seed: int):
    from mitp.data.missing import EvalMissingConfig

    if modality == "both":
        return EvalMissingConfig(image=rate / 2, text=rate / 2, seed=seed)
    return EvalMissingConfig(**{modality: rate}, seed=seed)


def curve_label(run_dir: Path, method: str, missing_aware) -> str:
    aware = {True: ", missing-aware", False: ""}.get(missing_aware, "")
    return f"{method}{aware} ({run_dir.name})"


def robustness(run_dir: Path, modality: str, rates: list[float], split: str, batch_size: int | None, progress) -> dict:
    from ..train.inference import evaluate_dataset, load_run, split_dataset

    loaded = load_run(run_dir)
    config = loaded.config
    metric, values, samples = None, [], None
    for rate in rates:
        dataset = split_dataset(loaded, split, missing_at(modality, rate, config.eval.missing.seed))
        result = evaluate_dataset(loaded, dataset, batch_size)
        # single-label: accuracy; multi-label: the first metric the task reports
        metric = "accuracy" if "accuracy" in result["metrics"] else next(iter(result["metrics"]))
        values.append(result["metrics"][metric])
        samples = result["samples"]
        progress(f"{run_dir}: {modality} missing at {rate:.0%}: {metric} {values[-1]:.4f}")
    return {"run": str(run_dir), "method": config.method, "missing_aware": config.model.get("missing_aware"),
            "label": curve_label(Path(run_dir), config.method, config.model.get("missing_aware")),
            "trained_with_missing": config.train.missing.to_dict(), "metric": metric, "values": values,
            "samples": samples}


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rates = [100 * r for r in report["rates"]]
    for curve in report["runs"]:
        ax.plot(rates, curve["values"], marker="o", label=curve["label"])
    what = {"image": "images", "text": "texts", "both": "images or texts (half each)"}[report["modality"]]
    ax.set_xlabel(f"{report['split']} samples without their {what} (%)")
    ax.set_ylabel(report["runs"][0]["metric"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(args) -> int:
    from ..cli import UserError
    from ..train.reports import write_json_atomic

    rates = parse_rates(args.rates)
    runs = [Path(r) for r in args.run_dirs]
    if args.out is None and len(runs) > 1:
        raise UserError("several runs go on one plot: give --out DIR")
    out = Path(args.out) if args.out else runs[0]
    out.mkdir(parents=True, exist_ok=True)
    curves = [robustness(r, args.modality, rates, args.split, args.batch_size, print) for r in runs]
    report = {"modality": args.modality, "split": args.split, "rates": rates, "runs": curves}
    write_json_atomic(out / "robustness.json", report)
    plot(report, out / "robustness.png")
    print(f"wrote {out / 'robustness.json'}, {out / 'robustness.png'}")
    return 0


__all__ = ["missing_at", "parse_rates", "robustness"]