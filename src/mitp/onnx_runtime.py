"""Predict with an exported ONNX graph: onnxruntime, NumPy and PIL, no PyTorch.

``OnnxClassifier.from_pretrained(folder)`` reads a folder written by ``mitp export RUN --out DIR --onnx``
(config.json for the labels and threshold, onnx.json for the graph's inputs and preprocessing) and
answers ``predict`` as :class:`mitp.classifier.Classifier` does: the same inputs (paths, bytes or PIL
images; None for a missing modality), the same errors, the same outputs. ``quantized=True`` runs the
int8 graph. A deployment needs NumPy, Pillow, onnxruntime and tokenizers, and no torch (tested: this
path imports nothing else; docs/guides/deploy.md has the install).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .data.images import DEFAULT_MAX_IMAGE_PIXELS, ImageTransform
from .data.manifest import LabelSpace
from .data.text import HashTokenizer
from .files import (
    EXPORT_CONFIG,
    ONNX_FILE,
    RUNTIME_FILE,
    RUNTIME_FORMAT,
    CheckpointError,
    check_fields,
    read_export_config,
    read_json_file,
)
from .inputs import Predictor, Prepared, pad_ids


class TokenizersTokenizer:
    """A Hugging Face fast tokenizer's ``tokenizer.json`` (the ``tokenizers`` library), truncated to
    ``max_length`` tokens, special tokens included: what the text tower was trained on."""

    def __init__(self, path: Path, max_length: int):
        from tokenizers import Tokenizer  # comes with the onnx extra (and with transformers)

        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)

    def __call__(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids


class OnnxClassifier(Predictor):
    """A trained model as an ONNX graph, with its preprocessing and label names."""

    runtime = "onnx"

    def __init__(
        self,
        session,
        labels: LabelSpace,
        info: dict,
        spec: dict,
        folder: Path,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        self.session, self.labels, self.info, self.spec = session, labels, info, spec
        self.max_image_pixels = max_image_pixels
        pre = spec["preprocessing"]
        image = dict(pre["image"])
        image["resample"] = Image.Resampling(image["resample"])
        for key in ("resize_to", "crop", "mean", "std"):
            if image.get(key) is not None:
                image[key] = tuple(image[key])
        self.transform = ImageTransform(**image)
        text = dict(pre["text"])
        kind = text.pop("kind")
        self.tokenize = (
            TokenizersTokenizer(folder / text["file"], text["max_length"])
            if kind == "tokenizers"
            else HashTokenizer(**text)
        )
        self.pad_token_id = int(pre["pad_token_id"])
        self.blank = np.ones(pre["blank_image_shape"], dtype=np.float32)
        self.empty_text = list(pre["empty_text"])
        self.inputs = list(spec["inputs"])

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, quantized: bool = False, threads: int | None = None
    ) -> OnnxClassifier:
        """``threads``: onnxruntime's intra-op threads (default: its own, one per physical core)."""
        import onnxruntime as ort  # a deployment installs it (docs/guides/deploy.md)

        folder = Path(folder)
        runtime_file = folder / RUNTIME_FILE
        if not runtime_file.is_file():
            raise CheckpointError(
                f"{folder}: no {RUNTIME_FILE}; export the model with `mitp export RUN --out {folder} --onnx`"
            )
        config = read_export_config(folder / EXPORT_CONFIG)
        spec = check_fields(
            runtime_file,
            read_json_file(runtime_file),
            {
                "format": str,
                "inputs": list,
                "reads_modality_mask": bool,
                "opset": int,
                "parity_max_abs": float,
                "int8": (str, type(None)),
                "preprocessing": dict,
            },
            required=("format", "inputs", "preprocessing"),
        )
        if spec["format"] != RUNTIME_FORMAT:
            raise CheckpointError(f"{runtime_file}: format is {spec['format']!r}, not {RUNTIME_FORMAT!r}")
        if quantized and not spec.get("int8"):
            raise CheckpointError(f"{folder}: no int8 graph; export with --onnx --quantize int8")
        graph = folder / (spec["int8"] if quantized else ONNX_FILE)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        labels = LabelSpace(config["labels"]["task"], tuple(config["labels"]["labels"]))
        info = {
            "backbone": config["backbone"]["spec"],
            "method": config["method"].get("method"),
            **{k: config.get(k) for k in ("preprocessing", "data", "source", "results", "threshold")},
            "graph": graph.name,
        }
        return cls(session, labels, info, spec, folder)

    @property
    def method(self) -> str:
        return self.info["method"]

    can_explain = False  # the graph has no trace of its hub and attention: explain runs on PyTorch

    def pixels(self, image):
        return self.transform(image) if image is not None else self.blank

    def tokens(self, text: str | None) -> list[int]:
        return self.tokenize(text) if text is not None else self.empty_text

    def logits(self, samples: list[Prepared]) -> np.ndarray:
        input_ids, mask = pad_ids([s.tokens for s in samples], self.pad_token_id)
        feed = {
            "pixel_values": np.stack([s.pixels for s in samples]).astype(np.float32),
            "input_ids": input_ids,
            "attention_mask": mask,
            "modality_mask": np.array([s.present for s in samples], dtype=bool),
        }
        return self.session.run(None, {name: feed[name] for name in self.inputs})[0]


__all__ = ["OnnxClassifier", "TokenizersTokenizer"]
