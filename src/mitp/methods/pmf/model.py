"""PMF: interactive prompting at the top layers of the two frozen towers (Li et al., CVPR 2023).

Layers below the first fusion layer run once, without gradient. The last
``n_fusion_layers`` layers of each tower are fusion layers; fusion step k pairs
text layer L_t - n + k with vision layer L_v - n + k, and each tower has its own
M-token query prompt Q, query-context prompt C and fusion-context prompt F there.
Every fusion step runs each frozen layer twice, always through ``Tower.run_layer``:

1. Query pass, both towers: layer l runs on [tokens_A; Q_A; C_A]. Only the outputs
   at Q_A's positions are kept (the query q_A); the sequence outputs and C_A's
   outputs are discarded. The queries attend to the whole (unmasked) sequence, C_A
   gives them extra room to read it.
2. Fusion pass, both towers, after both query passes (the translation crosses
   towers): the same layer l runs again on the same input tokens_A, now with
   [MLP_{B->A}(q_B); F_A] appended, where MLP_{B->A} is Linear(d_B, h) -> ReLU ->
   Linear(h, d_A), one per fusion layer and direction. Only the sequence outputs are
   kept and go on to the next layer; the prompt outputs are discarded.

C_A takes no part in the fusion pass, as in the public PMF code: its role is the query
pass. With ``prompt_gate`` (default) what the tokens read from the fusion pass's prompts
is gated from zero, one gate per fusion layer and head, so PMF starts at the frozen
towers. The pooled, projected embeddings of both towers go to the shared head (the
paper's mean of two linear heads is ``head.fusion: mean_of_linear``). All three prompt
types, both translators, the gates and the head train; the towers stay frozen. (The
public PMF file never sets requires_grad on its fusion-context prompts; here they are
ordinary parameters and get gradient.)
"""

from __future__ import annotations

import torch
from torch import nn

from ...backbones import Backbone, TowerState
from ..base import Features
from ..config import ConfigError
from ..layers import PromptedClassifier, batched, embedding, step_gate, step_record, translator
from .config import PMFConfig


class FusionPrompts(nn.Module):
    """One tower's three prompts at one fusion layer, each (M, width), N(0, std) init."""

    def __init__(self, length: int, width: int, std: float):
        super().__init__()
        self.query = nn.Parameter(torch.randn(length, width) * std)
        self.query_context = nn.Parameter(torch.randn(length, width) * std)
        self.fusion_context = nn.Parameter(torch.randn(length, width) * std)


class PMF(PromptedClassifier):
    """Prompt-based Multimodal Fusion on a frozen two-tower backbone: its prompted layers are the top
    ``n_fusion_layers`` of each tower."""

    config: PMFConfig

    def __init__(self, config: PMFConfig, backbone: Backbone):
        text, vision = backbone.text, backbone.vision
        n = config.n_fusion_layers
        if n > min(text.num_layers, vision.num_layers):
            raise ConfigError(
                "n_fusion_layers",
                f"{n} fusion layers but the towers have {text.num_layers} "
                f"(text) and {vision.num_layers} (vision) layers",
            )
        top = (range(text.num_layers - n, text.num_layers), range(vision.num_layers - n, vision.num_layers))
        super().__init__(config, backbone, top)
        d_t, d_v, length, std = text.width, vision.width, config.prompt_length, config.prompt_init_std
        self.text_prompts = nn.ModuleList(FusionPrompts(length, d_t, std) for _ in range(n))
        self.vision_prompts = nn.ModuleList(FusionPrompts(length, d_v, std) for _ in range(n))
        hidden_t2v = config.mapper_hidden or max(1, d_t // 2)
        hidden_v2t = config.mapper_hidden or max(1, d_v // 2)
        self.text_to_vision = nn.ModuleList(translator(d_t, d_v, hidden_t2v) for _ in range(n))
        self.vision_to_text = nn.ModuleList(translator(d_v, d_t, hidden_v2t) for _ in range(n))
        self.add_gates()
        self.head = self.build_head({"image": vision.embed_dim, "text": text.embed_dim})

    def prefix_features(self, t_state: TowerState, v_state: TowerState) -> Features:
        text, vision = self.backbone.text, self.backbone.vision
        batch, length, steps = t_state.hidden.shape[0], self.config.prompt_length, len(self.text_layers)
        t_records, v_records = self.trace_records("text", steps), self.trace_records("vision", steps)
        for k, (t_layer, v_layer) in enumerate(zip(self.text_layers, self.vision_layers)):
            t_prompts, v_prompts = self.text_prompts[k], self.vision_prompts[k]
            # Pass 1 (query): keep only the query prompts' outputs.
            _, t_out = text.run_layer(
                t_layer, t_state, batched(torch.cat([t_prompts.query, t_prompts.query_context]), batch)
            )
            _, v_out = vision.run_layer(
                v_layer, v_state, batched(torch.cat([v_prompts.query, v_prompts.query_context]), batch)
            )
            q_t, q_v = t_out[:, :length], v_out[:, :length]
            # Pass 2 (fusion): same layer, same input tokens, translated queries + fusion context;
            # keep only the sequence outputs.
            t_extra = torch.cat([self.vision_to_text[k](q_v), batched(t_prompts.fusion_context, batch)], dim=1)
            v_extra = torch.cat([self.text_to_vision[k](q_t), batched(v_prompts.fusion_context, batch)], dim=1)
            t_state, _ = text.run_layer(
                t_layer, t_state, t_extra, step_gate(self.text_gates, k), step_record(t_records, k)
            )
            v_state, _ = vision.run_layer(
                v_layer, v_state, v_extra, step_gate(self.vision_gates, k), step_record(v_records, k)
            )
        return {"image": embedding(vision, v_state), "text": embedding(text, t_state)}
