"""Writing a run directory: its marker, crash-safe checkpoints, the metrics log, the lock, and the
guards that keep commands from overwriting what they must not. The layout itself (file names,
reading a run back) is the library's :mod:`mitp.runs`.

A checkpoint directory is written next to its target under a temporary name and then
swapped in with renames, so a crash at any moment leaves either the old or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from filelock import FileLock, Timeout

from mitp.atomic import staging_dir, write_text_atomic
from mitp.errors import MitpError
from mitp.files import CheckpointError
from mitp.jsonio import JSONError, parse_json
from mitp.model_folder import save_model_folder
from mitp.runs import CHECKPOINTS, LOCK, MARKER, MARKER_FORMAT, OUTPUTS, STATE, Run

from .state import load_state, save_state


class RunDirError(MitpError):
    """A run directory that cannot be used as asked: locked by another run, or a damaged metrics log."""


STATE_KEYS = ("optimizer", "scheduler", "rng", "position")


def write_marker(run_dir: Path) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    marker = Path(run_dir) / MARKER
    if not marker.is_file():
        marker.write_text(json.dumps({"format": MARKER_FORMAT}) + "\n")


def clear_outputs(run_dir: Path) -> None:
    """Remove what an earlier attempt of a run wrote, so it starts over cleanly."""
    for name in OUTPUTS:  # config.yaml and labels.json are written again when the run starts
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def run_lock(run_dir: Path, main_process: bool = True):
    """Hold ``RUN_DIR/.lock`` while training, so two `mitp train` cannot share a run directory.

    The lock is an OS file lock: it is released when the process ends, crash or kill -9 included.
    Only the main process of a multi-process run takes it.
    """
    if not main_process:
        yield
        return
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(Path(run_dir) / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunDirError(
            f"{run_dir}: another `mitp train` is using this run directory "
            f"(lock {Path(run_dir) / LOCK}); wait for it to finish or use another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()


def save_checkpoint_dir(run_dir: Path, name: str, model, folder: dict, training_state: dict | None = None) -> Path:
    """``checkpoint/<name>`` as a model folder (``folder``: the keyword arguments of
    :func:`~mitp.model_folder.save_model_folder` besides the model), with the training state if given."""
    parent = Path(run_dir) / CHECKPOINTS
    parent.mkdir(parents=True, exist_ok=True)
    target, old = parent / name, parent / f"{name}.old"
    for stale in parent.glob(f".{name}.*"):  # a save killed half-way; the run's lock says no one else writes here
        shutil.rmtree(stale, ignore_errors=True)
    staging = staging_dir(parent, prefix=f".{name}.")
    try:
        save_model_folder(model, staging, **folder)
        if training_state is not None:
            save_state(training_state, staging, STATE)
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
    directory = Run(run_dir).checkpoint("last")
    if not (directory / f"{STATE}.json").is_file():
        raise CheckpointError(f"{directory / (STATE + '.json')}: no resumable checkpoint in {run_dir}")
    return directory, load_state(directory, STATE, required=STATE_KEYS)


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
        lines = [
            (number, line) for number, line in enumerate(self.path.read_bytes().splitlines(), start=1) if line.strip()
        ]
        records = []
        for i, (number, line) in enumerate(lines):
            try:
                record = parse_json(line)
            except JSONError as err:
                if i == len(lines) - 1:  # a line cut short by a crash; it will be written again
                    break
                raise RunDirError(f"{self.path}:{number}: {err}") from err
            if not (
                isinstance(record, dict)
                and isinstance(record.get("split"), str)
                and isinstance(record.get("epoch"), int)
                and isinstance(record.get("step", 0), int)
            ):
                raise RunDirError(f"{self.path}:{number}: not a metrics record (an object with split, epoch, step)")
            records.append(record)
        return records

    def truncate_after(self, completed_epochs: int, completed_steps: int | None = None) -> None:
        """Keep the lines the checkpoint had completed (epochs, and per-step diagnostics up to its
        step); later ones will be logged again."""

        def done(r: dict) -> bool:
            if r["split"] == "diagnostics" and completed_steps is not None:
                return r["step"] <= completed_steps
            return r["epoch"] <= completed_epochs

        kept = [r for r in self.records() if done(r)]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
