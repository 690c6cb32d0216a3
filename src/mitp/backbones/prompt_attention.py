"""Attention with prompt tokens appended, optionally gated from zero (LLaMA-Adapter style).

A tower runs an interaction layer on ``[tokens; prompts]``. Ungated, every sequence token
attends over tokens and prompts in one softmax, so the prompts change the frozen layer's
output for the tokens from the very first step. Gated (Zhang et al., arXiv 2303.16199),
the sequence tokens' attention is split in two softmaxes:

    out_tokens  = attn(q_tok, k_tok, v_tok) + tanh(g) * attn(q_tok, k_prompt, v_prompt)
    out_prompts = attn(q_prompt, [k_tok; k_prompt], [v_tok; v_prompt])

with one learnable ``g`` per head, initialised at 0. At ``g = 0`` the tokens' output is
exactly the frozen layer's on the tokens alone (everything after attention is per token),
while the prompts still read the whole sequence. So a prompt method starts at the frozen
model and training can only add.

This is plugged in through Hugging Face's ``AttentionInterface``: every tower's attention
config is switched to ``prompt_gate|<base>``, a function that hands calls without prompt
arguments straight to the ``<base>`` implementation (``eager``, ``sdpa``, ...), so plain
layers compute exactly what they did before. The prompt arguments travel as keyword
arguments through the layer call, which Hugging Face layers pass down to attention.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch

PREFIX = "prompt_gate|"


@dataclass
class PromptAttentionRecord:
    """Filled by an attention call given ``prompt_record``: how much the tokens read from the prompts.

    ``prompt_share`` (heads,): the part of a sequence token's attention that goes to the prompts,
    averaged over valid query tokens. Ungated, that is the softmax mass on the prompt keys; gated,
    |tanh g| / (1 + |tanh g|), the weight of the prompt branch next to the token branch.
    """

    prompt_share: list[torch.Tensor] = field(default_factory=list)


def _base_attention(module, base: str):
    if base == "eager":  # every modeling file defines its own eager function; use the module's
        return sys.modules[type(module).__module__].eager_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[base]


def _rows(mask: torch.Tensor | None, rows: slice, cols: slice) -> torch.Tensor | None:
    return None if mask is None else mask[:, :, rows, cols]


def _make_attention(base: str):
    def prompt_attention(
        module,
        query,
        key,
        value,
        attention_mask,
        scaling=None,
        dropout=0.0,
        *,
        num_prompts: int = 0,
        prompt_gate: torch.Tensor | None = None,
        prompt_record: PromptAttentionRecord | None = None,
        **kwargs,
    ):
        attend = _base_attention(module, base)
        if not num_prompts or (prompt_gate is None and prompt_record is None):
            return attend(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        length = query.shape[2] - num_prompts
        seq, prompts = slice(0, length), slice(length, None)
        if prompt_record is not None:
            prompt_record.prompt_share.append(_prompt_share(query, key, attention_mask, scaling, length, prompt_gate))
        if prompt_gate is None:  # recording an ungated layer: the joint softmax, unchanged
            return attend(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        q_seq, q_prompts = query[:, :, seq], query[:, :, prompts]
        tokens, _ = attend(
            module,
            q_seq,
            key[:, :, seq],
            value[:, :, seq],
            _rows(attention_mask, seq, seq),
            scaling=scaling,
            dropout=dropout,
            **kwargs,
        )
        # Every token may read every prompt: no mask, its own softmax over the prompt keys.
        from_prompts, _ = attend(
            module, q_seq, key[:, :, prompts], value[:, :, prompts], None, scaling=scaling, dropout=dropout, **kwargs
        )
        prompt_out, _ = attend(
            module,
            q_prompts,
            key,
            value,
            _rows(attention_mask, prompts, slice(None)),
            scaling=scaling,
            dropout=dropout,
            **kwargs,
        )
        # outputs are (B, L, heads, head_dim); one gate per head
        gated = tokens + torch.tanh(prompt_gate).to(tokens.dtype)[None, None, :, None] * from_prompts
        return torch.cat([gated, prompt_out], dim=1), None

    return prompt_attention


@torch.no_grad()
def _prompt_share(query, key, attention_mask, scaling, length, gate) -> torch.Tensor:
    if gate is not None:
        weight = torch.tanh(gate).abs().float()
        return (weight / (1 + weight)).cpu()
    scores = (query[:, :, :length] @ key.transpose(-1, -2)).float() * (scaling or query.shape[-1] ** -0.5)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :length].float()
    probs = scores.softmax(-1)
    share = probs[..., length:].sum(-1)  # (B, heads, L)
    if attention_mask is None:
        return share.mean((0, 2)).cpu()
    valid = attention_mask[:, :, :length, :length].diagonal(dim1=-2, dim2=-1) == 0  # a token sees itself iff valid
    valid = valid.expand_as(share).float()
    return ((share * valid).sum((0, 2)) / valid.sum((0, 2)).clamp_min(1)).cpu()


def gated_name(base: str) -> str:
    """Register ``prompt_gate|<base>`` (attention and mask functions) once and return its name."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import AttentionInterface

    name = PREFIX + base
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, _make_attention(base))
        masks = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping
        if base in masks:  # so the Hugging Face model itself still builds its masks as before
            ALL_MASK_ATTENTION_FUNCTIONS.register(name, masks[base])
    return name


def install(config) -> None:
    """Route the attention of every layer built from ``config`` through the prompt-aware function."""
    current = config._attn_implementation or "eager"
    if not current.startswith(PREFIX):
        config._attn_implementation = gated_name(current)
