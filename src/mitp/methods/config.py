"""Validated method configs that save to and load from JSON.

Every method's config is a dataclass subclassing :class:`MethodConfig`. Unknown keys
and invalid values raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

TASKS = ("single_label", "multi_label")


class ConfigError(ValueError):
    """A config key that is unknown or holds an invalid value."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def parse_value(text: str) -> Any:
    """Parse a ``--set key=value`` value with YAML rules (numbers, booleans, lists, null)."""
    return yaml.safe_load(text) if text != "" else ""


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Coerce ``value`` to ``annotation`` where lossless (int -> float, list -> tuple); else raise."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            try:
                return _check_type(key, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(key, f"{value!r} is not a valid {_type_name(annotation)}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(key, f"expected null, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        return [_check_type(key, v, item_type) for v in value]
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, bool):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(key, f"expected {_type_name(annotation)}, got {value!r}")
    return value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


@dataclass
class MethodConfig:
    """Fields shared by every method. Subclasses add their own and a ``method`` name."""

    method: ClassVar[str] = ""
    # choices: field name -> allowed values; checked by validate()
    choices: ClassVar[dict[str, tuple]] = {"task": TASKS}

    num_classes: int = 2
    task: str = "single_label"

    def __post_init__(self):
        self.validate()

    # --- validation ------------------------------------------------------------
    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _check_type(f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
            allowed = self.choices.get(f.name)
            if allowed is not None and value not in allowed:
                raise ConfigError(f.name, f"{value!r} is not one of {', '.join(map(repr, allowed))}")
        if self.num_classes < 1:
            raise ConfigError("num_classes", f"must be >= 1, got {self.num_classes}")
        if self.task == "single_label" and self.num_classes < 2:
            raise ConfigError("num_classes", "a single-label task needs at least 2 classes")
        self.check()

    def check(self) -> None:
        """Method-specific checks; raise ConfigError naming the key."""

    # --- (de)serialisation ---------------------------------------------------------
    def to_dict(self) -> dict:
        return {"method": self.method, **dataclasses.asdict(self)}

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: dict) -> "MethodConfig":
        data = dict(data)
        name = data.pop("method", cls.method)
        if name != cls.method:
            raise ConfigError("method", f"config is for method {name!r}, not {cls.method!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(key, f"unknown key for method {cls.method!r}; known keys: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> "MethodConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **overrides) -> "MethodConfig":
        """A new validated config with ``overrides`` applied (unknown keys are errors)."""
        return type(self).from_dict({**self.to_dict(), **overrides})


def parse_overrides(pairs: list[str]) -> dict:
    """Turn ``["a=1", "b=[2,3]"]`` into ``{"a": 1, "b": [2, 3]}``."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(pair, "expected key=value")
        overrides[key.strip()] = parse_value(value)
    return overrides


__all__ = ["ConfigError", "MethodConfig", "TASKS", "parse_overrides", "parse_value", "field"]
