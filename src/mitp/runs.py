"""The run directory: its layout, and reading what a run left behind. The one place that knows the
file names; the trainer writes through these names (``mitp.app.train.rundir``), and the Classifier,
evaluate, predict, export, serve, robustness and compare read through :class:`Run`.

    RUN_DIR/.mitp-run              the marker that makes a directory a run (written first)
    RUN_DIR/config.yaml            the fully resolved run config
    RUN_DIR/metrics.jsonl          one line per evaluation, per epoch of training loss, and diagnostics
    RUN_DIR/results.json           what the finished run measured
    RUN_DIR/curves.png             loss and the validation selection metric per epoch
    RUN_DIR/checkpoint/best/       a model folder (mitp.files: config.json + model.safetensors), best on validation
    RUN_DIR/checkpoint/last/       the same + training_state.{safetensors,json}: resume
    RUN_DIR/tensorboard/ (mlruns/, wandb/, aim/)   the experiment tracker's files
    RUN_DIR/.lock                  held while a `mitp train` runs in the directory
"""

from __future__ import annotations

import os
from pathlib import Path

from .files import WEIGHTS_FILE, CheckpointError, NoCheckpoint, read_json_file

MARKER = ".mitp-run"
MARKER_FORMAT = "mitp-run-1"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
CURVES = "curves.png"
CHECKPOINTS = "checkpoint"
LOCK = ".lock"
TRACKER_DIRS = {"tensorboard": "tensorboard", "mlflow": "mlruns", "aim": "aim", "wandb": "wandb"}
STATE = "training_state"
# What a run writes besides its marker and config.yaml; cleared when it starts over.
OUTPUTS = (METRICS, RESULTS, CURVES, *TRACKER_DIRS.values(), CHECKPOINTS)
# Every file or folder a run owns at its top level: no command may write over these.
RUN_FILES = (MARKER, LOCK, CONFIG) + OUTPUTS


class Run:
    """A run directory (finished or not), by its path."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    def is_run(self) -> bool:
        return (self.path / MARKER).is_file()

    def checkpoint(self, name: str) -> Path:
        """``checkpoint/<name>``, or the previous copy if a crash hit in the middle of a swap."""
        target = self.path / CHECKPOINTS / name
        old = target.with_name(f"{name}.old")
        return old if not target.exists() and old.exists() else target

    def has_checkpoint(self, name: str = "last") -> bool:
        return (self.checkpoint(name) / WEIGHTS_FILE).is_file()

    def best_checkpoint(self) -> Path:
        if not self.has_checkpoint("best"):
            raise NoCheckpoint(f"{self.path}: no best checkpoint yet (training has not evaluated)")
        return self.checkpoint("best")

    def finished_work(self) -> list[str]:
        """What of the run starting over would delete: its best checkpoint and its results."""
        return [
            name
            for name, there in (
                ("checkpoint/best", self.checkpoint("best").is_dir()),
                ("results.json", self.results_path.is_file()),
            )
            if there
        ]

    # --- reading ----------------------------------------------------------------------------------
    def read_results(self) -> dict | None:
        """results.json of a finished run (None while it has none)."""
        if not self.results_path.is_file():
            return None
        results = read_json_file(self.results_path)
        if not isinstance(results, dict):
            raise CheckpointError(f"{self.results_path}: must be a mapping, got {type(results).__name__}")
        return results


def first_repeat(named: list[tuple[str, str]]) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """In ``(label, path)`` pairs, the first path that names the same directory as an earlier one (however it is
    spelled: ``runs/x``, ``runs/./x/``, a link), as ``(earlier pair, this pair)``; None when every path is new."""
    seen: dict[str, tuple[str, str]] = {}
    for label, path in named:
        real = os.path.realpath(path)
        if real in seen:
            return seen[real], (label, path)
        seen[real] = (label, path)
    return None


__all__ = [
    "first_repeat",
    "CHECKPOINTS",
    "CONFIG",
    "CURVES",
    "LOCK",
    "MARKER",
    "MARKER_FORMAT",
    "METRICS",
    "OUTPUTS",
    "RESULTS",
    "RUN_FILES",
    "Run",
    "STATE",
    "TRACKER_DIRS",
]
