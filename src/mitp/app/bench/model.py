"""The model the inference, serve and load benchmarks measure: a method with random weights on a backbone,
assembled as a deployment loads it (speed does not depend on the weights), and an image to send it."""

from __future__ import annotations

import io

import torch
from PIL import Image

from mitp.backbones import build_backbone
from mitp.data.manifest import LabelSpace
from mitp.methods import build_model, make_config
from mitp.torch_runtime import TorchClassifier

from .settings import parse_method_spec


def random_classifier(
    backbone_spec: str,
    method: str,
    num_classes: int,
    max_length: int | None = None,
    image_size: int | None = None,
    open_gates: bool = False,
) -> TorchClassifier:
    """``method`` may be a setting (NAME[key=value;...]); ``max_length``: text tokens, at most the tower's;
    ``open_gates``: prompt gates at 1 as after training (the work is the same; the logits then depend on the
    prompts)."""
    backbone = build_backbone(backbone_spec)
    torch.manual_seed(0)
    name, overrides = parse_method_spec(method)
    model = build_model(make_config(name, num_classes=num_classes, **overrides), backbone).eval()
    if open_gates:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "gates" in name:
                    param.fill_(1.0)
    if max_length is not None:
        max_length = min(max_length, backbone.text_format.max_length)
    labels = LabelSpace("single_label", tuple(f"class-{i}" for i in range(num_classes)))
    return TorchClassifier.from_model(model, labels, max_length, image_size)


def noise_png(size: int) -> bytes:
    """A PNG of random pixels, ``size`` x ``size``."""
    buffer = io.BytesIO()
    Image.effect_noise((size, size), 60).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


__all__ = ["noise_png", "random_classifier"]
