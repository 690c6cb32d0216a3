"""Train several methods (over seeds and a grid of settings) under one config; report them side by side.

Every run gets the same data, backbone, head, schedule and evaluation; only ``method``,
``seed`` and the grid's keys change. The config's ``model:`` keys go to every method (a key
a method does not know is an error naming both); keys for one method go under
``methods.<name>``. With a grid, each method's setting is chosen on the validation split
(mean over seeds of the selection metric) and the test split is reported for that setting
only. Each run is a ``mitp train`` in a fresh process (``app/launch.py``): its peak memory is
its own and a crash cannot take the others down. Finished runs are reused and interrupted ones
resumed, but only when their resolved config is the one asked for.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import queue
import shutil
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.markup import escape

from mitp.atomic import write_json_atomic, write_text_atomic
from mitp.configuration import ConfigError, flatten, parse_value
from mitp.methods import available_methods, get_method
from mitp.runs import Run

from ..launch import CliProcess
from ..threads import available_cores
from ..train.config import RunConfig, apply_overrides, load_run_config, resolve


class RunFailed(RuntimeError):
    pass


class RunConflict(ConfigError):
    """Run directories that hold runs of other settings than the ones asked for."""


# --- what to run -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One setting of the grid's keys, e.g. ``(("train.lr", 0.001),)``; empty without a grid."""

    values: tuple[tuple[str, Any], ...] = ()

    def label(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.values) or "as configured"

    def slug(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self.values)

    def as_dict(self) -> dict:
        return dict(self.values)


def parse_grid(specs: list[str]) -> list[GridPoint]:
    """``["train.lr=1e-4,1e-3", "head.dropout=0,0.1"]`` -> the cartesian product, in the order given."""
    axes = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError("--grid", f"expected KEY=V1,V2,..., got {spec!r}")
        key = key.strip()
        if key in (k for k, _ in axes):
            raise ConfigError("--grid", f"{key} is given twice")
        if key in ("method", "seed"):
            raise ConfigError("--grid", f"{key} is set by --methods/--seeds, not the grid")
        parsed = [parse_value(v.strip()) for v in values.split(",")]
        if len(set(map(repr, parsed))) != len(parsed):
            raise ConfigError("--grid", f"{key} lists a value twice")
        axes.append((key, parsed))
    if not axes:
        return [GridPoint()]
    return [GridPoint(tuple(zip([k for k, _ in axes], combo))) for combo in itertools.product(*(v for _, v in axes))]


@dataclasses.dataclass
class PlannedRun:
    method: str
    point: GridPoint
    seed: int
    config: RunConfig  # resolved, as the run's config.yaml will hold it
    run_dir: Path
    config_path: Path


def config_for_method(config: RunConfig, method: str, seed: int) -> RunConfig:
    """``config`` retargeted at ``method``/``seed``: ``model`` keys (all known to it) plus ``methods.<method>``
    (model keys, and its own ``train`` keys such as its lr)."""
    known = get_method(method).config_class.field_names()
    for key in config.model:
        if key not in known:
            raise ConfigError(
                f"model.{key}",
                f"unknown to method {method!r}; keys for one method go under `methods: {{{method}: {{...}}}}`",
            )
    return config.for_method(method, seed)


def plan(config: RunConfig, methods: list[str], seeds: list[int], grid: list[GridPoint], out: Path) -> list[PlannedRun]:
    """Every (method, grid point, seed) run, resolved and validated before anything trains."""
    for method in methods:
        get_method(method)  # unknown names fail before any training starts
    runs = []
    for method in methods:
        for point in grid:
            base = RunConfig.from_dict(apply_overrides(config.to_dict(), point.as_dict())) if point.values else config
            for seed in seeds:
                try:
                    run_config = resolve(config_for_method(base, method, seed))
                except ConfigError as err:  # name the method as well as the key
                    raise err.rekeyed(err.key, f" (method {method})") from err
                where = Path(out) / method / point.slug() if point.values else Path(out) / method
                name = "-".join(filter(None, [method, point.slug(), f"seed-{seed}"]))
                runs.append(
                    PlannedRun(
                        method, point, seed, run_config, where / f"seed-{seed}", Path(out) / "configs" / f"{name}.yaml"
                    )
                )
    return runs


# --- finished runs: reuse only what matches --------------------------------------------------
# How a run is executed, not what it learns: a finished run is reused whatever these were.
EXECUTION_KEYS = ("train.num_threads",)


def config_differences(existing: RunConfig, wanted: RunConfig) -> list[str]:
    """``["train.lr: 0.001 in the run, 0.003 asked", ...]`` for every key whose value differs."""
    have, want = flatten(existing.to_dict()), flatten(wanted.to_dict())
    return [
        f"{key}: {have.get(key, '(unset)')!r} in the run, {want.get(key, '(unset)')!r} asked"
        for key in sorted(set(have) | set(want))
        if have.get(key) != want.get(key) and key not in EXECUTION_KEYS
    ]


