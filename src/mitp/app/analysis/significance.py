"""Paired bootstrap: is method A's metric above method B's by more than seeds and the split's size resolve?

Every run is scored on the same samples of one split; each side's score is the mean over its runs
(seeds), each given once. Two intervals of A - B, both percentile intervals over the same resamples of
the split:

- seeds and samples (the default): each draw also resamples each side's runs with replacement, then
  the split's samples, shared by both sides. It asks whether A beats B by more than other seeds and
  another split of this size could change. It needs at least two runs a side, and with few runs it
  is coarse (three runs have only ten distinct draws a side; see :func:`distinct_run_draws`).
- samples only: the runs fixed, only the split's samples resampled. It asks whether these very runs
  differ by more than the split's size resolves; seed variance is not in it.

Both come with ``p_a_not_above``, the fraction of draws in which A does not beat B (a one-sided
bootstrap p-value). One generator seeded with ``seed`` draws the samples, then the runs, so the samples-only
numbers do not depend on whether runs are resampled; all draws are scored at once (a count matrix times
per-sample hits, :func:`mitp.metrics.resampled_metrics`).

Every run is scored with its own ``eval.missing`` unless a missing condition is given: then every run
is scored under that one condition, with one drop pattern (``mitp robustness``'s, :func:`missing_at`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import torch

from mitp.data.missing import EvalMissingConfig
from mitp.markdown import table
from mitp.metrics import METRICS, decisions, resampled_metrics
from mitp.runs import Run, first_repeat

from ..errors import UserError
from ..train.config import load_run_config
from ..train.finished import dataset_logits, load_run, split_dataset
from .robustness import missing_at

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


@dataclass(frozen=True)
class MissingCondition:
    """One missing-modality condition for every run: ``modality`` (image, text, both, or none) at ``rate``."""

    modality: str
    rate: float

    def __str__(self) -> str:
        return "none" if self.modality == "none" else f"{self.modality}={self.rate:g}"

    def config(self, seed: int) -> EvalMissingConfig:
        if self.modality == "none":
            return EvalMissingConfig(seed=seed)
        return missing_at(self.modality, self.rate, seed)

    def describe(self, seed: int) -> str:
        if self.modality == "none" or self.rate == 0:
            return "complete data (no modality missing)"
        what = {"image": "image", "text": "text", "both": "image or text (half each)"}[self.modality]
        return f"{what} missing in {self.rate:.0%} of the samples (drop seed {seed})"


def parse_missing(text: str) -> MissingCondition:
    """``image=0.9``, ``text=0.9``, ``both=0.9`` or ``none``; ValueError naming the expected form."""
    if text.strip() == "none":
        return MissingCondition("none", 0.0)
    modality, _, rate = text.partition("=")
    try:
        value = float(rate)
    except ValueError:
        value = math.nan
    if modality.strip() not in ("image", "text", "both") or not 0 <= value <= 1:
        raise ValueError(f"expected image=RATE, text=RATE, both=RATE (RATE in [0, 1]) or none, got {text!r}")
    return MissingCondition(modality.strip(), value)


def score_run(
    run_dir: str | Path, split: str, batch_size: int | None = None, missing: EvalMissingConfig | None = None
) -> ScoredRun:
    """A run's decisions on ``split`` of its own data (its best checkpoint; multi-label at its own threshold),
    with ``missing`` (default: the run's own ``eval.missing``)."""
    loaded = load_run(run_dir)
    dataset = split_dataset(loaded, split, missing)
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


def check_distinct_runs(a: Sequence[str | PathLike], b: Sequence[str | PathLike]) -> None:
    """Each run once: a run given twice (on one side or on both, however its path is spelled) would count its
    seed twice in the bootstrap over seeds."""
    repeat = first_repeat([(side, str(run)) for side, runs in (("--a", a), ("--b", b)) for run in runs])
    if repeat is not None:
        (first_side, first), (side, run) = repeat
        named = run if run == first else f"{first} (and as {run})"
        where = f"twice in {side}" if side == first_side else f"in {first_side} and in {side}"
        raise UserError(
            f"{named} is given {where}: each run is one seed and counts once in the bootstrap; give each run once"
        )


def check_seeds_resampled(a: Sequence[str | PathLike], b: Sequence[str | PathLike]) -> None:
    """The seeds-and-samples interval resamples each side's runs: one run has no seed variance to draw from."""
    for side, runs in (("A", a), ("B", b)):
        if len(runs) < 2:
            raise UserError(
                f"{side} has one run ({runs[0]}): the seeds-and-samples interval resamples each side's runs "
                "and needs at least 2 a side; give more seeds, or --samples-only to count only the split's "
                "sample variance"
            )


def paired_bootstrap(
    a: list[ScoredRun],
    b: list[ScoredRun],
    resamples: int = 10000,
    seed: int = 0,
    level: float = 0.95,
    resample_runs: bool = True,
    target_width: float | None = None,
) -> dict:
    """A against B on every metric of the task (see the module docstring); deterministic for a ``seed``.

    ``resample_runs``: also the seeds-and-samples interval (needs 2 runs a side). ``target_width``: per
    metric, the runs a side :func:`seeds_for_width` estimates for an interval that wide."""
    check_paired(a + b)
    if resample_runs:
        check_seeds_resampled([run.run for run in a], [run.run for run in b])
    task, target, samples = a[0].task, a[0].target, len(a[0].ids)

    def per_run(side: list[ScoredRun], weights: torch.Tensor) -> dict[str, torch.Tensor]:  # (runs, resamples)
        scores = [resampled_metrics(run.predicted, target, weights, task) for run in side]
        return {metric: torch.stack([s[metric] for s in scores]) for metric in METRICS[task]}

    whole_a, whole_b = per_run(a, torch.ones(1, samples)), per_run(b, torch.ones(1, samples))
    generator = torch.Generator().manual_seed(seed)
    chunks_a, chunks_b = [], []
    for start in range(0, resamples, RESAMPLES_AT_ONCE):
        count = min(RESAMPLES_AT_ONCE, resamples - start)
        drawn = torch.randint(0, samples, (count, samples), generator=generator)
        weights = torch.zeros(count, samples, dtype=torch.float64).scatter_add_(
            1, drawn, torch.ones(count, samples, dtype=torch.float64)
        )
        chunks_a.append(per_run(a, weights))
        chunks_b.append(per_run(b, weights))
    drawn_a = {metric: torch.cat([c[metric] for c in chunks_a], 1) for metric in METRICS[task]}
    drawn_b = {metric: torch.cat([c[metric] for c in chunks_b], 1) for metric in METRICS[task]}
    # Each draw's runs, after the samples: draw r scores A as the mean of runs picks_a[r] on sample draw r.
    picks_a = torch.randint(0, len(a), (resamples, len(a)), generator=generator)
    picks_b = torch.randint(0, len(b), (resamples, len(b)), generator=generator)
    report = {
        "task": task,
        "samples": samples,
        "resamples": resamples,
        "seed": seed,
        "level": level,
        "runs_resampled": resample_runs,
        "a": {"method": _methods(a), "runs": [r.run for r in a]},
        "b": {"method": _methods(b), "runs": [r.run for r in b]},
        "metrics": {},
    }
    for metric in METRICS[task]:
        mean_a, mean_b = whole_a[metric].mean(), whole_b[metric].mean()
        a_per_run, b_per_run = whole_a[metric][:, 0].tolist(), whole_b[metric][:, 0].tolist()
        samples_only = _interval(drawn_a[metric].mean(0) - drawn_b[metric].mean(0), level)
        seeds_and_samples = None
        if resample_runs:
            seeds_and_samples = _interval(
                drawn_a[metric].T.gather(1, picks_a).mean(1) - drawn_b[metric].T.gather(1, picks_b).mean(1), level
            )
        entry = {
            "a": mean_a.item(),
            "b": mean_b.item(),
            "difference": (mean_a - mean_b).item(),
            "seeds_and_samples": seeds_and_samples,
            "samples_only": samples_only,
            "a_per_run": a_per_run,
            "b_per_run": b_per_run,
        }
        if target_width is not None:
            low, high = samples_only["interval"]
            entry["seeds_for_width"] = seeds_for_width(a_per_run, b_per_run, target_width, level, high - low)
        report["metrics"][metric] = entry
    if target_width is not None:
        report["target_width"] = target_width
    return report


def _interval(differences: torch.Tensor, level: float) -> dict:
    tail = (1 - level) / 2
    low, high = torch.quantile(differences, torch.tensor([tail, 1 - tail], dtype=differences.dtype)).tolist()
    return {"interval": [low, high], "p_a_not_above": (differences <= 0).double().mean().item()}


def distinct_run_draws(runs: int) -> int:
    """How many different multisets of ``runs`` runs a draw with replacement can give (3 runs: 10)."""
    return math.comb(2 * runs - 1, runs)


def seeds_for_width(
    a_per_run: Sequence[float],
    b_per_run: Sequence[float],
    width: float,
    level: float = 0.95,
    samples_width: float = 0.0,
) -> int | None:
    """Runs (seeds) a side for which the interval of A - B would be about ``width`` wide, or None when the
    split alone is that wide (``samples_width``, the samples-only interval's width: more seeds cannot help).

    A normal approximation from the per-run spread: the seed part of the interval is
    ``2 z sqrt((s_a^2 + s_b^2) / n)`` (``s`` the sample standard deviation of a side's per-run values, ``z``
    the normal quantile of ``level``), combined in quadrature with the split's part. A planning figure
    with the per-run spread taken as known; at least 2 (the fewest the resampled interval accepts)."""
    if len(a_per_run) < 2 or len(b_per_run) < 2:
        raise ValueError("the per-run spread needs at least 2 runs a side")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    room = width**2 - samples_width**2
    if room <= 0:
        return None
    z = statistics.NormalDist().inv_cdf(1 - (1 - level) / 2)
    spread = statistics.variance(a_per_run) + statistics.variance(b_per_run)
    return max(2, math.ceil((2 * z) ** 2 * spread / room))


def _methods(side: list[ScoredRun]) -> str:
    return ", ".join(dict.fromkeys(run.method for run in side))


def format_report(report: dict, split: str) -> str:
    """The header lines, one table row per metric, and what each interval answers."""
    a, b = report["a"], report["b"]
    runs_a, runs_b = len(a["runs"]), len(b["runs"])
    pct = f"{report['level']:.0%}"
    lines = [
        f"A: {a['method']} ({runs_a} runs)   B: {b['method']} ({runs_b} runs)   "
        f"{split}: {report['samples']} samples, {report['resamples']} paired bootstrap resamples "
        f"(seed {report['seed']})"
    ]
    if report.get("missing"):
        lines.append(f"every run scored with {report['missing']['description']}")
    lines.append("")
    resampled = report["runs_resampled"]
    header = ["metric", "A", "B", "A - B"]
    if resampled:
        header += [f"{pct} interval, seeds + samples ({runs_a} + {runs_b} seeds)", "P(A <= B)"]
    header += [f"{pct} interval, samples only", "P(A <= B), samples only"]
    width = report.get("target_width")
    if width is not None:
        header.append(f"seeds a side for width {width:g}")
    header += ["A per run", "B per run"]
    rows = []
    for metric, m in report["metrics"].items():
        row = [metric, f"{m['a']:.4f}", f"{m['b']:.4f}", f"{m['difference']:+.4f}"]
        for key in ("seeds_and_samples", "samples_only") if resampled else ("samples_only",):
            low, high = m[key]["interval"]
            row += [f"[{low:+.4f}, {high:+.4f}]", f"{m[key]['p_a_not_above']:.3f}"]
        if width is not None:
            row.append("split too small" if m["seeds_for_width"] is None else str(m["seeds_for_width"]))
        row += [", ".join(f"{v:.4f}" for v in m[f"{side}_per_run"]) for side in ("a", "b")]
        rows.append(row)
    align = "lrrr" + "lr" * (2 if resampled else 1) + ("r" if width is not None else "") + "ll"
    notes = []
    if resampled:
        notes.append(
            f"seeds + samples: each resample draws each side's runs with replacement (A {runs_a}, B {runs_b}; "
            f"{distinct_run_draws(runs_a)} and {distinct_run_draws(runs_b)} distinct draws), then the split's "
            "samples: does A beat B beyond what other seeds and another split of this size could change?"
            + (" With 3 or fewer runs a side this interval is coarse." if min(runs_a, runs_b) <= 3 else "")
        )
    notes.append(
        "samples only: these runs fixed, the split's samples resampled: do these runs differ beyond what "
        "the split's size resolves?" + ("" if resampled else " Seed variance is not counted.")
    )
    if width is not None:
        notes.append(
            f"seeds a side for width {width:g}: runs a side for a seeds + samples interval about that wide, "
            "from the per-run spread (normal approximation); 'split too small': the samples-only interval "
            "is already wider."
        )
    return "\n".join(lines) + "\n" + table(header, rows, align) + "\n" + "\n".join(notes) + "\n"


def missing_seed(run_dirs: Sequence[str | Path], explicit: int | None) -> int:
    """The drop seed for a missing condition: ``explicit``, else the runs' ``eval.missing.seed``, which must
    agree (one drop pattern for every run, or the pairing would compare different inputs)."""
    if explicit is not None:
        return explicit
    seeds: dict[int, str] = {}
    for run_dir in run_dirs:
        path = Run(run_dir).config_path
        if path.is_file():  # a run without one is refused by name when it is scored
            seeds.setdefault(load_run_config(path).eval.missing.seed, str(run_dir))
    if len(seeds) > 1:
        (first, run_first), (second, run_second) = list(seeds.items())[:2]
        raise UserError(
            f"--missing: {run_first} has eval.missing.seed {first} but {run_second} has {second}, so they would "
            "drop different samples; give --missing-seed N to score every run with one drop pattern"
        )
    return next(iter(seeds), 0)


def compare_runs(
    a_dirs: list[str],
    b_dirs: list[str],
    split: str,
    resamples: int,
    seed: int,
    batch_size: int | None,
    progress: Callable[[str], None],
    resample_runs: bool = True,
    missing: MissingCondition | None = None,
    drop_seed: int | None = None,
    target_width: float | None = None,
) -> dict:
    """Score every run, then :func:`paired_bootstrap`. ``missing``: every run under that condition, with the
    drop seed ``drop_seed`` or the runs' common ``eval.missing.seed``; None: each run's own ``eval.missing``."""
    check_distinct_runs(a_dirs, b_dirs)  # before any run is scored
    if resample_runs:
        check_seeds_resampled(a_dirs, b_dirs)
    condition = None
    if missing is not None:
        if missing.rate > 0:
            drop_seed = missing_seed(a_dirs + b_dirs, drop_seed)
        elif drop_seed is None:  # nothing is dropped: the seed picks nothing
            drop_seed = 0
        condition = missing.config(drop_seed)
    scored = []
    for run_dir in a_dirs + b_dirs:
        scored.append(score_run(run_dir, split, batch_size, condition))
        progress(f"scored {run_dir} on {split} ({len(scored[-1].ids)} samples)")
    report = paired_bootstrap(
        scored[: len(a_dirs)],
        scored[len(a_dirs) :],
        resamples,
        seed,
        resample_runs=resample_runs,
        target_width=target_width,
    )
    if missing is not None:
        description = missing.describe(drop_seed)
        report["missing"] = {"condition": str(missing), "modality": missing.modality, "rate": missing.rate}
        report["missing"] |= {"seed": drop_seed, "description": description}
    return report
