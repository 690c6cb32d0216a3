"""What ``mitp compare`` reports: each method's setting chosen on validation, then val and test of that
setting (compare.json, runs.json), as a markdown table (compare.md) and a figure (compare.png)."""

from __future__ import annotations

import json
import shlex
import statistics
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from mitp.atomic import write_json_atomic, write_text_atomic
from mitp.markdown import table

from ..figures import comparison, draw_if_possible
from ..train.config import RunConfig
from .compare_plan import GridPoint

REPORT_FILES = ("compare.json", "runs.json", "compare.md", "compare.png")


def mean_std(values: list[float]) -> dict:
    """``{"mean", "std"}`` over seeds: the sample standard deviation, 0.0 for a single value."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _setting_key(setting: dict) -> str:
    return json.dumps(setting, sort_keys=True)


def aggregate(runs: list[dict], methods: list[str]) -> list[dict]:
    """One row per method: its setting chosen on validation, then val and test of that setting.

    A setting competes only if all its seeds finished; the best mean validation selection
    metric wins (the first in grid order on a tie). Test never takes part in the choice.
    """
    rows = []
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        failed = [r for r in mine if "error" in r]
        settings: dict[str, list[dict]] = {}
        for r in mine:
            settings.setdefault(_setting_key(r["setting"]), []).append(r)
        grid = []
        for runs_of_setting in settings.values():
            finished = [r["results"] for r in runs_of_setting if "results" in r]
            entry = {
                "setting": runs_of_setting[0]["setting"],
                "complete": len(finished) == len(runs_of_setting),
                "seeds": [r["seed"] for r in runs_of_setting if "results" in r],
            }
            if finished:
                metric = finished[0]["selection_metric"]
                entry["val"] = mean_std([f["val"][metric] for f in finished])
            grid.append(entry)
        row = {"method": method, "grid": grid}
        if failed:
            row["errors"] = {f"{_label(r['setting'])} seed {r['seed']}": r["error"] for r in failed}
        eligible = [g for g in grid if g["complete"] and g["seeds"]]
        if not eligible:
            rows.append(
                {
                    **row,
                    "status": "failed",
                    "selected": None,
                    "seeds": [],
                    "trainable_params": None,
                    "val": None,
                    "test": None,
                    "peak_memory_mb": None,
                    "train_seconds": None,
                }
            )
            continue
        best = max(eligible, key=lambda g: g["val"]["mean"])  # max keeps the first of equals
        for g in grid:
            g["selected"] = g is best
        results = [r["results"] for r in mine if "results" in r and r["setting"] == best["setting"]]
        first = results[0]
        row.update(
            {
                "status": "ok" if not failed else "partial",
                "selected": best["setting"],
                "seeds": best["seeds"],
                "run_dirs": [
                    r["run_dir"] for r in mine if "results" in r and "run_dir" in r and r["setting"] == best["setting"]
                ],
                "trainable_params": first["trainable_params"],
                "samples": {"val": first.get("val_samples"), "test": first.get("test_samples")},
                "total_params": first["total_params"],
                "selection_metric": first["selection_metric"],
                "val": {k: mean_std([r["val"][k] for r in results]) for k in first["val"]},
                "test": {k: mean_std([r["test"][k] for r in results]) for k in first["test"]},
                "peak_memory_mb": statistics.fmean(r["peak_memory_mb"] for r in results),
                "peak_memory_kind": first["peak_memory_kind"],
                "train_seconds": statistics.fmean(r["train_seconds"] for r in results),
            }
        )
        rows.append(row)
    return rows


def _label(setting: dict) -> str:
    return GridPoint(tuple(setting.items())).label()


def _pm(stat: dict | None, key: str, spread: bool = True) -> str:
    if not stat or key not in stat:
        return "-"
    # one seed has no spread: "± 0.0000" would claim a measured one
    return f"{stat[key]['mean']:.4f} ± {stat[key]['std']:.4f}" if spread else f"{stat[key]['mean']:.4f}"


def significance_command(
    a_runs: Sequence[str | PathLike],
    b_runs: Sequence[str | PathLike],
    split: str = "test",
    missing: str | None = None,
) -> str:
    """The ``mitp significance`` command line for two sides' run directories, shell-quoted (for a report to
    link to). Torch-free. ``missing``: a ``--missing`` condition such as ``image=0.9``."""
    if not a_runs or not b_runs:
        raise ValueError("significance_command needs at least one run a side")
    words = ["mitp", "significance", "--a", *map(str, a_runs), "--b", *map(str, b_runs), "--split", split]
    if missing is not None:
        words += ["--missing", missing]
    if min(len(a_runs), len(b_runs)) < 2:
        words.append("--samples-only")
    return shlex.join(words)


def significance_section(rows: list[dict], metric: str) -> str:
    """How to ask whether a difference in the table is resolved: the ``mitp significance`` command for the
    method best on validation against each other one, on their chosen settings' runs."""
    ranked = sorted((r for r in rows if r.get("run_dirs")), key=lambda r: -r["val"][metric]["mean"])
    if len(ranked) < 2:
        return ""
    best = ranked[0]
    lines = [
        "",
        f"## Is a difference resolved? ({best['method']}, best on validation, against each other method)",
        "",
        "```sh",
        *(significance_command(best["run_dirs"], other["run_dirs"], "test") for other in ranked[1:]),
        "```",
        "",
    ]
    return "\n".join(lines)


