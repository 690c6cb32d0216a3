"""The run directory: crash-safe checkpoints and the metrics log.

    RUN_DIR/config.yaml            fully resolved config
    RUN_DIR/metrics.jsonl          one line per evaluation, one per epoch of training loss, and
                                   diagnostics every train.log_every_steps steps
    RUN_DIR/checkpoint/last/       trainable tensors + method.json + training_state.pt (resume)
    RUN_DIR/checkpoint/best/       trainable tensors + method.json (best on validation)
    RUN_DIR/results.json, curves.png, tensorboard/

A checkpoint directory is written next to its target under a temporary name and then
swapped in with renames, so a crash at any moment leaves either the old or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, save_checkpoint

STATE_NAME = "training_state.pt"


def checkpoint_dir(run_dir: Path, name: str) -> Path:
    """``checkpoint/<name>``, or the previous copy if a crash hit in the middle of a swap."""
    target = Path(run_dir) / "checkpoint" / name
    old = target.with_name(f"{name}.old")
    if not target.exists() and old.exists():
        return old
    return target


def save_checkpoint_dir(run_dir: Path, name: str, model, training_state: dict | None = None) -> Path:
    parent = Path(run_dir) / "checkpoint"
    parent.mkdir(parents=True, exist_ok=True)
    target, old = parent / name, parent / f"{name}.old"
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}."))
    try:
        save_checkpoint(model, staging)
        if training_state is not None:
            torch.save(training_state, staging / STATE_NAME)
        for child in staging.iterdir():
            _fsync(child)
        _fsync(staging)
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
        _fsync(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _fsync(path: Path) -> None:
    """Flush a file or directory entry to disk, so a power cut cannot undo a rename."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_training_state(run_dir: Path) -> tuple[Path, dict]:
    directory = checkpoint_dir(run_dir, "last")
    path = directory / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: no resumable checkpoint in {run_dir}")
    return directory, torch.load(path, map_location="cpu", weights_only=False)


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # a line cut short by a crash; it will be written again
                    break
                raise
        return records

    def truncate_after(self, completed_epochs: int, completed_steps: int | None = None) -> None:
        """Keep the lines the checkpoint had completed (epochs, and per-step diagnostics up to its
        step); later ones will be logged again."""
        def done(r: dict) -> bool:
            if r["split"] == "diagnostics" and completed_steps is not None:
                return r["step"] <= completed_steps
            return r["epoch"] <= completed_epochs

        kept = [r for r in self.records() if done(r)]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)