def check_existing(runs: list[PlannedRun], force: bool, console=None) -> None:
    """Refuse (or with ``force`` clear) run directories that hold a run of other settings."""
    conflicts = []
    for run in runs:
        saved = Run(run.run_dir).config_path
        if not saved.is_file():
            continue
        # Resolved again, so keys added since the run was trained count at their defaults.
        differences = config_differences(resolve(load_run_config(saved)), run.config)
        if not differences:
            continue
        if force:
            if console is not None:
                console.print(
                    f"[yellow]{escape(str(run.run_dir))}: other settings "
                    f"({escape('; '.join(differences))}); --force: training it again[/yellow]"
                )
            shutil.rmtree(run.run_dir)
        else:
            conflicts.append(f"{run.run_dir} ({'; '.join(differences)})")
    if conflicts:
        raise RunConflict(
            "--out",
            "these run directories hold runs of other settings than asked: "
            + " | ".join(conflicts)
            + "; use another --out, or --force to train them again",
        )


def run_one(run: PlannedRun, log: Path, console=None, env: dict | None = None, follow: bool = True) -> dict:
    """Finish ``run.run_dir`` with ``mitp train`` in a fresh process (reusing or resuming what is there).

    ``env`` is added to that process's environment; its output goes to ``log`` and, with ``follow``,
    to this process's stdout as it comes."""
    run_dir, done = run.run_dir, Run(run.run_dir)
    if done.results_path.is_file():
        if console is not None:
            console.print(
                f"[dim]{escape(str(run_dir))}: finished earlier with the same config, reusing its results[/dim]"
            )
        return done.read_results()
    if done.checkpoint("last").exists():
        args = ["--resume", str(run_dir)]
    else:
        run.config_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run.config_path, run.config.to_yaml())
        shutil.rmtree(run_dir, ignore_errors=True)  # a run that died before its first checkpoint starts over
        args = ["--config", str(run.config_path), "--out", str(run_dir)]
    process = CliProcess(["train", *args], log, env)
    code = process.wait(follow=_write_stdout if follow else None)
    if code != 0:
        raise RunFailed(f"mitp train exited with {code}: " + " | ".join(process.tail()[-3:]))
    return done.read_results()


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_comparison(
    config: RunConfig,
    methods: list[str],
    seeds: list[int],
    out: Path,
    grid=None,
    force: bool = False,
    console=None,
    jobs: int = 1,
    devices: list[str] | None = None,
) -> list[dict]:
    """Train every planned run; a failing run is recorded with its error and the others go on.

    With ``jobs`` > 1, that many runs train at once, each with its share of the cores
    (``train.num_threads`` = cores / jobs) and, given ``devices``, a device of its own. Every run's output
    goes to ``out/logs/``, and also to stdout when runs go one at a time. The records come back in the
    plan's order whatever finished first."""
    runs = plan(config, methods, seeds, grid or [GridPoint()], out)
    check_existing(runs, force, console)
    if jobs <= 1:
        return [_run_and_record(i, run, len(runs), _log_of(out, run), console) for i, run in enumerate(runs, 1)]
    threads = max(1, available_cores() // jobs)
    runs = [
        dataclasses.replace(
            run,
            config=dataclasses.replace(run.config, train=dataclasses.replace(run.config.train, num_threads=threads)),
        )
        for run in runs
    ]
    free = queue.Queue()
    for slot in range(jobs):
        free.put(devices[slot % len(devices)] if devices else None)
    if console is not None:
        console.print(
            f"{len(runs)} runs, {jobs} at a time, {threads} thread(s) each"
            + (f", devices {', '.join(devices)}" if devices else "")
            + f"; their logs in {out / 'logs'}",
            markup=False,
            highlight=False,
        )

    def job(i: int, run: PlannedRun) -> dict:
        device = free.get()
        try:
            env = {"OMP_NUM_THREADS": str(threads), **({"CUDA_VISIBLE_DEVICES": device} if device else {})}
            return _run_and_record(i, run, len(runs), _log_of(out, run), console, env=env, follow=False)
        finally:
            free.put(device)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(job, range(1, len(runs) + 1), runs))


def _log_of(out: Path, run: PlannedRun) -> Path:
    return Path(out) / "logs" / f"{run.config_path.stem}.log"


