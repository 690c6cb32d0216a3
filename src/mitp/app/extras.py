"""Optional dependencies, one extra each (pyproject.toml): a command that needs a missing one says which extra
to install and exits 2, before any work."""

from __future__ import annotations

import importlib.util

from .errors import UserError

# extra -> the modules it brings
EXTRAS = {
    "serve": ("fastapi", "uvicorn", "multipart"),
    "plots": ("matplotlib",),
    "sweep": ("optuna",),
    "hf": ("datasets",),
    "onnx": ("onnx", "onnxruntime", "tokenizers"),
    "trackers": ("tensorboard",),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that are not installed."""
    return [module for module in EXTRAS[extra] if importlib.util.find_spec(module) is None]


def require(extra: str, what: str) -> None:
    """A UserError naming the extra when ``what`` (a command, an option) cannot run without it."""
    lacking = missing(extra)
    if lacking:
        raise UserError(f"{what} needs {', '.join(lacking)}: pip install 'mitp[{extra}]'")


__all__ = ["EXTRAS", "missing", "require"]
