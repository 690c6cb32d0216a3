"""Files written whole or not at all: a temporary file in the same directory, then a rename.

Readers see the old file or the new one, never half of either. The temporary name is unique, so
two processes writing the same file (two ``mitp compare`` runs sharing an output folder) do not
trip over each other's temporary; the last rename wins.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def usual_mode(path: str | Path) -> None:
    """Give a file or folder the mode a plain ``open``/``mkdir`` would (0666 or 0777 less the umask): temporary
    files and folders are private (0600, 0700), and what they become must be readable as any output is."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)


def staging_dir(parent: str | Path, prefix: str) -> Path:
    """A fresh folder in ``parent`` to build an output in before it is renamed into place (the usual mode)."""
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    usual_mode(staging)
    return staging


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary next to ``path``, then rename it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """UTF-8 text with ``\\n`` line ends on every platform."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)

    return atomic_write(path, write)


def write_lines_atomic(path: str | Path, lines: Iterable[str]) -> Path:
    """UTF-8 text written as it comes (each string ends its own line), so it is never held whole."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)

    return atomic_write(path, write)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_json_atomic(path: str | Path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


__all__ = [
    "atomic_write",
    "staging_dir",
    "usual_mode",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_lines_atomic",
    "write_text_atomic",
]
