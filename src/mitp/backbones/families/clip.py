"""CLIP: its two towers, the tiny and real-shape random CLIPs, and any CLIPModel checkpoint.

Specs: ``tiny-clip`` (tests, CI), ``shape:<name>`` (the published shapes with random weights,
for parameter counts and benchmarks), and, for any other spec, a Hugging Face hub id or a local
directory holding a ``CLIPModel`` checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import Backbone, BackboneError, TextFormat, random_init
from ..registry import load_pretrained, register_backbone
from ..specs import SHAPE_CLIP, TINY_CLIP
from ..towers import Tower, TowerState, all_valid, zeros_index


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
        valid = all_valid(hidden) if attention_mask is None else attention_mask.bool()
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
        return TowerState(hidden, all_valid(hidden), zeros_index(hidden))

    def pool(self, state):
        return self.post_layernorm(state.hidden[:, 0])


def from_clip_model(spec: str, clip_model, source: str | None = None) -> Backbone:
    """Wrap a Hugging Face ``CLIPModel`` (its towers and projections) as a frozen backbone."""
    text_cfg = clip_model.config.text_config
    text = CLIPTextTower(clip_model.text_model, clip_model.text_projection)
    vision = CLIPVisionTower(clip_model.vision_model, clip_model.visual_projection)
    vocab = text_cfg.vocab_size
    # Legacy OpenAI configs say eos_token_id=2 while the real end/start tokens are the top two ids.
    legacy = text_cfg.eos_token_id == 2
    bos = vocab - 2 if legacy else text_cfg.bos_token_id
    eos = vocab - 1 if legacy else text_cfg.eos_token_id
    fmt = TextFormat(vocab, text_cfg.max_position_embeddings, bos, eos, text_cfg.pad_token_id or 0)
    return Backbone(spec, text, vision, fmt, clip_model.config.vision_config.image_size, source, source)


def _clip_from_config(spec: str, shapes: dict, device) -> Backbone:
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=shapes["text_config"],
        vision_config=shapes["vision_config"],
        projection_dim=shapes["projection_dim"],
    )
    with random_init(device):
        model = CLIPModel(config)
    return from_clip_model(spec, model, None)


@register_backbone("tiny-clip", description="tiny random CLIP (tests, CI)", builtin=True)
def tiny_clip(spec: str, device=None) -> Backbone:
    return _clip_from_config(spec, TINY_CLIP, device)


@register_backbone(
    "shape:",
    specs=tuple(f"shape:{name}" for name in SHAPE_CLIP),
    builtin=True,
    description="random weights with the real shapes (parameter counts, benchmarks)",
)
def clip_shape(spec: str, device=None) -> Backbone:
    name = spec[len("shape:") :]
    if name not in SHAPE_CLIP:
        raise BackboneError(f"unknown shape spec {spec!r}; known: {', '.join('shape:' + n for n in SHAPE_CLIP)}")
    return _clip_from_config(spec, SHAPE_CLIP[name], device)


@register_backbone("*", display="<hub id or local dir>", description="a CLIPModel checkpoint (from_pretrained)")
def pretrained_clip(spec: str, device=None) -> Backbone:
    model = load_pretrained(spec, "CLIP checkpoint")
    if getattr(model.config, "model_type", None) != "clip":
        raise BackboneError(
            f"{spec!r} is a {model.config.model_type!r} model, not a CLIPModel checkpoint; "
            "use 'pair:<text>+<vision>' for separate encoders"
        )
    return from_clip_model(spec, model, spec)
