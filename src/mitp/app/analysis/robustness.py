"""Robustness to a missing modality: a run's test metric as the image or the text goes missing, rate by
rate, one curve per run and one band per group of runs that differ only in the seed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mitp.atomic import write_json_atomic, write_text_atomic
from mitp.data.missing import EvalMissingConfig
from mitp.markdown import table
from mitp.runs import Run, first_repeat

from ..errors import UserError
from ..figures import draw_if_possible
from ..figures import robustness as robustness_figure
from ..outputs import check_outputs
from ..train.config import load_run_config
from ..train.finished import evaluate_dataset, load_run, split_dataset
from .compare_report import mean_std


def missing_at(modality: str, rate: float, seed: int):
    if modality == "both":
        return EvalMissingConfig(image=rate / 2, text=rate / 2, seed=seed)
    return EvalMissingConfig(**{modality: rate}, seed=seed)


def curve_label(run_dir: Path, method: str, missing_aware) -> str:
    aware = {True: ", missing-aware", False: ""}.get(missing_aware, "")
    return f"{method}{aware} ({run_dir.name})"


def robustness(
    run_dir: Path, modality: str, rates: list[float], split: str, batch_size: int | None, progress
) -> tuple[dict, str]:
    """The run's curve, and a key equal for runs whose configs differ only in the seed."""
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
    unseeded = {k: v for k, v in config.to_dict().items() if k != "seed"}
    return {
        "run": str(run_dir),
        "method": config.method,
        "missing_aware": config.model.get("missing_aware"),
        "label": curve_label(Path(run_dir), config.method, config.model.get("missing_aware")),
        "seed": config.seed,
        "trained_with_missing": config.train.missing.to_dict(),
        "metric": metric,
        "values": values,
        "samples": samples,
    }, json.dumps(unseeded, sort_keys=True, default=str)


def seed_groups(curves: list[dict], keys: list[str]) -> list[dict]:
    """The curves whose ``keys`` are equal (runs that differ only in the seed), as mean and sample std
    per rate."""
    grouped: dict[str, list[dict]] = {}
    for curve, key in zip(curves, keys):
        grouped.setdefault(key, []).append(curve)
    groups = []
    for members in grouped.values():
        per_rate = [mean_std(list(values)) for values in zip(*(m["values"] for m in members))]
        first = members[0]
        label = first["label"]
        if len(members) > 1:  # named by the seeds' parent directory, unless that is just the method's name
            parent = Path(first["run"]).parent
            label = curve_label(parent, first["method"], first["missing_aware"])
            if parent.name == first["method"]:
                label = label.rsplit(" (", 1)[0]
            label += f", {len(members)} seeds"
        groups.append(
            {
                "label": label,
                "method": first["method"],
                "missing_aware": first["missing_aware"],
                "runs": [m["run"] for m in members],
                "seeds": [m["seed"] for m in members],
                "mean": [stat["mean"] for stat in per_rate],
                "std": [stat["std"] for stat in per_rate],
            }
        )
    return groups


def markdown_table(report: dict) -> str:
    """One row per group, one column per rate: ``mean ± std`` (the mean alone for one run)."""
    what = {"image": "image", "text": "text", "both": "image or text (half each)"}[report["modality"]]
    header = [f"{report['split']} {report['runs'][0]['metric']}, {what} missing"] + [
        f"{r:.0%}" for r in report["rates"]
    ]
    rows = [
        [group["label"]]
        + [f"{m:.4f}" + (f" ± {s:.4f}" if len(group["runs"]) > 1 else "") for m, s in zip(group["mean"], group["std"])]
        for group in report["groups"]
    ]
    return table(header, rows)


def check_one_dataset(runs: list[Path]) -> None:
    """A plot and its seed bands compare runs on one split of one dataset, each run once: refuse otherwise, before
    any evaluation."""
    repeat = first_repeat([("", str(run)) for run in runs])
    if repeat is not None:
        (_, first), (_, run) = repeat
        raise UserError(f"{run} is given twice (as {first} too): each run is one curve, each seed counted once")
    data: dict[str, tuple[str, Path]] = {}
    for run in runs:
        if Run(run).is_run():  # not a run: load_run names it
            path = load_run_config(Run(run).config_path).data
            data.setdefault(os.path.realpath(path), (path, run))
    if len(data) > 1:
        (path_a, run_a), (path_b, run_b) = list(data.values())[:2]
        raise UserError(
            f"{run_a} evaluates {path_a} but {run_b} evaluates {path_b}: give runs of one dataset "
            "(one plot, one split, the same samples missing)"
        )


def write_report(
    runs: list[Path], modality: str, rates: list[float], split: str, batch_size: int | None, out: Path, progress=print
) -> str:
    """Evaluate every run at every rate; write robustness.json, .png and .md into ``out``; return the table.
    Never over a run's own files (OutputError, before any evaluation)."""
    check_outputs(
        files=[out / f"robustness.{suffix}" for suffix in ("json", "png", "md")], folders=[out], own_runs=runs
    )
    check_one_dataset(runs)
    out.mkdir(parents=True, exist_ok=True)
    curves, keys = zip(*(robustness(r, modality, rates, split, batch_size, progress) for r in runs))
    report = {
        "modality": modality,
        "split": split,
        "rates": rates,
        "groups": seed_groups(list(curves), list(keys)),
        "runs": list(curves),
    }
    write_json_atomic(out / "robustness.json", report)
    draw_if_possible(robustness_figure, report, out / "robustness.png", note=progress)
    table = markdown_table(report)
    write_text_atomic(out / "robustness.md", table)
    return table


__all__ = [
    "check_one_dataset",
    "curve_label",
    "markdown_table",
    "missing_at",
    "robustness",
    "seed_groups",
    "write_report",
]
