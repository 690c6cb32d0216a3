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
        "similarity", "consolidation: softmax(cosine / tau) exchange, a pooled (mean) exchange, or none"
    )
    tau: float = setting(0.1, "temperature of the similarity hub's softmax (its starting value with learn_tau)")
    learn_tau: bool = setting(False, "learn the similarity hub's temperature (log-parametrised, starting at tau)")
    hub_context: Literal["prompts", "prompts+tokens"] = setting(
        "prompts",
        "what the hub consolidates: the prompt outputs, or also each tower's token mean at the "
        "interaction layer as one more memory slot per side (read by the other side's prompts)",
    )
    hub_dropout: float = setting(0.0, "dropout on what the hub passes from one tower to the other (training only)")
    hub_norm: bool = setting(True, "a LayerNorm on each hub memory")
    vision_init: Literal["linear", "independent"] = setting(
        "linear", "first vision prompt: a linear map of the first text prompt (the paper), or its own parameter"
    )
    tied_generators: bool = setting(
        True, "one text-to-vision map for the first vision prompt and every step; false: one per step"
    )
    head_input: Literal["pooled", "pooled+memory"] = setting(
        "pooled", "the head reads the pooled image and text embeddings, or also the mean of the last hub memory"
    )

    def check(self) -> None:
        super().check()
        self.require_positive("tau")
        self.require(0.0 <= self.hub_dropout < 1.0, "hub_dropout", f"must be in [0, 1), got {self.hub_dropout}")
