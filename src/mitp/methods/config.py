"""Method configs: validated dataclasses that save to and load from JSON.

Every method's config subclasses :class:`MethodConfig` and sets a class attribute
``method``. Unknown keys and invalid values raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

from ..configuration import ConfigError, ValidatedConfig, parse_overrides, parse_value

TASKS = ("single_label", "multi_label")


@dataclasses.dataclass
class MethodConfig(ValidatedConfig):
    """Fields shared by every method. Subclasses add their own and a ``method`` name."""

    method: ClassVar[str] = ""
    choices: ClassVar[dict[str, tuple]] = {"task": TASKS}

    num_classes: int = 2
    task: str = "single_label"

    def check(self) -> None:
        """Method-specific checks; subclasses extend and raise ConfigError naming the key."""

    def __post_init__(self):
        super().__post_init__()
        self.require_at_least("num_classes", 1)
        self.require(self.task != "single_label" or self.num_classes >= 2, "num_classes",
                     "a single-label task needs at least 2 classes")

    def to_dict(self) -> dict:
        return {"method": self.method, **dataclasses.asdict(self)}

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: dict | None) -> "MethodConfig":
        data = dict(data or {})
        name = data.pop("method", cls.method)
        if name != cls.method:
            raise ConfigError("method", f"config is for method {name!r}, not {cls.method!r}")
        for key in data:
            if key not in cls.field_names():
                raise ConfigError(key, f"unknown key for method {cls.method!r}; known keys: "
                                       f"{', '.join(sorted(cls.field_names()))}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> "MethodConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **overrides) -> "MethodConfig":
        """A new validated config with ``overrides`` applied (unknown keys are errors)."""
        return type(self).from_dict({**self.to_dict(), **overrides})


__all__ = ["ConfigError", "MethodConfig", "TASKS", "parse_overrides", "parse_value"]
