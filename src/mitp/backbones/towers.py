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

    def with_hidden(self, hidden: torch.Tensor) -> "TowerState":
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
            allowed[:, :length, :length] &= ~future
        mask = torch.zeros(allowed.shape, dtype=hidden.dtype, device=device)
        mask.masked_fill_(~allowed, torch.finfo(hidden.dtype).min)
        return mask[:, None]

    def run_layer(
        self, index: int, state: TowerState, extra: torch.Tensor | None = None, gate: torch.Tensor | None = None,
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


def _all_valid(hidden: torch.Tensor) -> torch.Tensor:
    return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)


def _zeros_index(hidden: torch.Tensor) -> torch.Tensor:
    return torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)


class CLIPTextTower(Tower):
    """CLIP text transformer: causal, pools at the end-of-text token, then projects."""

    modality = "text"
    causal = True

    def __init__(self, text_model: nn.Module, projection: nn.Module | None):
        super().__init__(text_model.encoder.layers, text_model.config, projection)
        self.embeddings = text_model.embeddings
        self.final_layer_norm = text_model.final_layer_norm
        self.eos_token_id = text_model.config.eos_token_id

    def eos_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Same rule as Hugging Face: legacy configs (eos_token_id == 2) take the highest id.
        if self.eos_token_id == 2:
            return input_ids.to(torch.int).argmax(dim=-1).long()
        return (input_ids == self.eos_token_id).int().argmax(dim=-1).long()

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_) -> TowerState:
        hidden = self.embeddings(input_ids=input_ids)
        valid = _all_valid(hidden) if attention_mask is None else attention_mask.bool()
        return TowerState(hidden, valid, self.eos_positions(input_ids))

    def final_states(self, hidden):
        return self.final_layer_norm(hidden)

    def pool(self, state):
        hidden = self.final_states(state.hidden)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), state.pool_index]


class CLIPVisionTower(Tower):
    """CLIP vision transformer: pre-norm embeddings, pools the class token, then projects."""

    modality = "image"

    def __init__(self, vision_model: nn.Module, projection: nn.Module | None):
        super().__init__(vision_model.encoder.layers, vision_model.config, projection)
        self.embeddings = vision_model.embeddings
        self.pre_layrnorm = vision_model.pre_layrnorm
        self.post_layernorm = vision_model.post_layernorm

    def embed(self, pixel_values: torch.Tensor, **_) -> TowerState:
        size = self.embeddings.image_size
        other_size = tuple(pixel_values.shape[-2:]) != (size, size)  # then interpolate position embeddings
        hidden = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding=other_size))
        return TowerState(hidden, _all_valid(hidden), _zeros_index(hidden))

    def pool(self, state):
        return self.post_layernorm(state.hidden[:, 0])


class BertTextTower(Tower):
    """BERT-family text encoder (BERT, MiniLM, ...): bidirectional, no final norm.

    ``pooling="mean"`` averages valid tokens (how sentence encoders such as MiniLM
    are trained); ``pooling="cls"`` uses the model's own pooler on [CLS].
    """

    modality = "text"

    def __init__(self, bert_model: nn.Module, pooling: str = "mean"):
        if pooling not in ("mean", "cls"):
            raise ValueError(f"BERT pooling must be 'mean' or 'cls', got {pooling!r}")
        if pooling == "cls" and getattr(bert_model, "pooler", None) is None:
            raise ValueError("BERT pooling 'cls' needs a model with a pooler layer")
        super().__init__(bert_model.encoder.layer, bert_model.config)
        self.embeddings = bert_model.embeddings
        self.pooler = bert_model.pooler if pooling == "cls" else None
        self.pooling = pooling

    def embed(self, input_ids, attention_mask=None, token_type_ids=None, **_) -> TowerState:
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        valid = _all_valid(hidden) if attention_mask is None else attention_mask.bool()
        return TowerState(hidden, valid, _zeros_index(hidden))

    def pool(self, state):
        if self.pooling == "cls":
            return self.pooler(state.hidden)
        weights = state.valid.to(state.hidden.dtype).unsqueeze(-1)
        return (state.hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class ViTImageTower(Tower):
    """ViT / DINOv2 image encoder: final LayerNorm, pools the class token."""

    modality = "image"

    def __init__(self, vit_model: nn.Module):
        layers = vit_model.encoder.layer if hasattr(vit_model, "encoder") else vit_model.layers
        super().__init__(layers, vit_model.config)
        self.embeddings = vit_model.embeddings
        self.layernorm = vit_model.layernorm
        self.image_size = vit_model.config.image_size
        self.needs_interpolate_flag = vit_model.config.model_type == "vit"

    def embed(self, pixel_values: torch.Tensor, **_) -> TowerState:
        pixel_values = pixel_values.to(next(self.embeddings.parameters()).dtype)
        # ViT must be told to interpolate position embeddings for other sizes; DINOv2 always does.
        if self.needs_interpolate_flag and tuple(pixel_values.shape[-2:]) != (self.image_size, self.image_size):
            hidden = self.embeddings(pixel_values, interpolate_pos_encoding=True)
        else:
            hidden = self.embeddings(pixel_values)
        return TowerState(hidden, _all_valid(hidden), _zeros_index(hidden))

    def final_states(self, hidden):
        return self.layernorm(hidden)

    def pool(self, state):
        return self.final_states(state.hidden)[:, 0]
