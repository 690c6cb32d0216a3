"""What ``mitp compare`` trains: every (method, grid point, seed) run, resolved and validated before anything
trains, and the check that run directories already under ``--out`` hold runs of the settings asked for.

Every run gets the same data, backbone, head, schedule and evaluation; only ``method``, ``seed`` and the
grid's keys change. The config's ``model:`` keys go to every method (a key a method does not know is an
error naming both); keys for one method go under ``methods.<name>``.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from pathlib import Path
from typing import Any

from rich.markup import escape

from mitp.configuration import ConfigError, flatten, parse_value
from mitp.methods import get_method
from mitp.runs import Run

from ..train.config import RunConfig, apply_overrides, load_run_config, resolve


class RunConflict(ConfigError):
    """Run directories that hold runs of other settings than the ones asked for."""


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
    """One run of the plan: where it trains, and where its config is written for ``mitp train``."""

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


# How a run is executed, not what it learns: a finished run is reused whatever these were.
EXECUTION_KEYS = ("train.num_threads", "train.log_with")


def differences(have: dict, want: dict, have_name: str = "in the run") -> list[str]:
    """``["train.lr: 0.001 in the run, 0.003 asked", ...]`` for every key of two flat dicts whose value differs,
    the execution keys apart."""
    return [
        f"{key}: {have.get(key, '(unset)')!r} {have_name}, {want.get(key, '(unset)')!r} asked"
        for key in sorted(set(have) | set(want))
        if have.get(key) != want.get(key) and key not in EXECUTION_KEYS
    ]


def config_differences(existing: RunConfig, wanted: RunConfig) -> list[str]:
    """:func:`differences` of two run configs, key by key."""
    return differences(flatten(existing.to_dict()), flatten(wanted.to_dict()))


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


__all__ = [
    "EXECUTION_KEYS",
    "GridPoint",
    "PlannedRun",
    "RunConflict",
    "check_existing",
    "config_differences",
    "config_for_method",
    "differences",
    "parse_grid",
    "plan",
]
