"""The run directory: its layout, and reading what a run left behind. The one place that knows the
file names; the trainer writes through these names (``mitp.app.train.rundir``), and the Classifier,
evaluate, predict, export, serve, robustness and compare read through :class:`Run`.

    RUN_DIR/.mitp-run              the marker that makes a directory a run (written first)
    RUN_DIR/config.yaml            the fully resolved run config
    RUN_DIR/labels.json            label names, for predict
    RUN_DIR/metrics.jsonl          one line per evaluation, per epoch of training loss, and diagnostics
    RUN_DIR/results.json           what the finished run measured
    RUN_DIR/curves.png             loss and the validation selection metric per epoch
    RUN_DIR/checkpoint/best/       trainable tensors + method.json, best on validation
    RUN_DIR/checkpoint/last/       the same + training_state.{safetensors,json}: resume
    RUN_DIR/tensorboard/ (mlruns/, wandb/, aim/)   the experiment tracker's files
    RUN_DIR/.lock                  held while a `mitp train` runs in the directory
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .files import WEIGHTS_NAME, CheckpointError, NoCheckpoint, check_fields, read_json_file

MARKER = ".mitp-run"
MARKER_FORMAT = "mitp-run-1"
CONFIG = "config.yaml"
LABELS = "labels.json"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
CURVES = "curves.png"
CHECKPOINTS = "checkpoint"
LOCK = ".lock"
TRACKER_DIRS = {"tensorboard": "tensorboard", "mlflow": "mlruns", "aim": "aim", "wandb": "wandb"}
STATE = "training_state"
# What a run writes besides its marker, config.yaml and labels.json; cleared when it starts over.
OUTPUTS = (METRICS, RESULTS, CURVES, *TRACKER_DIRS.values(), CHECKPOINTS)
# Every file or folder a run owns at its top level: no command may write over these.
RUN_FILES = (MARKER, LOCK, CONFIG, LABELS) + OUTPUTS
MANIFEST_FILES = ("train.jsonl", "val.jsonl", "test.jsonl")  # a directory holding these is a dataset

OPTIONAL_INT = (int, type(None))


class Run:
    """A run directory (finished or not), by its path."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

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
        """It has the run marker, or (runs older than the marker) a run config, a checkpoint or results,
        and no dataset manifests."""
        if (self.path / MARKER).is_file():
            return True
        if not self.config_path.is_file() or any((self.path / name).exists() for name in MANIFEST_FILES):
            return False
        return (self.path / CHECKPOINTS).is_dir() or self.results_path.is_file()

    def checkpoint(self, name: str) -> Path:
        """``checkpoint/<name>``, or the previous copy if a crash hit in the middle of a swap."""
        target = self.path / CHECKPOINTS / name
        old = target.with_name(f"{name}.old")
        return old if not target.exists() and old.exists() else target

    def has_checkpoint(self, name: str = "last") -> bool:
        return (self.checkpoint(name) / WEIGHTS_NAME).is_file()

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

    def owned_paths(self) -> tuple[set[str], set[str]]:
        """(real paths of every file the run owns, real paths of the folders it owns)."""
        files, folders = set(), set()
        for name in RUN_FILES:
            path = self.path / name
            files.add(os.path.realpath(path))
            if path.is_dir():
                folders.add(os.path.realpath(path))
                files |= {os.path.realpath(p) for p in path.rglob("*")}
        return files, folders

    # --- reading ----------------------------------------------------------------------------------
    def read_config(self) -> dict:
        """config.yaml as far as loading the run's model needs it: data, backbone, the train and eval
        sections; anything malformed is a CheckpointError naming the file and key."""
        path = self.config_path
        try:
            config = yaml.safe_load(path.read_bytes().decode("utf-8"))
        except FileNotFoundError as err:
            raise CheckpointError(f"{path}: no such file; {self.path} is not a run directory") from err
        except UnicodeDecodeError as err:
            raise CheckpointError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from err
        except (yaml.YAMLError, RecursionError) as err:
            raise CheckpointError(f"{path}: not valid YAML ({str(err)[:200]})") from err
        check_fields(
            path,
            config,
            {"data": (str, dict), "backbone": str, "train": (dict, type(None)), "eval": (dict, type(None))},
            required=("data", "backbone"),
            allow_unknown=True,
        )
        if isinstance(config["data"], dict):
            check_fields(path, config["data"], {"path": str}, required=("path",), where="data.", allow_unknown=True)
        check_fields(
            path,
            config.get("train") or {},
            {"max_text_length": OPTIONAL_INT, "image_size": OPTIONAL_INT},
            where="train.",
            allow_unknown=True,
        )
        check_fields(
            path, config.get("eval") or {}, {"threshold": (float, int, str)}, where="eval.", allow_unknown=True
        )
        return config

    def read_results(self) -> dict | None:
        """results.json of a finished run (None while it has none)."""
        if not self.results_path.is_file():
            return None
        return check_fields(self.results_path, read_json_file(self.results_path), {}, allow_unknown=True)

    def data_dir(self, config: dict | None = None) -> str:
        config = config or self.read_config()
        data = config["data"]
        return data["path"] if isinstance(data, dict) else data

    def labels_dir(self, config: dict | None = None) -> Path:
        """Where the run's labels.json is: its own copy, else its dataset's."""
        return self.path if (self.path / LABELS).is_file() else Path(self.data_dir(config))


__all__ = [
    "CHECKPOINTS",
    "CONFIG",
    "CURVES",
    "LABELS",
    "LOCK",
    "MANIFEST_FILES",
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
