"""Separate encoders: a BERT-family text tower with a ViT or DINOv2 image tower.

Specs: ``tiny-pair`` (tests, CI) and ``pair:<text>+<vision>``, each part a hub id or a local
directory. The offline backbone (``offline:``) builds on these towers too.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import BERT_LIKE, VIT_LIKE, Backbone, BackboneError, TextFormat, random_init
from ..registry import load_pretrained, register_backbone
from ..specs import TINY_BERT, TINY_VIT
from ..towers import Tower, TowerState, all_valid, zeros_index


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
        valid = all_valid(hidden) if attention_mask is None else attention_mask.bool()
        return TowerState(hidden, valid, zeros_index(hidden))

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
        return TowerState(hidden, all_valid(hidden), zeros_index(hidden))

    def final_states(self, hidden):
        return self.layernorm(hidden)

    def pool(self, state):
        return self.final_states(state.hidden)[:, 0]


def _bert_format(config) -> TextFormat:
    return TextFormat(
        config.vocab_size,
        config.max_position_embeddings,
        getattr(config, "cls_token_id", None),
        getattr(config, "sep_token_id", None),
        config.pad_token_id or 0,
    )


def from_encoders(
    spec: str, text_model, vision_model, text_source=None, vision_source=None, text_pooling: str = "mean"
) -> Backbone:
    """Wrap a BERT-family text model and a ViT/DINOv2 image model as a frozen backbone."""
    text = BertTextTower(text_model, pooling=text_pooling)
    vision = ViTImageTower(vision_model)
    size = vision_model.config.image_size
    return Backbone(spec, text, vision, _bert_format(text_model.config), size, text_source, vision_source)


@register_backbone("tiny-pair", description="tiny random BERT text + ViT image (tests, CI)", builtin=True)
def tiny_pair(spec: str, device=None) -> Backbone:
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    with random_init(device):
        text_model = BertModel(BertConfig(**TINY_BERT))
        vision_model = ViTModel(ViTConfig(**TINY_VIT), add_pooling_layer=False)
    return from_encoders("tiny-pair", text_model, vision_model)


@register_backbone(
    "pair:",
    display="pair:<text>+<vision>",
    description="BERT-family text + ViT/DINOv2 image encoders, each a hub id or local dir",
)
def pretrained_pair(spec: str, device=None) -> Backbone:
    parts = spec[len("pair:") :].split("+")
    if len(parts) != 2 or not all(parts):
        raise BackboneError(f"pair spec must be 'pair:<text>+<vision>', got {spec!r}")
    text_source, vision_source = parts
    text_model = load_pretrained(text_source, "text encoder")
    if text_model.config.model_type not in BERT_LIKE:
        raise BackboneError(
            f"text encoder {text_source!r} is {text_model.config.model_type!r}; "
            f"expected a BERT-family model ({', '.join(sorted(BERT_LIKE))})"
        )
    vision_model = load_pretrained(vision_source, "image encoder")
    if vision_model.config.model_type not in VIT_LIKE:
        raise BackboneError(
            f"image encoder {vision_source!r} is {vision_model.config.model_type!r}; "
            f"expected one of {', '.join(sorted(VIT_LIKE))}"
        )
    return from_encoders(spec, text_model, vision_model, text_source, vision_source)
