"""MITP: temporal prompts at paired interaction layers, exchanged through a memory hub.

Per step k: each tower runs its interaction layer on [tokens; prompts] (acquiring),
the prompt outputs meet in the hub (consolidation), and the hub memory becomes the
next step's prompts (activation). See docs/method.md for every choice made here.

Missing-aware (``missing_aware``): a learned prompt per missing case is added to the first
prompts, and the hub takes nothing from an absent side: a sample without its image gets no
vision memory in its text prompts, one without text no text memory in its vision prompts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...backbones import Backbone, TowerState
from ...backbones.towers import run_layers
from ..base import Features
from ..layers import (
    MissingCasePrompts,
    PromptedClassifier,
    batched,
    embedding,
    gaussian_prompt,
    interaction_layers,
    step_gate,
    step_record,
)
from .config import MITPConfig


class MemoryHub(nn.Module):
    """Consolidation in the text width: vision prompts enter through ``vision_proj`` (P_v).

    similarity: S = softmax(cos(p_t, P_v p_v) / tau);  m_t = p_t + S q,  m_v = q + S^T p_t
    mean:       m_t = p_t + mean(q),                  m_v = q + mean(p_t)
    none:       m_t = p_t,                            m_v = q
    with q = P_v p_v and an optional LayerNorm on each memory. With a ``modality_mask`` the exchange
    terms (S q, S^T p_t, the means) are dropped for the side whose modality is absent. Given each
    tower's token mean (``context``), it joins that side as one more slot: it is read by the other
    side's prompts but gets no memory of its own. ``learn_tau`` makes tau a parameter (log scale);
    ``dropout`` drops parts of the exchange terms while training.
    """

    def __init__(
        self,
        text_width: int,
        vision_width: int,
        mode: str = "similarity",
        tau: float = 0.1,
        norm: bool = True,
        learn_tau: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.mode = mode
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau))) if learn_tau else None
        self.fixed_tau = tau
        self.dropout = nn.Dropout(dropout)
        self.vision_proj = nn.Linear(vision_width, text_width)
        self.text_norm = nn.LayerNorm(text_width) if norm else nn.Identity()
        self.vision_norm = nn.LayerNorm(text_width) if norm else nn.Identity()
        self.last_similarity: torch.Tensor | None = None  # detached, for diagnostics and `mitp explain`

    @property
    def tau(self) -> torch.Tensor | float:
        return self.fixed_tau if self.log_tau is None else self.log_tau.exp()

    def similarity(self, p_t: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(p_t, dim=-1) @ F.normalize(q, dim=-1).transpose(1, 2)
        return torch.softmax(cos / self.tau, dim=-1)

    def forward(
        self,
        p_t: torch.Tensor,
        p_v: torch.Tensor,
        modality_mask: torch.Tensor | None = None,
        context: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(text memory, vision memory) of the prompt outputs (B, M, width each); ``context``: each tower's
        (B, width) token mean, added as a slot the other side reads."""
        q = self.vision_proj(p_v)
        if self.mode == "none":
            return self.text_norm(p_t), self.vision_norm(q)
        slots = p_t.shape[1]
        text_slots, vision_slots = p_t, q
        if context is not None:
            text_slots = torch.cat([p_t, context[0][:, None]], dim=1)
            vision_slots = torch.cat([q, self.vision_proj(context[1])[:, None]], dim=1)
        if self.mode == "similarity":
            s = self.similarity(text_slots, vision_slots)
            self.last_similarity = s.detach()
            from_vision, from_text = (s @ vision_slots)[:, :slots], (s.transpose(1, 2) @ text_slots)[:, :slots]
        else:
            from_vision, from_text = vision_slots.mean(1, keepdim=True), text_slots.mean(1, keepdim=True)
        if modality_mask is not None:  # nothing flows from an absent side
            has_image, has_text = (modality_mask[:, k].to(p_t.device, p_t.dtype)[:, None, None] for k in (0, 1))
            from_vision, from_text = from_vision * has_image, from_text * has_text
        return self.text_norm(p_t + self.dropout(from_vision)), self.vision_norm(q + self.dropout(from_text))


