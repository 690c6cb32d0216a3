"""Every figure mitp draws (matplotlib: ``pip install 'mitp[plots]'``): a run's curves, a comparison, a sweep,
robustness curves and an explanation. Each takes the report it shows and the path to write.

Where matplotlib is missing, :func:`draw_if_possible` skips a figure that only accompanies a command's real
output (a run's curves, compare.png) with a note; a command whose output is the figure (explain) needs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .extras import missing, require


def pyplot():
    """matplotlib's pyplot on the file-only backend, or a UserError naming the extra."""
    require("plots", "drawing figures")
    import matplotlib  # the plots extra: loaded when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the backend

    return plt


def draw_if_possible(draw: Callable[..., Path], *args, note=print) -> Path | None:
    """``draw(*args)``, or None and a one-line note when matplotlib is not installed."""
    if missing("plots"):
        note(f"note: {Path(args[-1]).name} not drawn: pip install 'mitp[plots]' for figures")
        return None
    return draw(*args)


def _save(fig, path: Path, dpi: int = 120) -> Path:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt  # loaded by pyplot() already

    plt.close(fig)
    return path


# --- intervals --------------------------------------------------------------------------------------
def accuracy_interval(accuracy: float, samples: int, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval a bootstrap over the ``samples`` of a split gives an accuracy, computed exactly:
    the resampled accuracy is Binomial(samples, accuracy) / samples."""
    if accuracy <= 0 or accuracy >= 1:
        return accuracy, accuracy
    k = np.arange(samples + 1)
    log_choose = np.array([math.lgamma(samples + 1) - math.lgamma(i + 1) - math.lgamma(samples - i + 1) for i in k])
    cdf = np.cumsum(np.exp(log_choose + k * math.log(accuracy) + (samples - k) * math.log1p(-accuracy)))
    tail = (1 - level) / 2
    return int(np.searchsorted(cdf, tail)) / samples, int(np.searchsorted(cdf, 1 - tail)) / samples


def spread(row: dict, split: str, metric: str) -> tuple[float, float, float, str]:
    """(mean, lower error, upper error, what it is) of a comparison row's ``metric`` on ``split``: the std over
    seeds, or with one seed the bootstrap interval of an accuracy (none for other metrics)."""
    stat = row[split][metric]
    if len(row["seeds"]) > 1:
        return stat["mean"], stat["std"], stat["std"], "± std over seeds"
    samples = (row.get("samples") or {}).get(split)
    if metric == "accuracy" and samples:
        low, high = accuracy_interval(stat["mean"], samples)
        return stat["mean"], stat["mean"] - low, high - stat["mean"], "95% bootstrap interval over the split"
    return stat["mean"], 0.0, 0.0, "one seed, no interval"


def _fitted(ax, values_low: list[float], values_high: list[float], axis: str = "x") -> None:
    """Limit an axis to the data's range with a margin, so that small differences show."""
    low, high = min(values_low), max(values_high)
    margin = max((high - low) * 0.15, 0.005)
    (ax.set_xlim if axis == "x" else ax.set_ylim)(low - margin, high + margin)


def _params(n: float) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k"


# --- the figures --------------------------------------------------------------------------------------
def curves(records: list[dict], selection: str, path: Path) -> Path:
    """A run's curves.png: loss (train and val) and the validation selection metric per epoch."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-o"), ("val", "-s")):
        rows = [r for r in records if r["split"] == split]
        ax_loss.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], style, label=split)
    val = [r for r in records if r["split"] == "val"]
    ax_metric.plot([r["epoch"] for r in val], [r["metrics"][selection] for r in val], "-s", color="tab:green")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_metric.set(xlabel="epoch", ylabel=selection, title=f"validation {selection}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def comparison(rows: list[dict], path: Path) -> Path:
    """compare.png: each method's validation and test selection metric with its spread, on an axis fitted to the
    data; and test against trainable parameters, the parameter-efficient fine-tuning picture."""
    plt = pyplot()
    ok = [r for r in rows if r["status"] != "failed"]
    metric = ok[0]["selection_metric"] if ok else "metric"
    fig, (ax_methods, ax_params) = plt.subplots(1, 2, figsize=(12.5, 1.3 + 0.6 * max(len(ok), 3)))
    lows, highs, what = [], [], set()
    for i, row in enumerate(ok):
        for split, offset, marker, color in (("val", -0.12, "o", "tab:gray"), ("test", 0.12, "D", "tab:blue")):
            mean, below, above, said = spread(row, split, metric)
            what.add(said)
            ax_methods.errorbar(
                mean,
                i + offset,
                xerr=[[below], [above]],
                fmt=marker,
                color=color,
                capsize=3,
                label=split if i == 0 else None,
            )
            lows.append(mean - below)
            highs.append(mean + above)
    ax_methods.set_yticks(range(len(ok)), [r["method"] for r in ok])
    ax_methods.invert_yaxis()
    ax_methods.set(xlabel=metric, title=f"{metric} per method ({'; '.join(sorted(what))})")
    if ok:
        _fitted(ax_methods, lows, highs)
    ax_methods.grid(axis="x", alpha=0.3)
    ax_methods.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)  # beside: never on a label

    params = [r["trainable_params"] for r in ok]
    for row in ok:
        mean, below, above, _ = spread(row, "test", metric)
        ax_params.errorbar(row["trainable_params"], mean, yerr=[[below], [above]], fmt="D", capsize=3)
        ax_params.annotate(
            row["method"],
            (row["trainable_params"], mean),
            textcoords="offset points",
            xytext=(7, 0),
            va="center",
            fontsize=8,
        )
    if params and max(params) >= 10 * min(params):
        ax_params.set_xscale("log")  # spans orders of magnitude (full fine-tuning beside a few prompts)
    ax_params.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: _params(x)))
    ax_params.xaxis.set_minor_formatter(plt.NullFormatter())
    if ok:
        tests = [spread(r, "test", metric) for r in ok]
        _fitted(ax_params, [m - b for m, b, _, _ in tests], [m + a for m, _, a, _ in tests], axis="y")
    ax_params.set(xlabel="trainable parameters", ylabel=f"test {metric}", title=f"test {metric} against size")
    ax_params.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def sweep(studies: dict[str, list[dict]], path: Path) -> Path:
    """sweep.png: every trial's validation value against each searched key, one panel per key, one colour per
    method; pruned trials hollow, each method's best marked with a star."""
    plt = pyplot()
    keys = sorted({key for trials in studies.values() for t in trials for key in t["params"]})
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(5.2 * max(1, len(keys)), 4), squeeze=False)
    colors = dict(zip(studies, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4))
    for ax, key in zip(axes[0], keys):
        numeric = True
        for method, trials in studies.items():
            scored = [t for t in trials if t["value"] is not None and key in t["params"]]
            numeric &= all(isinstance(t["params"][key], (int, float)) for t in scored)
            for state, face in (("complete", colors[method]), ("pruned", "none")):
                shown = [t for t in scored if t["state"] == state]
                ax.scatter(
                    [t["params"][key] for t in shown],
                    [t["value"] for t in shown],
                    facecolors=face,
                    edgecolors=colors[method],
                    label=f"{method} ({state})" if shown else None,
                )
            complete = [t for t in scored if t["state"] == "complete"]
            if complete:
                best = max(complete, key=lambda t: t["value"])
                star = {"marker": "*", "s": 260, "color": colors[method], "zorder": 3, "label": f"{method} (best)"}
                ax.scatter(best["params"][key], best["value"], **star)
        values = [t["params"][key] for trials in studies.values() for t in trials if key in t["params"]]
        if numeric and values and min(values) > 0 and max(values) >= 10 * min(values):
            ax.set_xscale("log")
        ax.set(xlabel=key, ylabel="validation value", title=f"trials against {key} (pruned: their last value)")
        ax.grid(alpha=0.3)
    if keys:
        axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _save(fig, path)


