"""The one guard on what a command writes: every ``--out`` passes here before the work starts.

A command names the files it will write and the folders it will fill, and the paths it reads. Refused,
with a message naming the path and why:

- a path that is one of the command's inputs, or lies inside a folder given as an input;
- a path that a run directory, a model folder or a dataset owns (its config, weights, manifests, ...),
  found from the path's own folders, whoever the command thinks it is writing for;
- a folder that is a run, a model folder or a dataset, when the command makes a folder of another kind
  there (``creates``), or of the same kind without ``replace`` (``prepare --overwrite``). A command that
  only adds its own files to a folder (robustness into a run) creates nothing: its files are checked;
- a file where a folder is, and a folder where a file is.

No torch here: ``mitp predict --runtime onnx`` uses it where torch is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mitp.data.manifest import DATASET_FILES, SPLITS
from mitp.errors import MitpError
from mitp.files import CONFIG_FILE, MODEL_FILES, WEIGHTS_FILE
from mitp.runs import LOCK, MARKER, RUN_FILES, Run


class OutputError(MitpError):
    """An output path a command must not write (named in the message)."""


def folder_kind(path: Path) -> str | None:
    """``run``, ``model folder`` or ``dataset`` when ``path`` is a folder of that kind, else None."""
    if not path.is_dir():
        return None
    if Run(path).is_run():
        return "run"
    if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return "model folder"
    if any((path / f"{split}.jsonl").is_file() for split in SPLITS):
        return "dataset"
    return None


OWNED = {"run": RUN_FILES, "model folder": MODEL_FILES, "dataset": DATASET_FILES}


def owner_of(path: str | os.PathLike) -> tuple[str, Path] | None:
    """The (kind, folder) of the outermost run, model folder or dataset above ``path`` that owns it (a name the
    folder owns at its top level, or anything under one), else None: a run, not its checkpoint's model folder."""
    real = Path(os.path.realpath(path))
    owner = None
    for parent in real.parents:
        kind = folder_kind(parent)
        if kind and real.relative_to(parent).parts[0] in OWNED[kind]:
            owner = (kind, parent)
    return owner


def check_outputs(
    files: Iterable = (),
    folders: Iterable = (),
    inputs: Iterable = (),
    flag: str = "--out",
    creates: str | None = None,
    replace: bool | None = None,
    own_runs: Iterable = (),
) -> None:
    """Refuse (an :class:`OutputError` naming ``flag``) to write ``files`` or fill ``folders`` where the module's
    docstring says. ``creates``: the kind of folder the command makes of ``folders``; ``replace``: whether it
    may replace one of that kind (``--overwrite`` given: True; not given: False; the command has no such option:
    None). ``own_runs``: the runs the command analyses, the only runs it may add its own files to."""
    taken = {os.path.realpath(given): f"it is an input of this command ({given})" for given in inputs
             if given and os.path.exists(given)}  # fmt: skip
    runs = {os.path.realpath(run) for run in own_runs}
    seen = set()

    def refuse(path, why: str):
        raise OutputError(f"{flag}: refusing to write {path}: {why}; choose another output path")

    def check(path, is_folder: bool) -> None:
        real = os.path.realpath(path)
        if real in seen:
            refuse(path, "it is named twice")
        seen.add(real)
        for source, why in taken.items():
            if real == source or real.startswith(source.rstrip(os.sep) + os.sep):
                refuse(path, why)
        file_above = next((p for p in Path(real).parents if p.exists() and not p.is_dir()), None)
        if file_above is not None:
            refuse(path, f"{file_above} is a file, not a folder")
        if is_folder and os.path.exists(real) and not os.path.isdir(real):
            refuse(path, "it exists and is not a directory")
        if not is_folder and os.path.isdir(real):
            refuse(path, "it is a directory; give a file path")
        kind = folder_kind(Path(real)) if is_folder and creates else None
        if kind and (kind != creates or not replace):
            refuse(
                path,
                f"it holds a {kind}" + (" (--overwrite replaces it)" if kind == creates and replace is False else ""),
            )
        owner = owner_of(real)
        if owner is not None and not (replace and owner[0] == creates):
            refuse(path, f"it belongs to the {owner[0]} {owner[1]}")
        if creates in OWNED and not is_folder and owner is None and os.path.exists(real):
            refuse(path, f"it exists and is not part of a {creates}: a file of yours")
        run = next((p for p in [Path(real), *Path(real).parents] if folder_kind(p) == "run"), None)
        if run is not None and str(run) not in runs and not (creates == "run" and str(run) == real):
            refuse(path, f"it is inside the run {run}, which this command does not analyse")

    for folder in folders:
        check(folder, is_folder=True)
    for file in files:
        check(file, is_folder=False)


def check_run_output(run_dir: str | os.PathLike, overwrite: bool) -> None:
    """Where a new run may go: a missing or empty folder, or over a run with ``overwrite``; never into a folder of
    other files (a dataset, a home directory), nor into what another run, model folder or dataset owns."""
    run_dir = Path(run_dir)
    kind = folder_kind(run_dir)
    if kind == "run" and not overwrite:
        raise OutputError(
            f"{run_dir} already holds a run; use --resume {run_dir}, another --out, or --overwrite to "
            "train it again from the beginning"
        )
    if run_dir.is_dir() and kind != "run" and any(e.name != LOCK for e in run_dir.iterdir()):
        holds = f" (it holds a {kind})" if kind else ""
        raise OutputError(
            f"{run_dir}: not empty and not a mitp run directory{holds}, no {MARKER} marker; refusing to write a "
            "run into it (--overwrite only ever replaces runs), choose another --out"
        )
    check_outputs(folders=[run_dir], creates="run", replace=overwrite)


__all__ = ["OutputError", "check_outputs", "check_run_output", "folder_kind", "owner_of"]
