"""Deep prompt tuning (VPT-deep style) on both towers, with no exchange between them.

Each tower gets a fresh trainable prompt at each of MITP's interaction layers; the
layer runs on [tokens; prompts] and the prompt outputs are discarded (the next
prompted layer inserts its own new prompts). Extraction layers in between run on
the plain sequence, as in MITP. With ``prompt_gate`` (default) what the tokens read
from the prompts is gated from zero, as in MITP. Comparing with MITP isolates what
the memory hub adds: same layers, same prompt length, same gates, same head. Missing-aware
(``missing_aware``): a learned prompt per missing case is added to every step's prompts.
"""

from __future__ import annotations

from torch import nn

from ...backbones import Backbone, TowerState
from ..base import Features
from ..layers import (
    MissingCasePrompts,
    PromptedClassifier,
    batched,
    embedding,
    interaction_layers,
    prompt_list,
    prompt_norm_diagnostics,
    run_prompted,
)
from .config import DeepPromptsConfig


class DeepPrompts(PromptedClassifier):
    """Independent deep prompts per tower at MITP's interaction layers, the shared head."""

    config: DeepPromptsConfig

    def __init__(self, config: DeepPromptsConfig, backbone: Backbone):
        text, vision = backbone.text, backbone.vision
        super().__init__(config, backbone, interaction_layers(config, text.num_layers, vision.num_layers))
        steps, length, std = len(self.text_layers), config.prompt_length, config.prompt_init_std
        self.text_prompts = prompt_list(steps, length, text.width, std)
        self.vision_prompts = prompt_list(steps, length, vision.width, std)
        self.add_gates()
        self.reads_modality_mask = bool(config.missing_aware)
        self.missing_text = self.missing_vision = None
        if config.missing_aware:
            self.missing_text = nn.ModuleList(MissingCasePrompts(length, text.width) for _ in range(steps))
            self.missing_vision = nn.ModuleList(MissingCasePrompts(length, vision.width) for _ in range(steps))
        self.head = self.build_head({"image": vision.embed_dim, "text": text.embed_dim})

    def prefix_features(self, t_state: TowerState, v_state: TowerState, modality_mask=None) -> Features:
        text, vision, steps = self.backbone.text, self.backbone.vision, len(self.text_layers)
        t_prompts, v_prompts = self.text_prompts, self.vision_prompts
        if self.missing_text is not None:  # each sample's prompts: the step's own plus its case's
            batch = t_state.hidden.shape[0]
            t_prompts = [batched(p, batch) + m(modality_mask, batch) for p, m in zip(t_prompts, self.missing_text)]
            v_prompts = [batched(p, batch) + m(modality_mask, batch) for p, m in zip(v_prompts, self.missing_vision)]
        t_state = run_prompted(
            text, t_state, self.text_layers, t_prompts, self.text_gates, self.trace_records("text", steps)
        )
        v_state = run_prompted(
            vision, v_state, self.vision_layers, v_prompts, self.vision_gates, self.trace_records("vision", steps)
        )
        return {"image": embedding(vision, v_state), "text": embedding(text, t_state)}

    def diagnostics(self) -> dict[str, float]:
        return {
            **super().diagnostics(),
            **prompt_norm_diagnostics("prompt_norm/text", self.text_prompts),
            **prompt_norm_diagnostics("prompt_norm/vision", self.vision_prompts),
        }
