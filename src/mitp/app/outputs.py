"""Guards on what a command writes: never over one of its own inputs, never into a run's files.

No torch here: ``mitp predict --runtime onnx`` uses them where torch is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

from mitp.runs import Run


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (named in the message)."""


def check_outputs(outputs, inputs=(), runs=()) -> None:
    """Refuse to write any of ``outputs`` over one of the command's ``inputs`` or over a file owned by one
    of ``runs`` (config, checkpoints, metrics, results: everything a run directory's marker covers)."""
    taken = {os.path.realpath(p): f"it is an input of this command ({p})" for p in inputs if p and Path(p).exists()}
    folders = {}
    for run in runs:
        if Run(run).is_run():
            files, owned_folders = Run(run).owned_paths()
            taken.update({path: f"it belongs to the run {run}" for path in files})
            folders.update({folder: f"it is inside the run {run}'s {Path(folder).name}/" for folder in owned_folders})
    for out in outputs:
        real = os.path.realpath(out)
        reason = taken.get(real) or next(
            (why for folder, why in folders.items() if real.startswith(folder + os.sep)), None
        )
        if reason:
            raise RunDirError(f"refusing to write {out}: {reason}; choose another output path")


__all__ = ["RunDirError", "check_outputs"]
