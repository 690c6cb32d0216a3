"""Frozen encoder towers that a method can run one layer at a time.

A tower turns raw inputs into a :class:`TowerState` (hidden states plus what the
attention masks and pooling need), runs any single layer with optional extra
tokens appended after the sequence, and pools/projects the final states the way
the original model does. With no extra tokens, running every layer reproduces
the Hugging Face model's own outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from . import prompt_attention
from .prompt_attention import PromptAttentionRecord


@dataclass
class TowerState:
    """Hidden states of one tower between layers.

    ``valid`` marks real (non-padding) tokens, shape (B, L); ``pool_index`` is the
    sequence position the tower pools from, shape (B,).
    """

    hidden: torch.Tensor
    valid: torch.Tensor
    pool_index: torch.Tensor

    def with_hidden(self, hidden: torch.Tensor) -> TowerState:
        return replace(self, hidden=hidden)


def _layer_output(output):
    # transformers 5 layers return a tensor; older ones a tuple.
    return output[0] if isinstance(output, tuple) else output


class Tower(nn.Module):
    """Uniform layer-by-layer interface over one frozen encoder."""

    modality: str = ""
    causal: bool = False

    def __init__(self, layers: nn.ModuleList, config, projection: nn.Module | None = None):
        super().__init__()
        self.layers = layers
        self.width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.projection = projection
        self.embed_dim = projection.out_features if projection is not None else self.width
        # Attention learns about appended prompts (and their gates); plain calls are unchanged.
        prompt_attention.install(config)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    # --- to implement per family -------------------------------------------------
    def embed(self, **inputs) -> TowerState:
        raise NotImplementedError

    def final_states(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final normalisation of the whole sequence (identity where the model has none)."""
        return hidden

    def pool(self, state: TowerState) -> torch.Tensor:
        """Pooled (B, width) vector from the states after the last layer."""
        raise NotImplementedError

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Map the pooled vector into the joint embedding space (identity if the model has none)."""
        return pooled if self.projection is None else self.projection(pooled)

    # --- shared ------------------------------------------------------------------
    def attention_mask(self, state: TowerState, num_extra: int) -> torch.Tensor | None:
        """Additive float mask (B, 1, L+M, L+M) for a layer with ``num_extra`` appended tokens.

        Sequence tokens see valid sequence tokens (in causal order for causal towers)
        and every extra token; extra tokens see valid sequence tokens and each other.
        """
        hidden = state.hidden
        batch, length = state.valid.shape
        if not self.causal and bool(state.valid.all()):
            return None  # everything sees everything: no mask lets SDPA pick its fastest kernel
        device = hidden.device
        keys_valid = torch.cat([state.valid, state.valid.new_ones(batch, num_extra)], dim=1)
        allowed = keys_valid[:, None, :].expand(batch, length + num_extra, length + num_extra).clone()
        if self.causal:
            future = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
            allowed[:, :length, :length] = allowed[:, :length, :length] & ~future  # not in place: ONNX export
        mask = torch.zeros(allowed.shape, dtype=hidden.dtype, device=device)
        mask.masked_fill_(~allowed, torch.finfo(hidden.dtype).min)
        return mask[:, None]

    def run_layer(
        self,
        index: int,
        state: TowerState,
        extra: torch.Tensor | None = None,
        gate: torch.Tensor | None = None,
        record: PromptAttentionRecord | None = None,
    ) -> tuple[TowerState, torch.Tensor | None]:
        """Run layer ``index`` on the sequence with ``extra`` tokens (B, M, width) appended.

        ``gate`` (num_heads,): what the sequence reads from the extra tokens is a separate
        softmax scaled by tanh(gate), so a zero gate leaves the sequence's output exactly as
        without them (see :mod:`.prompt_attention`). ``record`` collects how much the sequence
        attends to the extra tokens. Returns the new state (extra tokens removed again) and
        the extra tokens' outputs.
        """
        num_extra = 0 if extra is None else extra.shape[1]
        hidden = state.hidden if extra is None else torch.cat([state.hidden, extra.to(state.hidden.dtype)], dim=1)
        mask = self.attention_mask(state, num_extra)
        prompt_args = {}
        if num_extra and (gate is not None or record is not None):
            prompt_args = {"num_prompts": num_extra, "prompt_gate": gate, "prompt_record": record}
        out = _layer_output(self.layers[index](hidden, mask, **prompt_args))
        length = state.hidden.shape[1]
        return state.with_hidden(out[:, :length]), (out[:, length:] if num_extra else None)

    def forward(self, **inputs) -> torch.Tensor:
        """Whole tower without extra tokens: the projected embedding (B, embed_dim)."""
        state = self.embed(**inputs)
        for i in range(self.num_layers):
            state, _ = self.run_layer(i, state)
        return self.project(self.pool(state))


def run_layers(tower: Tower, state: TowerState, start: int, stop: int) -> TowerState:
    """Layers ``start`` to ``stop - 1`` on the plain sequence (no extra tokens)."""
    for i in range(start, stop):
        state, _ = tower.run_layer(i, state)
    return state


def all_valid(hidden: torch.Tensor) -> torch.Tensor:
    return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)


def zeros_index(hidden: torch.Tensor) -> torch.Tensor:
    return torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)
