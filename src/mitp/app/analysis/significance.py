"""Paired bootstrap: is method A's metric above method B's by more than the split's size resolves?

Every run is scored on the same samples of one split. Each bootstrap resample draws N of the split's
N samples with replacement, and both methods are scored on that same draw (the pairing), each as the
mean over its runs (seeds). Reported per metric: both means on the whole split, A - B, the percentile
interval of A - B over the resamples, and ``p_a_not_above``, the fraction of resamples in which A does
not beat B (a one-sided bootstrap p-value). The interval covers which samples the split happened to
hold, not training noise: seeds enter through the means, and their spread is in the per-run values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mitp.metrics import METRICS, decisions, resampled_metrics

from ..errors import UserError
from ..train.finished import dataset_logits, load_run, split_dataset

RESAMPLES_AT_ONCE = 1000  # bounds the (resamples, samples) count matrix's memory on large splits


@dataclass
class ScoredRun:
    run: str
    method: str
    task: str
    labels: tuple[str, ...]
    ids: list[str]
    predicted: torch.Tensor  # (N, K) bool, rows in ``ids`` order
    target: torch.Tensor  # (N, K) bool


def score_run(run_dir: str | Path, split: str, batch_size: int | None = None) -> ScoredRun:
    """A run's decisions on ``split`` of its own data (its best checkpoint; multi-label at its own threshold)."""
    loaded = load_run(run_dir)
    dataset = split_dataset(loaded, split)
    ids, logits, labels = dataset_logits(loaded, dataset, batch_size)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    predicted, target = decisions(logits[order], labels[order], dataset.task, loaded.threshold)
    return ScoredRun(
        str(run_dir),
        loaded.config.method,
        dataset.task,
        tuple(loaded.labels.labels),
        [ids[i] for i in order],
        predicted,
        target,
    )


def check_paired(runs: list[ScoredRun]) -> None:
    """Every run must score the same samples with the same labels, or the pairing means nothing."""
    first = runs[0]
    for other in runs[1:]:
        if (other.task, other.labels) != (first.task, first.labels):
            raise UserError(
                f"{other.run} predicts {other.task} over {list(other.labels)}, but {first.run} "
                f"predicts {first.task} over {list(first.labels)}: not comparable"
            )
        if other.ids != first.ids:
            only_one = sorted(set(first.ids) ^ set(other.ids))
            raise UserError(
                f"{other.run} and {first.run} were scored on different samples ({len(other.ids)} "
                f"and {len(first.ids)}; e.g. {only_one[:3]} in one only): give runs of one dataset"
            )
        if not torch.equal(other.target, first.target):
            raise UserError(
                f"{other.run} and {first.run} disagree on the labels of the same sample ids: give runs of one dataset"
            )


def paired_bootstrap(
    a: list[ScoredRun], b: list[ScoredRun], resamples: int = 10000, seed: int = 0, level: float = 0.95
) -> dict:
    """A against B on every metric of the task (see the module docstring); deterministic for a ``seed``."""
    check_paired(a + b)
    task, target, samples = a[0].task, a[0].target, len(a[0].ids)

    def per_run(side: list[ScoredRun], weights: torch.Tensor) -> dict[str, torch.Tensor]:  # (runs, resamples)
        scores = [resampled_metrics(run.predicted, target, weights, task) for run in side]
        return {metric: torch.stack([s[metric] for s in scores]) for metric in METRICS[task]}

    whole_a, whole_b = per_run(a, torch.ones(1, samples)), per_run(b, torch.ones(1, samples))
    generator = torch.Generator().manual_seed(seed)
    differences: dict[str, list[torch.Tensor]] = {metric: [] for metric in METRICS[task]}
    for start in range(0, resamples, RESAMPLES_AT_ONCE):
        count = min(RESAMPLES_AT_ONCE, resamples - start)
        drawn = torch.randint(0, samples, (count, samples), generator=generator)
        weights = torch.zeros(count, samples, dtype=torch.float64).scatter_add_(
            1, drawn, torch.ones(count, samples, dtype=torch.float64)
        )
        drawn_a, drawn_b = per_run(a, weights), per_run(b, weights)
        for metric in differences:
            differences[metric].append(drawn_a[metric].mean(0) - drawn_b[metric].mean(0))
    tail = (1 - level) / 2
    report = {
        "task": task,
        "samples": samples,
        "resamples": resamples,
        "seed": seed,
        "level": level,
        "a": {"method": _methods(a), "runs": [r.run for r in a]},
        "b": {"method": _methods(b), "runs": [r.run for r in b]},
        "metrics": {},
    }
    for metric, chunks in differences.items():
        diff = torch.cat(chunks)
        low, high = torch.quantile(diff, torch.tensor([tail, 1 - tail], dtype=diff.dtype)).tolist()
        mean_a, mean_b = whole_a[metric].mean(), whole_b[metric].mean()
        report["metrics"][metric] = {
            "a": mean_a.item(),
            "b": mean_b.item(),
            "difference": (mean_a - mean_b).item(),
            "interval": [low, high],
            "p_a_not_above": (diff <= 0).double().mean().item(),
            "a_per_run": whole_a[metric][:, 0].tolist(),
            "b_per_run": whole_b[metric][:, 0].tolist(),
        }
    return report


def _methods(side: list[ScoredRun]) -> str:
    return ", ".join(dict.fromkeys(run.method for run in side))


def format_report(report: dict, split: str) -> str:
    a, b = report["a"], report["b"]
    pct = f"{report['level']:.0%}"
    lines = [
        f"A: {a['method']} ({len(a['runs'])} runs)   B: {b['method']} ({len(b['runs'])} runs)   "
        f"{split}: {report['samples']} samples, {report['resamples']} paired bootstrap resamples",
        "",
        f"| metric | A | B | A - B | {pct} interval | P(A <= B) | A per run | B per run |",
        "|---|---:|---:|---:|---|---:|---|---|",
    ]
    for metric, m in report["metrics"].items():
        low, high = m["interval"]
        lines.append(
            f"| {metric} | {m['a']:.4f} | {m['b']:.4f} | {m['difference']:+.4f} | "
            f"[{low:+.4f}, {high:+.4f}] | {m['p_a_not_above']:.3f} | "
            f"{', '.join(f'{v:.4f}' for v in m['a_per_run'])} | "
            f"{', '.join(f'{v:.4f}' for v in m['b_per_run'])} |"
        )
    return "\n".join(lines) + "\n"


def compare_runs(
    a_dirs: list[str],
    b_dirs: list[str],
    split: str,
    resamples: int,
    seed: int,
    batch_size: int | None,
    progress: Callable[[str], None],
) -> dict:
    scored = []
    for run_dir in a_dirs + b_dirs:
        scored.append(score_run(run_dir, split, batch_size))
        progress(f"scored {run_dir} on {split} ({len(scored[-1].ids)} samples)")
    return paired_bootstrap(scored[: len(a_dirs)], scored[len(a_dirs) :], resamples, seed)
