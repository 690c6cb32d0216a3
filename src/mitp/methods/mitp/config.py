"""MITP settings. Defaults follow docs/method.md; every open design choice is a switch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ...configuration import setting
from ..config import PromptLayersConfig


@dataclass
class MITPConfig(PromptLayersConfig):
    # Prompt layers (num_steps, prompt_length, text_layers, vision_layers, prompt_init_std,
    # prompt_gate) come from PromptLayersConfig, shared with deep_prompts.
    method: ClassVar[str] = "mitp"

    hub: Literal["similarity", "mean", "none"] = setting(
        "similarity", "consolidation: softmax(cosine / tau) exchange, a pooled (mean) exchange, or none")
    tau: float = setting(0.1, "temperature of the similarity hub's softmax")
    hub_norm: bool = setting(True, "a LayerNorm on each hub memory")
    vision_init: Literal["linear", "independent"] = setting(
        "linear", "first vision prompt: a linear map of the first text prompt (the paper), or its own parameter")
    tied_generators: bool = setting(True, "one text-to-vision map for the first vision prompt and every step; "
                                          "false: one per step")
    head_input: Literal["pooled", "pooled+memory"] = setting(
        "pooled", "the head reads the pooled image and text embeddings, or also the mean of the last hub memory")

    def check(self) -> None:
        super().check()
        self.require_positive("tau")