def markdown_table(rows: list[dict], config: RunConfig, seeds: list[int], grid: list[GridPoint] | None = None) -> str:
    metric = next((r["selection_metric"] for r in rows if r.get("selection_metric")), "metric")
    # the task's other metrics (macro-F1, weighted-F1, ...) on test, beside the selection metric
    others = next(([k for k in r["test"] if k != metric] for r in rows if r.get("test")), [])
    searched = grid is not None and any(p.values for p in grid)
    spread = len(seeds) > 1
    head = config.head
    lines = [
        f"# Comparison on `{config.data}` with `{config.backbone}`",
        "",
        (
            f"Seeds {', '.join(map(str, seeds))}; mean ± std over seeds; "
            if spread
            else f"Seed {seeds[0]}, one run per setting; "
        )
        + f"{config.train.epochs} epochs, batch "
        f"{config.train.batch_size}, lr {config.train.lr}; the same head for every method (hidden_dim "
        f"{head.hidden_dim}, norm {head.norm}, fusion {head.fusion}). Test metrics come from each run's best "
        "validation checkpoint."
        + (
            f" Each method's setting was chosen on validation (mean {metric} over seeds) among "
            f"{len(grid)} grid points; test is reported for that setting only."
            if searched
            else ""
        ),
        "",
    ]
    header = [
        "method",
        *(["setting chosen on val"] if searched else []),
        "trainable params",
        f"val {metric}",
        f"test {metric}",
        *(f"test {k}" for k in others),
        "peak memory (MB)",
        "train time (s)",
        "status",
    ]
    table_rows = []
    for r in rows:
        chosen = [_label(r["selected"]) if r["selected"] is not None else "-"] if searched else []
        if r["status"] == "failed":
            error = "; ".join(r.get("errors", {}).values())
            table_rows.append([r["method"], *chosen, *["-"] * (5 + len(others)), f"failed: {error[:200]}"])
            continue
        status = r["status"] if r["status"] == "ok" else f"partial: {len(r.get('errors', {}))} run(s) failed"
        table_rows.append(
            [
                r["method"],
                *chosen,
                f"{r['trainable_params']:,}",
                _pm(r["val"], metric, spread),
                _pm(r["test"], metric, spread),
                *(_pm(r["test"], k, spread) for k in others),
                f"{r['peak_memory_mb']:.0f}",
                f"{r['train_seconds']:.1f}",
                status,
            ]
        )
    text = (
        "\n".join(lines) + "\n" + table(header, table_rows, align="l" * (1 + searched) + "r" * (5 + len(others)) + "l")
    )
    text += significance_section(rows, metric)
    if searched:
        grid_rows = []
        for r in rows:
            by_setting = {_setting_key(g["setting"]): g for g in r["grid"]}
            cells = []
            for point in grid:
                g = by_setting.get(_setting_key(point.as_dict()))
                if g is None or "val" not in g:
                    cells.append("failed")
                else:
                    cell = _pm(g, "val", spread) + ("*" if g.get("selected") else "")
                    cells.append(cell if g["complete"] else f"{cell} (incomplete)")
            grid_rows.append([r["method"], *cells])
        text += (
            f"\n## Validation {metric} per grid point ({'mean ± std over seeds; ' if spread else ''}* = chosen)\n\n"
            + table(["method", *(p.label() for p in grid)], grid_rows)
        )
    return text


def write_reports(
    rows: list[dict],
    runs: list[dict],
    config: RunConfig,
    seeds: list[int],
    out: Path,
    grid: list[GridPoint] | None = None,
    note=print,
) -> None:
    """compare.json (the rows), runs.json (every run's record without its results), compare.md and compare.png
    (where matplotlib is installed; else ``note`` says so)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "compare.json", rows)
    write_json_atomic(out / "runs.json", [{k: v for k, v in r.items() if k != "results"} for r in runs])
    write_text_atomic(out / "compare.md", markdown_table(rows, config, seeds, grid))
    draw_if_possible(comparison, rows, out / "compare.png", note=note)


__all__ = [
    "REPORT_FILES",
    "aggregate",
    "markdown_table",
    "mean_std",
    "significance_command",
    "significance_section",
    "write_reports",
]
