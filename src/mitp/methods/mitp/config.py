"""MITP settings. Defaults follow docs/method.md; every open design choice is a switch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import TASKS, ConfigError, MethodConfig

HUBS = ("similarity", "mean", "none")
VISION_INITS = ("linear", "independent")
HEAD_INPUTS = ("pooled", "pooled+memory")


def check_prompt_layers(config) -> None:
    """Checks of the prompt keys shared by MITP and deep prompt tuning (layers, length, init)."""
    config.require_at_least("num_steps", 1)
    config.require_at_least("prompt_length", 1)
    config.require_positive("prompt_init_std")
    if (config.text_layers is None) != (config.vision_layers is None):
        missing = "vision_layers" if config.vision_layers is None else "text_layers"
        raise ConfigError(missing, "text_layers and vision_layers must be given together")
    for key in ("text_layers", "vision_layers"):
        layers = getattr(config, key)
        if layers is None:
            continue
        if len(layers) != config.num_steps:
            raise ConfigError(key, f"has {len(layers)} layers but num_steps is {config.num_steps}")
        if any(layer < 0 for layer in layers) or any(b <= a for a, b in zip(layers, layers[1:])):
            raise ConfigError(key, f"must be non-negative and strictly increasing, got {layers}")


@dataclass
class MITPConfig(MethodConfig):
    method: ClassVar[str] = "mitp"
    choices: ClassVar[dict] = {"task": TASKS, "hub": HUBS, "vision_init": VISION_INITS, "head_input": HEAD_INPUTS}

    # Interaction steps; ignored when text_layers/vision_layers are given (their length must match).
    num_steps: int = 6
    # Temporal prompt tokens per branch.
    prompt_length: int = 8
    # Explicit 0-based interaction layers, one per step, strictly increasing; null = last
    # num_steps text layers paired with vision layers at the same relative depth.
    text_layers: list[int] | None = None
    vision_layers: list[int] | None = None
    # Consolidation: similarity (softmax of cosine / tau), mean (pooled exchange) or none.
    hub: str = "similarity"
    tau: float = 0.1
    hub_norm: bool = True
    # First vision prompt: linear map of the first text prompt, or its own parameter.
    vision_init: str = "linear"
    # One text-to-vision map shared by the first vision prompt and every step, or one per step.
    tied_generators: bool = True
    # Head on [image embed; text embed] or also the mean of the final hub memory.
    head_input: str = "pooled"
    prompt_init_std: float = 0.02

    def check(self) -> None:
        check_prompt_layers(self)
        self.require_positive("tau")
