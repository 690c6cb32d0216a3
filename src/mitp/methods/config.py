"""Method configs: validated dataclasses that save to and load from JSON.

Every method's config subclasses :class:`MethodConfig` and sets a class attribute
``method``. Unknown keys and invalid values raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from ..configuration import ConfigError, ValidatedConfig, parse_overrides, parse_value, setting
from ..data.manifest import TASKS
from .head import HeadConfig

Task = Literal["single_label", "multi_label"]


@dataclasses.dataclass
class MethodConfig(ValidatedConfig):
    """Fields shared by every method. Subclasses add their own and a ``method`` name."""

    method: ClassVar[str] = ""

    num_classes: int = setting(2, "classes the head predicts (from the dataset's labels.json in a run)")
    task: Task = setting(
        "single_label",
        "single_label: softmax cross-entropy; multi_label: sigmoid BCE per class (from labels.json in a run)",
    )
    head: HeadConfig = setting(
        default_factory=HeadConfig, help="the classification head, the same for every method (a run config's `head:`)"
    )

    def check(self) -> None:
        """Method-specific checks; subclasses extend and raise ConfigError naming the key."""

    def __post_init__(self):
        if isinstance(self.head, dict):
            self.head = HeadConfig.from_dict(self.head)
        super().__post_init__()
        self.require_at_least("num_classes", 1)
        self.require(
            self.task != "single_label" or self.num_classes >= 2,
            "num_classes",
            "a single-label task needs at least 2 classes",
        )

    def to_dict(self) -> dict:
        return {"method": self.method, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict | None) -> MethodConfig:
        data = dict(data or {})
        name = data.pop("method", cls.method)
        if name != cls.method:
            raise ConfigError("method", f"config is for method {name!r}, not {cls.method!r}")
        for key in data:
            if key not in cls.field_names():
                hint = (
                    f"; the head is configured for every method under `head:` (head.{key})"
                    if key in HeadConfig.field_names()
                    else ""
                )
                raise ConfigError(
                    key,
                    f"unknown key for method {cls.method!r}{hint}; known keys: {', '.join(sorted(cls.field_names()))}",
                )
        return cls(**data)

    def replace(self, **overrides) -> MethodConfig:
        """A new validated config with ``overrides`` applied (unknown keys are errors)."""
        return type(self).from_dict({**self.to_dict(), **overrides})


@dataclasses.dataclass
class PromptLayersConfig(MethodConfig):
    """The keys every prompt method shares: where prompts go, how long, how they start."""

    num_steps: int = setting(6, "prompted (interaction) steps; with text_layers/vision_layers their length")
    prompt_length: int = setting(8, "prompt tokens per tower and step")
    text_layers: list[int] | None = setting(
        None, "0-based prompted text layers, one per step, strictly increasing; null: the last num_steps layers"
    )
    vision_layers: list[int] | None = setting(
        None, "0-based prompted vision layers, one per step; null: at the same relative depth as the text layers"
    )
    prompt_init_std: float = setting(0.02, "std of the Gaussian init of the prompts")
    prompt_gate: bool = setting(
        True,
        "zero-initialised gate per head on what the tokens read from the prompts, "
        "so the method starts exactly at the frozen towers; false: one joint softmax",
    )
    missing_aware: bool | None = setting(
        None,
        "a learned prompt per missing case (complete, no image, no text, neither) joins the prompts, and "
        "MITP's hub takes nothing from an absent side; null: on when the run's data can miss a modality "
        "(data.allow_missing, train.missing or eval.missing)",
    )

    def check(self) -> None:
        self.require_at_least("num_steps", 1)
        self.require_at_least("prompt_length", 1)
        self.require_positive("prompt_init_std")
        if (self.text_layers is None) != (self.vision_layers is None):
            missing = "vision_layers" if self.vision_layers is None else "text_layers"
            raise ConfigError(missing, "text_layers and vision_layers must be given together")
        for key in ("text_layers", "vision_layers"):
            layers = getattr(self, key)
            if layers is None:
                continue
            if len(layers) != self.num_steps:
                raise ConfigError(key, f"has {len(layers)} layers but num_steps is {self.num_steps}")
            if any(layer < 0 for layer in layers) or any(b <= a for a, b in zip(layers, layers[1:])):
                raise ConfigError(key, f"must be non-negative and strictly increasing, got {layers}")


__all__ = ["ConfigError", "HeadConfig", "MethodConfig", "PromptLayersConfig", "TASKS", "parse_overrides", "parse_value"]
