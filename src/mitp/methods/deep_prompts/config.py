"""Deep prompt tuning settings: the prompt keys MITP has, without the hub."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import PromptLayersConfig


@dataclass
class DeepPromptsConfig(PromptLayersConfig):
    # Same keys and defaults as MITP's prompt layers, so both methods prompt the same layers
    # with as many tokens; only the hub differs.
    method: ClassVar[str] = "deep_prompts"
