"""MITP settings. Defaults follow docs/method.md; every open design choice is a switch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import TASKS, PromptLayersConfig

HUBS = ("similarity", "mean", "none")
VISION_INITS = ("linear", "independent")
HEAD_INPUTS = ("pooled", "pooled+memory")


@dataclass
class MITPConfig(PromptLayersConfig):
    # Prompt layers (num_steps, prompt_length, text_layers, vision_layers, prompt_init_std,
    # prompt_gate) come from PromptLayersConfig, shared with deep_prompts.
    method: ClassVar[str] = "mitp"
    choices: ClassVar[dict] = {"task": TASKS, "hub": HUBS, "vision_init": VISION_INITS, "head_input": HEAD_INPUTS}

    # Consolidation: similarity (softmax of cosine / tau), mean (pooled exchange) or none.
    hub: str = "similarity"
    tau: float = 0.1
    hub_norm: bool = True
    # First vision prompt: linear map of the first text prompt, or its own parameter.
    vision_init: str = "linear"
    # One text-to-vision map shared by the first vision prompt and every step, or one per step.
    tied_generators: bool = True
    # Head on the pooled image and text embeddings, or also the mean of the final hub memory.
    head_input: str = "pooled"

    def check(self) -> None:
        super().check()
        self.require_positive("tau")
