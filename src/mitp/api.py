"""``mitp.Classifier``: a trained model, loaded for prediction on PyTorch or on onnxruntime.

``Classifier.from_pretrained(path)`` reads a model folder (``mitp export``'s, or a run's best checkpoint, given
the run directory) and returns a :class:`mitp.torch_runtime.TorchClassifier`; with ``runtime="onnx"`` an
:class:`mitp.onnx_runtime.OnnxClassifier` (an ONNX export, no torch imported). Both are Classifiers and answer
``predict`` alike: the same inputs, the same errors, the same outputs. This module imports neither runtime, so
``from mitp import Classifier`` works where torch is absent.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
from PIL import Image

from .data.images import DEFAULT_MAX_IMAGE_PIXELS
from .data.manifest import LabelSpace
from .errors import MitpError
from .inputs import InputError, Prediction, Prepared, check_request, check_text, load_image, to_predictions
from .records import ModelConfig


class NonFiniteOutput(MitpError):
    """Logits that are NaN or infinite: answered with this error, never with a NaN score."""


RUNTIMES = {"torch": "mitp.torch_runtime:TorchClassifier", "onnx": "mitp.onnx_runtime:OnnxClassifier"}


class Classifier:
    """A trained method with its preprocessing and label names; a runtime gives three hooks: ``pixels(image)``
    and ``tokens(text)`` (None: that modality is missing) and ``logits(samples)``."""

    runtime = ""
    config: ModelConfig  # the model folder's config.json
    labels: LabelSpace
    # decoded pixels an input image may have (checked from its header, before decoding); None: no limit
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS

    @staticmethod
    def from_pretrained(path: str | os.PathLike, device=None, runtime: str = "torch", quantized: bool = False):
        """A model folder or a run directory (its best checkpoint) on ``runtime`` ("torch" or "onnx"; the int8
        graph with ``quantized``)."""
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(map(repr, RUNTIMES))}, got {runtime!r}")
        if quantized and runtime != "onnx":
            raise ValueError("quantized applies to runtime='onnx' (the int8 graph)")
        # The runtime's module only when asked for (torch, or onnxruntime: a deployment has one of them); by name,
        # since the runtimes subclass this class.
        module, name = RUNTIMES[runtime].split(":")
        loaded = getattr(importlib.import_module(module), name)
        return (
            loaded.from_pretrained(path, quantized=quantized)
            if runtime == "onnx"
            else loaded.from_pretrained(path, device)
        )

    @property
    def method(self) -> str:
        return self.config.method["method"]

    @property
    def threshold(self) -> float:
        """The multi-label decision threshold the model was trained with (chosen on validation for ``auto``)."""
        return 0.5 if self.config.threshold is None else self.config.threshold

    def predict(
        self, images: list | None = None, texts: list[str | None] | None = None, top_k: int = 5, batch_size: int = 32
    ) -> list[Prediction]:
        """One :class:`Prediction` (a list of ``{"label", "score"}``) per sample: the top-k softmax
        probabilities (single-label), or every label whose sigmoid probability passes the model's
        threshold (multi-label).

        Images may be PIL images, paths or bytes. A missing modality is ``None`` (per sample, or the
        whole list: ``predict(texts=[...])`` classifies texts alone). Bad inputs raise
        :class:`InputError` naming them."""
        images, texts = check_request(images, texts, top_k, batch_size)
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
        """Predictions from (N, K) logits; logits that are not finite are a NonFiniteOutput, never a NaN score."""
        logits = np.asarray(logits, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=-1)) if logits.size else []
        if len(bad):
            raise NonFiniteOutput(
                f"the model gave NaN or infinite logits for sample(s) {', '.join(map(str, bad[:5]))}: its files "
                "are damaged (a preprocessing value in onnx.json, a weight) or it diverged"
            )
        return to_predictions(logits, self.labels.labels, self.labels.task, top_k, self.threshold, modalities)

    def pixels(self, image: Image.Image | None):
        """The model's pixel input for a decoded image, or for a missing one (None)."""
        raise NotImplementedError

    def tokens(self, text: str | None) -> list[int]:
        """Token ids for a checked text, or for a missing one (None)."""
        raise NotImplementedError

    def logits(self, samples: list[Prepared]):
        """(N, K) logits for prepared samples, as one batch (an array or a CPU tensor)."""
        raise NotImplementedError


def labels_of(config: ModelConfig) -> LabelSpace:
    return LabelSpace(config.labels.task, tuple(config.labels.labels))


__all__ = ["Classifier", "NonFiniteOutput", "labels_of"]
