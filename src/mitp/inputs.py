"""Prediction inputs and outputs that need no torch: checking and decoding an image or a text, padding
token ids, and turning logits into labelled scores. Shared by the PyTorch classifier and the
onnxruntime one, so both accept the same inputs, refuse the same bad ones, and answer alike."""

from __future__ import annotations

import contextlib
import io
import os
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
        raise InputError(field, f"cannot be decoded as an image ({err})") from err


def check_text(text, field: str) -> str:
    """``text`` if it can be a sample's text (the manifest's own rule); else an InputError naming ``field``."""
    try:
        return check_sample_text(text, "")
    except ManifestError as err:
        raise InputError(field, err.message) from None


def check_request(images, texts, top_k: int) -> tuple[list, list]:
    """The (images, texts) lists of a predict call, one entry per sample (None: that modality is absent)."""
    if images is None and texts is None:
        raise InputError("images", "give images, texts or both")
    images = [None] * len(texts) if images is None else list(images)
    texts = [None] * len(images) if texts is None else list(texts)
    if len(images) != len(texts):
        raise InputError(
            "texts",
            f"{len(texts)} texts for {len(images)} images; give one text per image (None where a text is missing)",
        )
    if top_k < 1:
        raise InputError("top_k", f"must be >= 1, got {top_k}")
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


class Predictor:
    """What both runtimes share: a request checked, its samples prepared, logits in batches, predictions.

    A runtime gives ``labels`` (a LabelSpace), ``info`` (its ``threshold``), ``max_image_pixels`` and
    three hooks: ``pixels(image)`` and ``tokens(text)`` (None: the modality is missing) and ``logits``.
    """

    def predict(
        self, images: list | None = None, texts: list[str | None] | None = None, top_k: int = 5, batch_size: int = 32
    ) -> list[Prediction]:
        """One :class:`Prediction` (a list of ``{"label", "score"}``) per sample: the top-k softmax
        probabilities (single-label), or every label whose sigmoid probability passes the run's
        threshold (multi-label).

        Images may be PIL images, paths or bytes. A missing modality is ``None`` (per sample, or the
        whole list: ``predict(texts=[...])`` classifies texts alone). Bad inputs raise
        :class:`InputError` naming them."""
        images, texts = check_request(images, texts, top_k)
        samples = [
            self.prepare(image, text, f"images[{i}]", f"texts[{i}]")
            for i, (image, text) in enumerate(zip(images, texts))
        ]
        chunks = [
            np.asarray(self.logits(samples[start : start + batch_size]), dtype=np.float32)
            for start in range(0, len(samples), batch_size)
        ]
        logits = np.concatenate(chunks) if chunks else np.zeros((0, len(self.labels.labels)), dtype=np.float32)
        return self.to_predictions(logits, top_k, [s.modalities for s in samples])

    def prepare(self, image, text: str | None, image_field: str = "image", text_field: str = "text") -> Prepared:
        """One sample as model inputs; either side may be None (missing). InputError names a bad field."""
        if image is None and text is None:
            raise InputError(text_field, f"neither {image_field} nor {text_field} is given; a sample needs one")
        pixels = self.pixels(load_image(image, image_field, self.max_image_pixels) if image is not None else None)
        tokens = self.tokens(check_text(text, text_field) if text is not None else None)
        return Prepared(pixels, tokens, (image is not None, text is not None))

    def to_predictions(self, logits, top_k: int = 5, modalities: list | None = None) -> list[Prediction]:
        return to_predictions(
            logits, self.labels.labels, self.labels.task, top_k, self.info.get("threshold") or 0.5, modalities
        )

    def pixels(self, image: Image.Image | None):
        """The model's pixel input for a decoded image, or for a missing one (None)."""
        raise NotImplementedError

    def tokens(self, text: str | None) -> list[int]:
        """Token ids for a checked text, or for a missing one (None)."""
        raise NotImplementedError

    def logits(self, samples: list[Prepared]):
        """(N, K) logits for prepared samples, as one batch (an array or a CPU tensor)."""
        raise NotImplementedError


__all__ = [
    "ImageTooLarge",
    "InputError",
    "NoImageFile",
    "Prediction",
    "Predictor",
    "Prepared",
    "check_request",
    "check_text",
    "load_image",
    "pad_ids",
    "to_predictions",
]
