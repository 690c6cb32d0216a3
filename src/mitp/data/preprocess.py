"""Per-backbone preprocessing: the backbone's tokenizer and image processor settings.

For a backbone loaded from a checkpoint (``backbone.text_source`` / ``vision_source``
set) this uses ``AutoTokenizer.from_pretrained(text_source)`` and the size, crop,
resample, mean and std of ``AutoImageProcessor.from_pretrained(vision_source)``,
applied by :class:`~mitp.data.images.ImageTransform` (PIL + NumPy; no torchvision).

For the in-process random backbones (``tiny-clip``, ``tiny-pair``: sources are None)
it falls back to :class:`~mitp.data.text.HashTokenizer` and a CLIP-style transform at
``backbone.image_size`` -- for tests and tiny models only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from ..configuration import ConfigError, check_range
from ..limits import IMAGE_SIZE_RANGE, TEXT_LENGTH_RANGE
from .images import ImageTransform
from .text import HashTokenizer, HFTokenizer


@dataclass
class Preprocessor:
    """Turns one (text, image) pair into model inputs. Picklable, so it works in DataLoader workers."""

    tokenize: Callable[[str], list[int]]
    image_transform: ImageTransform
    pad_token_id: int
    max_length: int
    description: str = ""

    def __post_init__(self):
        check_range("max_length", self.max_length, *TEXT_LENGTH_RANGE)

    def text(self, text: str) -> list[int]:
        return self.tokenize(text)

    def image(self, img: Image.Image) -> np.ndarray:
        return self.image_transform(img)

    def blank_image(self) -> np.ndarray:
        """What a missing image is replaced by: every normalised pixel 1.0 (missing-aware prompts' protocol)."""
        size = self.image_transform.crop or self.image_transform.resize_to
        if size is None:
            raise ValueError("a blank image needs a fixed image size (a crop or an exact resize)")
        return np.ones((3, *size), dtype=np.float32)

    def empty_text(self) -> list[int]:
        """What a missing text is replaced by: the tokenizer's special tokens only."""
        return self.tokenize("")

    @classmethod
    def for_backbone(cls, backbone, max_length: int | None = None, image_size: int | None = None) -> Preprocessor:
        """The preprocessing ``backbone`` expects; texts are truncated to ``max_length`` tokens.

        ``max_length`` defaults to the text tower's limit and may not exceed it. ``image_size``
        replaces the processor's resize and crop by a square ``image_size`` (mean, std and
        resampling kept): smaller images for speed; the towers interpolate position embeddings.
        Either outside its range (``TEXT_LENGTH_RANGE``, ``IMAGE_SIZE_RANGE``) is a ConfigError naming it.
        """
        fmt = backbone.text_format
        if max_length is None:
            max_length = fmt.max_length
        check_range("max_length", max_length, *TEXT_LENGTH_RANGE)
        if max_length > fmt.max_length:
            raise ConfigError(
                "max_length",
                f"{max_length} exceeds the text tower's limit of {fmt.max_length} positions for backbone "
                f"{backbone.spec!r}",
            )
        check_range("image_size", image_size, *IMAGE_SIZE_RANGE, allow_null=True)
        if backbone.text_source is None:
            tokenize = HashTokenizer(fmt.vocab_size, max_length, fmt.bos_token_id, fmt.eos_token_id, fmt.pad_token_id)
            pad, text_desc = fmt.pad_token_id, "hash tokenizer (tiny/random backbones only)"
        else:
            tokenize = HFTokenizer(backbone.text_source, max_length, fmt.pad_token_id)
            pad, text_desc = tokenize.pad_token_id, f"tokenizer of {backbone.text_source}"
        if backbone.vision_source is None:
            transform = ImageTransform.clip_like(backbone.image_size)
            image_desc = f"CLIP-style {backbone.image_size}px transform"
        else:
            transform = image_transform_from_pretrained(backbone.vision_source)
            image_desc = f"image processor of {backbone.vision_source}"
        if image_size is not None:
            transform = replace(transform, shortest_edge=None, resize_to=(image_size, image_size), crop=None)
            image_desc += f", resized to {image_size}x{image_size}"
        return cls(tokenize, transform, int(pad), max_length, f"{text_desc}; {image_desc}")


def image_transform_from_pretrained(source: str) -> ImageTransform:
    """The :class:`ImageTransform` matching the image processor saved with ``source``."""
    from transformers import AutoImageProcessor

    try:
        # The PIL backend needs no torchvision; only its settings are used.
        processor = AutoImageProcessor.from_pretrained(source, backend="pil")
    except Exception as err:
        hint = "" if os.path.isdir(source) else " (no hub access? pass a local checkpoint directory)"
        raise ValueError(f"could not load the image processor of {source!r}{hint}: {err}") from err
    return ImageTransform.from_hf_processor(processor)


__all__ = ["Preprocessor", "image_transform_from_pretrained"]
