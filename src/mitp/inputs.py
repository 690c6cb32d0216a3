"""Prediction inputs and outputs that need no torch: checking and decoding an image or a text, padding
token ids, and turning logits into labelled scores. Shared by the PyTorch classifier and the
onnxruntime one, so both accept the same inputs, refuse the same bad ones, and answer alike."""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from .data.errors import ManifestError
from .data.images import to_rgb
from .data.manifest import check_text as check_sample_text


class InputError(ValueError):
    """A prediction input that cannot be used; ``field`` names it (``images[2]``, ``texts[0]``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class NoImageFile(InputError):
    """An image given as a path that does not name a file."""


class ImageTooLarge(InputError):
    """An input image with more pixels than the classifier's ``max_image_pixels``."""


class Prepared(NamedTuple):
    """One sample as model inputs: pixels (a blank image if absent; a torch tensor or a NumPy array), token
    ids (the specials only if absent) and which modalities are really there."""

    pixels: Any
    tokens: list[int]
    present: tuple[bool, bool]  # (image, text)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(name for name, here in zip(("image", "text"), self.present) if here)


class Prediction(list):
    """The ``{"label", "score"}`` rows of one sample (a list), with the ``modalities`` it saw."""

    def __init__(self, rows, modalities: tuple[str, ...] = ("image", "text")):
        super().__init__(rows)
        self.modalities = tuple(modalities)


@contextlib.contextmanager
def _quiet_bombs():
    """PIL warns on opening a large image; the size is checked here, right after."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def load_image(image, field: str, max_pixels: int | None) -> Image.Image:
    """An RGB PIL image from a PIL image, a path or bytes; more than ``max_pixels`` pixels is refused from
    the header, before decoding. Every problem is an InputError naming ``field``."""
    try:
        if isinstance(image, Image.Image):
            return to_rgb(image)
        if isinstance(image, (str, os.PathLike)) and not os.path.isfile(image):
            raise NoImageFile(field, f"no image file {os.fspath(image)!r}")
        if not isinstance(image, (bytes, bytearray, str, os.PathLike)):
            raise InputError(field, f"expected a PIL image, a path or bytes, got {type(image).__name__}")
        source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
        with _quiet_bombs(), Image.open(source) as img:
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(
                    field, f"{width} x {height} = {width * height:,} pixels is over the {max_pixels:,}-pixel limit"
                )
            img.load()
            return to_rgb(img)
    except InputError:
        raise
    except Image.DecompressionBombError as err:  # PIL's own refusal (over twice its 89 MP default)
        raise ImageTooLarge(field, f"over the pixel limit ({err})") from err
    except UnidentifiedImageError as err:  # PIL's message holds the stream's repr, a memory address
        raise InputError(field, "cannot be decoded as an image (not a format PIL recognises, or empty)") from err
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(field, f"cannot be decoded as an image ({_without_addresses(err)})") from err


def _without_addresses(err: Exception) -> str:
    """PIL's message without the reprs of the streams it read (``<_io.BytesIO object at 0x...>``)."""
    return re.sub(r"<[\w.]+ object at 0x[0-9a-fA-F]+>", "the image", str(err))


def check_text(text, field: str) -> str:
    """``text`` if it can be a sample's text (the manifest's own rule); else an InputError naming ``field``."""
    try:
        return check_sample_text(text, "")
    except ManifestError as err:
        raise InputError(field, err.message) from None


def check_request(images, texts, top_k: int, batch_size: int = 1) -> tuple[list, list]:
    """The (images, texts) lists of a predict call, one entry per sample (None: that modality is absent)."""
    if images is None and texts is None:
        raise InputError("images", "give images, texts or both")
    for field, given in (("images", images), ("texts", texts)):
        # one sample given bare would be read as a sequence of characters, bytes or pixels
        if isinstance(given, (str, bytes, os.PathLike, Image.Image)):
            raise InputError(field, f"expected a list with one entry per sample, got one {type(given).__name__}")
    images = [None] * len(texts) if images is None else list(images)
    texts = [None] * len(images) if texts is None else list(texts)
    if len(images) != len(texts):
        raise InputError(
            "texts",
            f"{len(texts)} texts for {len(images)} images; give one text per image (None where a text is missing)",
        )
    if top_k < 1:
        raise InputError("top_k", f"must be >= 1, got {top_k}")
    if batch_size < 1:
        raise InputError("batch_size", f"must be >= 1, got {batch_size}")
    return images, texts


def pad_ids(sequences: list[list[int]], pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(input_ids, attention_mask)``, both (B, L) int64."""
    length = max(len(x) for x in sequences)
    ids = np.full((len(sequences), length), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(sequences), length), dtype=np.int64)
    for row, tokens in enumerate(sequences):
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return ids, mask


def to_predictions(
    logits: np.ndarray, labels, task: str, top_k: int = 1, threshold: float = 0.5, modalities: list | None = None
) -> list[Prediction]:
    """One Prediction per row of (N, K) logits: the top-k softmax probabilities (single-label), or every
    label whose sigmoid probability passes ``threshold`` (multi-label)."""
    logits = np.asarray(logits, dtype=np.float64)
    rows = []
    if task == "multi_label":
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        for row in probabilities:
            picked = sorted(((labels[i], float(p)) for i, p in enumerate(row) if p > threshold), key=lambda x: -x[1])
            rows.append([{"label": name, "score": round(p, 6)} for name, p in picked])
    else:
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
        for row in probabilities:
            order = np.argsort(-row, kind="stable")[: min(top_k, len(labels))]
            rows.append([{"label": labels[i], "score": round(float(row[i]), 6)} for i in order])
    modalities = modalities or [("image", "text")] * len(rows)
    return [Prediction(row, seen) for row, seen in zip(rows, modalities)]


__all__ = [
    "ImageTooLarge",
    "InputError",
    "NoImageFile",
    "Prediction",
    "Prepared",
    "check_request",
    "check_text",
    "load_image",
    "pad_ids",
    "to_predictions",
]
