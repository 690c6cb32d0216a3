"""The method registry: a method's folder registers its config and model with one call."""

from __future__ import annotations

from dataclasses import dataclass

from .base import MultimodalClassifier
from .config import ConfigError, MethodConfig


@dataclass(frozen=True)
class MethodEntry:
    name: str
    config_class: type[MethodConfig]
    model_class: type[MultimodalClassifier]


_REGISTRY: dict[str, MethodEntry] = {}


def register_method(config_class: type[MethodConfig], model_class: type[MultimodalClassifier]) -> None:
    name = config_class.method
    if not name:
        raise ValueError(f"{config_class.__name__} must set a class attribute `method`")
    if name in _REGISTRY and _REGISTRY[name].model_class is not model_class:
        raise ValueError(f"method {name!r} is already registered")
    model_class.config_class = config_class
    _REGISTRY[name] = MethodEntry(name, config_class, model_class)


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> MethodEntry:
    if name not in _REGISTRY:
        raise ConfigError("method", f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return _REGISTRY[name]


def make_config(name: str, **values) -> MethodConfig:
    """Validated config for method ``name`` (unknown keys are errors naming the key)."""
    return get_method(name).config_class.from_dict({"method": name, **values})


def config_from_dict(data: dict) -> MethodConfig:
    if "method" not in data:
        raise ConfigError("method", "missing; a method config must name its method")
    return get_method(data["method"]).config_class.from_dict(data)


def build_model(config: MethodConfig, backbone) -> MultimodalClassifier:
    """Build the registered method named by ``config.method`` on ``backbone``."""
    return get_method(config.method).model_class(config, backbone)


__all__ = [
    "MethodEntry",
    "available_methods",
    "build_model",
    "config_from_dict",
    "get_method",
    "make_config",
    "register_method",
]