def _run_and_record(i: int, run: PlannedRun, total: int, log: Path, console=None, env=None, follow=True) -> dict:
    record = {"method": run.method, "setting": run.point.as_dict(), "seed": run.seed, "run_dir": str(run.run_dir)}
    name = escape(
        f"[{i}/{total}] {run.method}" + (f", {run.point.label()}" if run.point.values else "") + f", seed {run.seed}"
    )
    if console is not None:
        console.rule(name) if follow else console.print(f"{name}: started")
    try:
        record["results"] = run_one(run, log, console, env=env, follow=follow)
        if console is not None and not follow:
            metric = record["results"]["selection_metric"]
            console.print(f"{name}: finished, val {metric} {record['results']['val'][metric]:.4f}")
    except Exception as err:  # one broken run must not stop the comparison
        if console is not None:
            console.print(f"[red]{name} failed: {escape(str(err))}[/red]")
        record["error"] = f"{type(err).__name__}: {err}"
    return record


# --- selection and reports -----------------------------------------------------------------------
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
            done = [r["results"] for r in runs_of_setting if "results" in r]
            entry = {
                "setting": runs_of_setting[0]["setting"],
                "complete": len(done) == len(runs_of_setting),
                "seeds": [r["seed"] for r in runs_of_setting if "results" in r],
            }
            if done:
                metric = done[0]["selection_metric"]
                entry["val"] = mean_std([d["val"][metric] for d in done])
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
                "trainable_params": first["trainable_params"],
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
        f"| method | {'setting chosen on val | ' if searched else ''}trainable params | val {metric} | "
        f"test {metric} | " + "".join(f"test {k} | " for k in others) + "peak memory (MB) | train time (s) | status |",
        "|---|" + ("---|" if searched else "") + "---:|" * (5 + len(others)) + "---|",
    ]
    for r in rows:
        chosen = f"{_label(r['selected']) if r['selected'] is not None else '-'} | " if searched else ""
        if r["status"] == "failed":
            error = "; ".join(r.get("errors", {}).values()).replace("|", "/").replace("\n", " ")
            lines.append(f"| {r['method']} | {chosen}" + "- | " * (5 + len(others)) + f"failed: {error[:200]} |")
            continue
        status = r["status"] if r["status"] == "ok" else f"partial: {len(r.get('errors', {}))} run(s) failed"
        lines.append(
            f"| {r['method']} | {chosen}{r['trainable_params']:,} | {_pm(r['val'], metric, spread)} | "
            f"{_pm(r['test'], metric, spread)} | "
            + "".join(f"{_pm(r['test'], k, spread)} | " for k in others)
            + f"{r['peak_memory_mb']:.0f} | {r['train_seconds']:.1f} | {status} |"
        )
    if searched:
        lines += [
            "",
            f"## Validation {metric} per grid point ({'mean ± std over seeds; ' if spread else ''}* = chosen)",
            "",
            "| method | " + " | ".join(p.label() for p in grid) + " |",
            "|---|" + "---:|" * len(grid),
        ]
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
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] != "failed"]
    metric = ok[0]["selection_metric"] if ok else "metric"
    fig, (ax_metric, ax_params) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["method"] for r in ok]
    ax_metric.bar(
        names,
        [r["test"][metric]["mean"] for r in ok],
        yerr=[r["test"][metric]["std"] for r in ok],
        capsize=4,
        color="tab:blue",
    )
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


def write_reports(
    rows: list[dict],
    runs: list[dict],
    config: RunConfig,
    seeds: list[int],
    out: Path,
    grid: list[GridPoint] | None = None,
) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "compare.json", rows)
    write_json_atomic(out / "runs.json", [{k: v for k, v in r.items() if k != "results"} for r in runs])
    write_text_atomic(out / "compare.md", markdown_table(rows, config, seeds, grid))
    bar_chart(rows, out / "compare.png")


def compare(
    config_path,
    overrides: list[str],
    methods: list[str] | None,
    seeds: list[int],
    grid: list[str],
    out: Path,
    force: bool = False,
    console=None,
    jobs: int = 1,
    devices: list[str] | None = None,
) -> list[dict]:
    """`mitp compare`: plan, train or reuse every run, choose each method's setting on val, write and print the
    reports; returns the runs (a failed one holds its ``error``). ``methods`` None: every registered method."""
    config = load_run_config(config_path, overrides)
    methods = methods or available_methods()
    points = parse_grid(grid)
    runs = run_comparison(config, methods, seeds, out, points, force=force, console=console, jobs=jobs, devices=devices)
    rows = aggregate(runs, methods)
    write_reports(rows, runs, config, seeds, out, points)
    if console is not None:
        console.rule("comparison")
        console.print((out / "compare.md").read_text(), markup=False, highlight=False)
        console.print(f"wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}", markup=False)
        failed = [r for r in runs if "error" in r]
        if failed:
            console.print(f"[red]{len(failed)} of {len(runs)} run(s) failed[/red]")
    return runs
