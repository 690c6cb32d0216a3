"""Image decoding with named errors, and the resize / crop / normalise transform.

:class:`ImageTransform` reproduces the Hugging Face image processors used by the
supported backbones (CLIP, ViT, DINOv2's BitImageProcessor) with PIL + NumPy only,
so no torchvision is needed: convert to RGB (alpha composited on white), resize
(shortest edge kept in aspect, or to an exact height x width), center crop, rescale
to [0, 1], normalise with the processor's mean and std.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import CorruptImage, MissingImage

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# Most pixels a prediction input may decode to (checked from the header): a 40 MP photo is 120 MB of RGB,
# a decompression bomb of a few hundred KB claiming more is refused before it is decoded.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


def open_rgb(image_path: str, manifest: str, line: int | None, sample_id: str | None = None) -> Image.Image:
    """Decode ``image_path`` fully into an RGB image.

    Raises MissingImage / CorruptImage located at the manifest line that names the image.
    """
    where = f" (id {sample_id!r})" if sample_id is not None else ""
    if not os.path.isfile(image_path):
        raise MissingImage(manifest, line, f"image {image_path} not found{where}")
    try:
        with Image.open(image_path) as img:
            img.load()  # full decode: truncated JPEGs fail here, not later
            return to_rgb(img)
    except FileNotFoundError as err:  # deleted between the check and the open
        raise MissingImage(manifest, line, f"image {image_path} not found{where}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptImage(manifest, line, f"image {image_path} cannot be decoded{where}: {err}") from err


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy of ``img``; transparency is composited on white (as Hugging Face does); 16-bit and
    32-bit integer images are scaled to 8 bits (PIL's own conversion clips them to white)."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I"):  # I;16, I;16B, I;16L (16-bit PNG/TIFF), I (32-bit)
        values = np.asarray(img, dtype=np.float64)
        full_scale = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        scaled = np.clip(np.rint(values * 255.0 / full_scale), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _triple(value, name: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 values (RGB), got {values}")
    return values


@dataclass(frozen=True)
class ImageTransform:
    """PIL image -> float32 array (3, H, W), following a Hugging Face image processor's settings.

    ``shortest_edge``: resize so the shorter side has this length (the longer one is
    ``int(shortest_edge * long / short)``); else ``resize_to`` (height, width) resizes exactly;
    neither: no resize. ``crop`` (height, width): center crop. ``resample``: a PIL filter code.
    """

    shortest_edge: int | None = None
    resize_to: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    resample: int = Image.Resampling.BICUBIC
    rescale_factor: float | None = 1 / 255
    mean: tuple[float, float, float] | None = CLIP_MEAN
    std: tuple[float, float, float] | None = CLIP_STD

    @classmethod
    def clip_like(cls, size: int) -> ImageTransform:
        """Shortest side to ``size``, center crop ``size`` x ``size``, CLIP mean/std (tiny models)."""
        return cls(shortest_edge=size, crop=(size, size))

    @classmethod
    def from_hf_processor(cls, processor) -> ImageTransform:
        """Read size, crop size, resample, rescale, mean and std from a Hugging Face image processor."""

        def get(obj, key):
            if obj is None:
                return None
            return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)

        name = type(processor).__name__
        shortest = resize_to = crop = None
        if getattr(processor, "do_resize", True):
            size = getattr(processor, "size", None)
            if isinstance(size, int):
                shortest = size
            elif get(size, "shortest_edge") and not get(size, "longest_edge"):
                shortest = int(get(size, "shortest_edge"))
            elif get(size, "height") and get(size, "width"):
                resize_to = (int(get(size, "height")), int(get(size, "width")))
            else:
                raise ValueError(
                    f"{name}: unsupported resize setting size={size!r}; supported are "
                    "{'shortest_edge': N} and {'height': H, 'width': W}"
                )
        if getattr(processor, "do_center_crop", False):
            crop_size = getattr(processor, "crop_size", None)
            if isinstance(crop_size, int):
                crop = (crop_size, crop_size)
            elif get(crop_size, "height") and get(crop_size, "width"):
                crop = (int(get(crop_size, "height")), int(get(crop_size, "width")))
            else:
                raise ValueError(f"{name}: unsupported crop_size={crop_size!r}")
        if getattr(processor, "do_pad", False):
            raise ValueError(f"{name}: padding image processors are not supported")
        resample = getattr(processor, "resample", None)
        resample = Image.Resampling.BILINEAR if resample is None else int(resample)
        rescale = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else None
        if getattr(processor, "do_normalize", True):
            mean, std = _triple(processor.image_mean, "image_mean"), _triple(processor.image_std, "image_std")
        else:
            mean = std = None
        return cls(shortest, resize_to, crop, resample, rescale, mean, std)

    def resize_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize step, before cropping."""
        if self.shortest_edge:
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            return (new_long, new_short) if width <= height else (new_short, new_long)
        if self.resize_to:
            return self.resize_to
        return height, width

    def __call__(self, img: Image.Image) -> np.ndarray:
        img = to_rgb(img)
        if self.shortest_edge or self.resize_to:
            h, w = self.resize_size(img.height, img.width)
            img = img.resize((w, h), resample=self.resample)
        array = np.asarray(img)  # (H, W, 3) uint8
        if self.crop:
            array = _center_crop(array, *self.crop)
        out = array.astype(np.float64)
        if self.rescale_factor is not None:
            out = out * self.rescale_factor
        out = out.astype(np.float32)
        if self.mean is not None:
            out = (out - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(out.transpose(2, 0, 1))


def _center_crop(array: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    """Center crop (H, W, C); where the image is smaller it is zero-padded first, placed as HF places it."""
    h, w = array.shape[:2]
    if h < crop_h or w < crop_w:
        new_h, new_w = max(h, crop_h), max(w, crop_w)
        padded = np.zeros((new_h, new_w) + array.shape[2:], dtype=array.dtype)
        top, left = (new_h - h + 1) // 2, (new_w - w + 1) // 2
        padded[top : top + h, left : left + w] = array
        array, h, w = padded, new_h, new_w
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    return array[top : top + crop_h, left : left + crop_w]


__all__ = ["CLIP_MEAN", "CLIP_STD", "ImageTransform", "open_rgb", "to_rgb"]
