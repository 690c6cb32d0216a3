"""Methods: one sub-package per method.

Each method lives in its own sub-package ``mitp/methods/<name>/`` with ``config.py``
and ``model.py``; its ``__init__.py`` makes one :func:`~mitp.methods.registry.register_method` call.
Sub-packages are discovered here, so adding a method touches one folder.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import ClassifierOutput, MultimodalClassifier
from .config import ConfigError, MethodConfig, parse_overrides
from .registry import (
    MethodEntry,
    available_methods,
    build_model,
    config_from_dict,
    get_method,
    make_config,
    register_method,
)


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            importlib.import_module(f"{__name__}.{info.name}")


_discover()

__all__ = [
    "ClassifierOutput",
    "ConfigError",
    "MethodConfig",
    "MethodEntry",
    "MultimodalClassifier",
    "available_methods",
    "build_model",
    "config_from_dict",
    "get_method",
    "make_config",
    "parse_overrides",
    "register_method",
]