class MITP(PromptedClassifier):
    """Memory-Inspired Temporal Prompt Interaction on a frozen two-tower backbone."""

    config: MITPConfig

    def __init__(self, config: MITPConfig, backbone: Backbone):
        text, vision = backbone.text, backbone.vision
        super().__init__(config, backbone, interaction_layers(config, text.num_layers, vision.num_layers))
        d_t, d_v = text.width, vision.width
        steps, length, std = len(self.text_layers), config.prompt_length, config.prompt_init_std
        uses_memory = config.head_input == "pooled+memory"

        self.text_prompt = gaussian_prompt(length, d_t, std)
        self.vision_prompt = gaussian_prompt(length, d_v, std) if config.vision_init == "independent" else None
        # W, b: text-to-vision map for the first vision prompt and, when tied, every later one.
        needs_shared_map = config.vision_init == "linear" or (config.tied_generators and steps > 1)
        self.text_to_vision = nn.Linear(d_t, d_v) if needs_shared_map else None
        self.generators = None
        if not config.tied_generators and steps > 1:
            self.generators = nn.ModuleList(nn.Linear(d_t, d_v) for _ in range(steps - 1))
        # With one step and a pooled head the hub output would be unused, so it is not built.
        self.hub = None
        if steps > 1 or uses_memory:
            self.hub = MemoryHub(
                d_t, d_v, config.hub, config.tau, config.hub_norm, config.learn_tau, config.hub_dropout
            )
        self.add_gates()
        self.reads_modality_mask = bool(config.missing_aware)
        self.missing_text = MissingCasePrompts(length, d_t) if config.missing_aware else None
        self.missing_vision = MissingCasePrompts(length, d_v) if config.missing_aware else None
        self.last_similarities: list[torch.Tensor] = []  # per hub step of the last forward, detached

        parts = {"image": vision.embed_dim, "text": text.embed_dim}
        if uses_memory:
            parts["memory"] = d_t
        self.head = self.build_head(parts)

    def initial_prompts(
        self, batch: int, modality_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first step's (text, vision) prompts, (B, L, width) each, with the missing case's prompts."""
        p_t = batched(self.text_prompt, batch)
        if self.missing_text is not None:
            p_t = p_t + self.missing_text(modality_mask, batch)
        p_v = self.text_to_vision(p_t) if self.vision_prompt is None else batched(self.vision_prompt, batch)
        if self.missing_vision is not None:
            p_v = p_v + self.missing_vision(modality_mask, batch)
        return p_t, p_v

    def vision_generator(self, step: int) -> nn.Module:
        """Map from the hub's vision memory to the vision prompts of step ``step + 1``."""
        return self.text_to_vision if self.generators is None else self.generators[step]

    def prefix_features(
        self, t_state: TowerState, v_state: TowerState, modality_mask: torch.Tensor | None = None
    ) -> Features:
        text, vision = self.backbone.text, self.backbone.vision
        t_pos, v_pos = self.frozen_prefix()
        p_t, p_v = self.initial_prompts(t_state.hidden.shape[0], modality_mask)
        memory = None
        steps = len(self.text_layers)
        self.last_similarities = []
        t_records, v_records = self.trace_records("text", steps), self.trace_records("vision", steps)
        for step, (t_layer, v_layer) in enumerate(zip(self.text_layers, self.vision_layers)):
            t_state = run_layers(text, t_state, t_pos, t_layer)
            v_state = run_layers(vision, v_state, v_pos, v_layer)
            # acquiring: the prompts read the tokens; the tokens read the prompts through the gates
            t_state, out_t = text.run_layer(
                t_layer, t_state, p_t, step_gate(self.text_gates, step), step_record(t_records, step)
            )
            v_state, out_v = vision.run_layer(
                v_layer, v_state, p_v, step_gate(self.vision_gates, step), step_record(v_records, step)
            )
            t_pos, v_pos = t_layer + 1, v_layer + 1
            if self.hub is None or (step == steps - 1 and self.config.head_input == "pooled"):
                continue
            context = None
            if self.config.hub_context == "prompts+tokens":
                context = (token_mean(t_state), token_mean(v_state))
            m_t, m_v = self.hub(out_t, out_v, modality_mask, context)  # consolidation
            if self.hub.mode == "similarity":
                self.last_similarities.append(self.hub.last_similarity)
                if self.trace is not None:
                    self.trace.similarity.append(self.hub.last_similarity)
            if step < steps - 1:
                p_t, p_v = m_t, self.vision_generator(step)(m_v)  # activation
            else:  # last step, reached only when the head reads the memory
                memory = torch.cat([m_t, m_v], dim=1).mean(1)

        t_state = run_layers(text, t_state, t_pos, text.num_layers)
        v_state = run_layers(vision, v_state, v_pos, vision.num_layers)
        features = {"image": embedding(vision, v_state), "text": embedding(text, t_state)}
        if memory is not None:
            features["memory"] = memory
        return features

    def diagnostics(self) -> dict[str, float]:
        stats = {
            **super().diagnostics(),
            "prompt_norm/text": self.text_prompt.detach().norm(dim=-1).mean().item(),
        }
        if self.vision_prompt is not None:
            stats["prompt_norm/vision"] = self.vision_prompt.detach().norm(dim=-1).mean().item()
        for step, similarity in enumerate(self.last_similarities):
            stats[f"hub/similarity_entropy/step{step}"] = similarity_entropy(similarity)
        if self.hub is not None and self.hub.log_tau is not None:
            stats["hub/tau"] = self.hub.tau.item()
        return stats


def token_mean(state: TowerState) -> torch.Tensor:
    """(B, width): the mean of a tower's valid tokens (padding left out)."""
    valid = state.valid.to(state.hidden.dtype)[..., None]
    return (state.hidden * valid).sum(1) / valid.sum(1).clamp_min(1)


def similarity_entropy(similarity: torch.Tensor) -> float:
    """Mean entropy of the rows of a hub similarity matrix over log M: 1 = uniform, 0 = one-hot."""
    size = similarity.shape[-1]
    if size < 2:
        return 0.0
    entropy = -(similarity * similarity.clamp_min(1e-12).log()).sum(-1).mean()
    return entropy.item() / math.log(size)