def robustness(report: dict, path: Path) -> Path:
    """robustness.png: the metric as a modality goes missing, one line per group of seeds with its std band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    rates = [100 * r for r in report["rates"]]
    lows, highs = [], []
    for group in report["groups"]:
        mean, std = np.array(group["mean"]), np.array(group["std"])
        (line,) = ax.plot(rates, mean, marker="o", label=group["label"])
        if len(group["runs"]) > 1:
            ax.fill_between(rates, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        lows += list(mean - std)
        highs += list(mean + std)
    what = {"image": "images", "text": "texts", "both": "images or texts (half each)"}[report["modality"]]
    metric = report["runs"][0]["metric"]
    ax.set(
        xlabel=f"{report['split']} samples without their {what} (%)",
        ylabel=f"{report['split']} {metric}",
        title=f"{metric} as the {what} go missing (mean ± std over seeds)",
        xticks=rates,
    )
    if lows:
        _fitted(ax, lows, highs, axis="y")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _save(fig, path)


def explanation(report: dict, path: Path) -> Path:
    """explain.png: the hub's similarity per step and the attention share on prompts per layer and head."""
    plt = pyplot()
    similarity = report["hub_similarity"]
    attention = report["prompt_attention_share"]
    columns = max(1, len(similarity)) + 1
    fig, axes = plt.subplots(1, columns, figsize=(3.6 * columns, 3.4), squeeze=False)
    for step, matrix in enumerate(similarity):
        ax = axes[0, step]
        image = ax.imshow(np.array(matrix), vmin=0, vmax=1, cmap="viridis")
        ax.set(title=f"hub similarity, step {step}", xlabel="vision prompt", ylabel="text prompt")
        fig.colorbar(image, ax=ax, fraction=0.046)
    if not similarity:
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, "no similarity hub\nin this method", ha="center", va="center")
    ax = axes[0, -1]
    keys = sorted(attention)
    means = [float(np.mean(attention[k])) for k in keys]
    ax.bar(range(len(keys)), means, color=["tab:blue" if k.startswith("text") else "tab:orange" for k in keys])
    for i, key in enumerate(keys):  # one dot per head
        ax.plot([i] * len(attention[key]), attention[key], "k.", markersize=3)
    ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right")
    ax.set(title="attention share on prompts", ylim=(0, 1))
    best = report["predictions"][0] if report["predictions"] else {"label": "-", "score": 0.0}
    fig.suptitle(f"{report['method']}: {report['text']!r} -> {best['label']} ({best['score']:.2f})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi=100)


__all__ = [
    "accuracy_interval",
    "comparison",
    "curves",
    "draw_if_possible",
    "explanation",
    "pyplot",
    "robustness",
    "spread",
    "sweep",
]
