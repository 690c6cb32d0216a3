"""Train several methods (and seeds) under one config and report them side by side.

Every run gets the same data, backbone, schedule and evaluation; only ``method`` and
``seed`` change. The config's ``model:`` keys go to every method whose config has them,
so ``deep_prompts`` prompts the same layers with as many tokens as MITP. Each run is a
``mitp train`` subprocess: its peak memory is its own and a crash cannot take the others
down. Runs that finished are reused and interrupted ones resumed, so a comparison can be
restarted.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from .methods import get_method
from .train.config import RunConfig
from .train.reports import write_json_atomic


def method_config_for(config: RunConfig, method: str, seed: int) -> RunConfig:
    """``config`` retargeted at ``method``/``seed``, keeping the model keys that method understands."""
    known = get_method(method).config_class.field_names()
    model = {k: v for k, v in config.model.items() if k in known}
    return dataclasses.replace(config, method=method, seed=seed, model=model)


class RunFailed(RuntimeError):
    pass


def run_one(config: RunConfig, run_dir: Path, config_path: Path, console=None) -> dict:
    """Finish ``run_dir`` with ``mitp train`` in a subprocess (reusing or resuming what is there)."""
    if (run_dir / "results.json").is_file():
        if console is not None:
            console.print(f"[dim]{run_dir}: finished earlier, reusing its results[/dim]")
        return json.loads((run_dir / "results.json").read_text())
    if (run_dir / "checkpoint" / "last").exists():
        args = ["--resume", str(run_dir)]
    else:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(config.to_yaml())
        shutil.rmtree(run_dir, ignore_errors=True)  # a run that died before its first checkpoint starts over
        args = ["--config", str(config_path), "--out", str(run_dir)]
    process = subprocess.Popen([sys.executable, "-m", "mitp", "train", *args], stderr=subprocess.PIPE, text=True)
    tail = collections.deque(maxlen=20)
    for line in process.stderr:  # pass stderr through, keeping its end for the report
        sys.stderr.write(line)
        tail.append(line.rstrip())
    if process.wait() != 0:
        raise RunFailed(f"mitp train exited with {process.returncode}: " + " | ".join(list(tail)[-3:]))
    return json.loads((run_dir / "results.json").read_text())


def run_comparison(config: RunConfig, methods: list[str], seeds: list[int], out: Path, console=None) -> list[dict]:
    """Train every (method, seed); a failing run is recorded with its error and the others go on."""
    for method in methods:
        get_method(method)  # unknown names fail before any training starts
    runs = []
    for method in methods:
        for seed in seeds:
            run_dir = Path(out) / method / f"seed-{seed}"
            if console is not None:
                console.rule(f"{method}, seed {seed}")
            try:
                config_path = Path(out) / "configs" / f"{method}-seed-{seed}.yaml"
                results = run_one(method_config_for(config, method, seed), run_dir, config_path, console)
                runs.append({"method": method, "seed": seed, "run_dir": str(run_dir), "results": results})
            except Exception as err:  # one broken method must not stop the comparison
                if console is not None:
                    console.print(f"[red]{method} seed {seed} failed: {err}[/red]")
                runs.append({"method": method, "seed": seed, "run_dir": str(run_dir),
                             "error": f"{type(err).__name__}: {err}"})
    return runs


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def aggregate(runs: list[dict], methods: list[str]) -> list[dict]:
    """One row per method: metric mean and std over seeds, cost figures, or the error."""
    rows = []
    for method in methods:
        done = [r for r in runs if r["method"] == method and "results" in r]
        failed = [r for r in runs if r["method"] == method and "error" in r]
        row = {"method": method, "seeds": [r["seed"] for r in done]}
        if failed:
            row["errors"] = {str(r["seed"]): r["error"] for r in failed}
        if not done:
            rows.append({**row, "status": "failed", "trainable_params": None, "val": None, "test": None,
                         "peak_memory_mb": None, "train_seconds": None})
            continue
        results = [r["results"] for r in done]
        first = results[0]
        row.update({
            "status": "ok" if not failed else "partial",
            "trainable_params": first["trainable_params"],
            "total_params": first["total_params"],
            "selection_metric": first["selection_metric"],
            "val": {k: _mean_std([r["val"][k] for r in results]) for k in first["val"]},
            "test": {k: _mean_std([r["test"][k] for r in results]) for k in first["test"]},
            "peak_memory_mb": statistics.fmean(r["peak_memory_mb"] for r in results),
            "peak_memory_kind": first["peak_memory_kind"],
            "train_seconds": statistics.fmean(r["train_seconds"] for r in results),
        })
        rows.append(row)
    return rows


def _pm(stat: dict | None, key: str) -> str:
    if not stat or key not in stat:
        return "-"
    return f"{stat[key]['mean']:.4f} ± {stat[key]['std']:.4f}"


def markdown_table(rows: list[dict], config: RunConfig, seeds: list[int]) -> str:
    metric = next((r["selection_metric"] for r in rows if r.get("selection_metric")), "metric")
    lines = [
        f"# Comparison on `{config.data}` with `{config.backbone}`",
        "",
        f"Seeds {', '.join(map(str, seeds))}; mean ± std over seeds; {config.train.epochs} epochs, batch "
        f"{config.train.batch_size}, lr {config.train.lr}. Test metrics come from each run's best "
        f"validation checkpoint.",
        "",
        f"| method | trainable params | val {metric} | test {metric} | peak memory (MB) | train time (s) | status |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["status"] == "failed":
            error = "; ".join(r.get("errors", {}).values()).replace("|", "/").replace("\n", " ")
            lines.append(f"| {r['method']} | - | - | - | - | - | failed: {error[:200]} |")
            continue
        status = r["status"] if r["status"] == "ok" else f"partial: {len(r.get('errors', {}))} seed(s) failed"
        lines.append(f"| {r['method']} | {r['trainable_params']:,} | {_pm(r['val'], metric)} | "
                     f"{_pm(r['test'], metric)} | {r['peak_memory_mb']:.0f} | {r['train_seconds']:.1f} | {status} |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] != "failed"]
    metric = ok[0]["selection_metric"] if ok else "metric"
    fig, (ax_metric, ax_params) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["method"] for r in ok]
    ax_metric.bar(names, [r["test"][metric]["mean"] for r in ok], yerr=[r["test"][metric]["std"] for r in ok],
                  capsize=4, color="tab:blue")
    ax_metric.set(title=f"test {metric} (mean ± std over seeds)", ylabel=metric)
    ax_params.bar(names, [r["trainable_params"] for r in ok], color="tab:orange")
    ax_params.set(title="trainable parameters", yscale="log")
    for ax in (ax_metric, ax_params):
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_reports(rows: list[dict], runs: list[dict], config: RunConfig, seeds: list[int], out: Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "compare.json", rows)
    write_json_atomic(out / "runs.json", [{k: v for k, v in r.items() if k != "results"} for r in runs])
    (out / "compare.md").write_text(markdown_table(rows, config, seeds))
    bar_chart(rows, out / "compare.png")
