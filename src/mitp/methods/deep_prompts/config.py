"""Deep prompt tuning settings: MITP's layer and prompt keys, without the hub."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import TASKS, MethodConfig
from ..mitp.config import check_prompt_layers


@dataclass
class DeepPromptsConfig(MethodConfig):
    method: ClassVar[str] = "deep_prompts"
    choices: ClassVar[dict] = {"task": TASKS}

    # Same keys and defaults as MITP, so both methods prompt the same layers with as many tokens.
    num_steps: int = 6
    prompt_length: int = 8
    text_layers: list[int] | None = None
    vision_layers: list[int] | None = None
    prompt_init_std: float = 0.02

    def check(self) -> None:
        check_prompt_layers(self)
