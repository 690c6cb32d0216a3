"""``mitp.Classifier``: load a trained model for prediction, on PyTorch or on onnxruntime.

``Classifier.from_pretrained(path)`` is :class:`mitp.classifier.Classifier` (PyTorch: a run directory or
an exported folder); ``Classifier.from_pretrained(folder, runtime="onnx")`` is
:class:`mitp.onnx_runtime.OnnxClassifier` (an ONNX export, no torch imported). Both answer ``predict``
alike. This module imports neither, so ``from mitp import Classifier`` works where torch is absent.
"""

from __future__ import annotations

import os


class Classifier:
    """Load a trained model; the runtime decides the class of what comes back (both predict alike)."""

    @staticmethod
    def from_pretrained(path: str | os.PathLike, device=None, runtime: str = "torch", quantized: bool = False):
        if runtime == "onnx":
            from .onnx_runtime import OnnxClassifier  # no torch on this path: a deployment may lack it

            return OnnxClassifier.from_pretrained(path, quantized=quantized)
        if runtime != "torch":
            raise ValueError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
        if quantized:
            raise ValueError("quantized applies to runtime='onnx' (the int8 graph)")
        from .classifier import Classifier as TorchClassifier  # torch, only when asked for

        return TorchClassifier.from_pretrained(path, device)


__all__ = ["Classifier"]
