"""Predict with an exported ONNX graph: onnxruntime, NumPy and PIL, no PyTorch.

``OnnxClassifier.from_pretrained(folder)`` reads a folder written by ``mitp export RUN --out DIR --onnx``
(config.json for the labels and threshold, onnx.json for the graph's inputs and preprocessing) and answers
``predict`` as the PyTorch classifier does: the same inputs (paths, bytes or PIL images; None for a missing
modality), the same errors, the same outputs. ``quantized=True`` runs the int8 graph. Every file is read as a
file from a stranger: each key of config.json and onnx.json is checked, every file they name must lie inside
the folder, and the graph's inputs and outputs must be what onnx.json and the labels say. A deployment needs
NumPy, Pillow, onnxruntime and tokenizers, and no torch (tested: this path imports nothing else;
docs/guides/deploy.md has the install).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .api import Classifier, labels_of
from .data.images import ImageTransform
from .data.text import HashTokenizer
from .files import ONNX_FILE, RUNTIME_FILE, CheckpointError, file_in, sha256_of
from .inputs import Prepared, pad_ids
from .records import ModelConfig, RuntimeSpec, read_model_config, read_runtime_spec

# rank and element type of each graph input, as the exporter writes them
GRAPH_INPUTS = {
    "pixel_values": (4, "tensor(float)"),
    "input_ids": (2, "tensor(int64)"),
    "attention_mask": (2, "tensor(int64)"),
    "modality_mask": (2, "tensor(bool)"),
}


class TokenizersTokenizer:
    """A Hugging Face fast tokenizer's ``tokenizer.json`` (the ``tokenizers`` library), truncated to
    ``max_length`` tokens, special tokens included: what the text tower was trained on."""

    def __init__(self, path: Path, max_length: int):
        from tokenizers import Tokenizer  # comes with the onnx extra (and with transformers)

        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # the Rust library raises its own exception type for any malformed file
            raise CheckpointError(f"{path}: not a readable tokenizer.json ({str(err)[:200]})") from None
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)

    def __call__(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    @property
    def vocab_size(self) -> int:
        """One more than the largest id it gives (ids need not be dense)."""
        return max(self.tokenizer.get_vocab(with_added_tokens=True).values(), default=0) + 1


class OnnxClassifier(Classifier):
    """A trained model as an ONNX graph, with its preprocessing and label names."""

    runtime = "onnx"
    can_explain = False  # the graph has no trace of its hub and attention: explain runs on PyTorch

    def __init__(self, session, config: ModelConfig, spec: RuntimeSpec, folder: Path, graph: Path):
        self.session, self.config, self.spec, self.graph = session, config, spec, graph
        self.labels = labels_of(config)
        pre = spec.preprocessing
        image = pre.image.model_dump()
        image["resample"] = Image.Resampling(image["resample"])
        self.transform = ImageTransform(**{k: tuple(v) if isinstance(v, list) else v for k, v in image.items()})
        text = pre.text.model_dump()
        if text.pop("kind") == "tokenizers":
            tokenizer = file_in(folder, text["file"], f"{folder / RUNTIME_FILE}: preprocessing.text.file")
            self.tokenize = TokenizersTokenizer(tokenizer, text["max_length"])
        else:
            self.tokenize = HashTokenizer(**text)
        self.pad_token_id = pre.pad_token_id
        self.blank = np.ones(pre.blank_image_shape, dtype=np.float32)
        self.empty_text = list(pre.empty_text)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, quantized: bool = False, threads: int | None = None):
        """``threads``: onnxruntime's intra-op threads (default: its own, one per physical core)."""
        import onnxruntime as ort  # a deployment installs it (docs/guides/deploy.md)

        folder = Path(folder)
        spec = read_runtime_spec(folder)
        config = read_model_config(folder)
        if quantized and not spec.int8:
            raise CheckpointError(f"{folder}: no int8 graph; export with --onnx --quantize int8")
        named_by = f"{folder / RUNTIME_FILE}: int8" if quantized else f"{folder}: {ONNX_FILE}"
        graph = file_in(folder, spec.int8 if quantized else ONNX_FILE, named_by)
        options = ort.SessionOptions()
        options.log_severity_level = 4  # its errors reach the user as one named line, not as its own log
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for any graph it cannot load
            raise CheckpointError(f"{graph}: not a loadable ONNX graph ({str(err)[:200]})") from None
        expected = spec.sha256.get(spec.int8 if quantized else ONNX_FILE)
        if sha256_of(graph) != expected:
            raise CheckpointError(
                f"{graph}: not the graph this folder's {RUNTIME_FILE} was exported with (its SHA-256 is not the one "
                f"{RUNTIME_FILE} records); export the model again rather than moving graphs between folders"
            )
        check_graph(session, graph, spec, len(config.labels.labels))
        classifier = cls(session, config, spec, folder, graph)
        classifier.check_runs(folder)
        return classifier

    def check_runs(self, folder: Path) -> None:
        """One prediction on the folder's own preprocessing (an image and a text, and each missing), so a model
        whose files disagree (a token id the graph has no embedding for, an image size it does not take, a
        preprocessing value that gives NaN) is refused when it loads, not at every request."""
        image = Image.new("RGB", (40, 30), (120, 60, 200))
        try:
            samples = [self.prepare(image, "a photo"), self.prepare(None, "a photo"), self.prepare(image, None)]
            self.to_predictions(self.logits(samples))
        except Exception as err:  # numpy, PIL, tokenizers and onnxruntime each raise their own kinds
            raise CheckpointError(
                f"{folder}: the graph does not run on the preprocessing onnx.json describes ({type(err).__name__}: "
                f"{str(err)[:200]})"
            ) from None
        # the longest text the tokenizer gives, its words at the tokenizer's largest id: what a request can send
        longest = self.tokens("word " * 100_000)
        widest = longest[:1] + [self.tokenize.vocab_size - 1] * (len(longest) - 2) + longest[-1:]
        try:
            self.to_predictions(self.logits([Prepared(self.blank, widest, (False, True))]))
        except Exception as err:
            raise CheckpointError(
                f"{folder / RUNTIME_FILE}: the graph does not take the texts its preprocessing gives "
                f"({len(widest)} tokens, text.max_length {self.spec.preprocessing.text.max_length}, ids up to "
                f"{self.tokenize.vocab_size - 1}): {type(err).__name__}: {str(err)[:160]}"
            ) from None

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
        try:
            logits = self.session.run(None, {name: feed[name] for name in self.spec.inputs})[0]
        except Exception as err:  # onnxruntime raises its own exception types
            raise CheckpointError(f"{self.graph}: failed on a batch ({str(err)[:200]})") from None
        if logits.shape != (len(samples), len(self.labels.labels)):
            raise CheckpointError(
                f"{self.graph}: gave logits of shape {logits.shape} for {len(samples)} samples and "
                f"{len(self.labels.labels)} labels"
            )
        return logits


def check_graph(session, graph: Path, spec: RuntimeSpec, num_labels: int) -> None:
    """The graph takes exactly the inputs onnx.json lists, with the exporter's ranks and types, and gives one
    (batch, labels) output; anything else is a CheckpointError naming the graph."""
    inputs = {i.name: i for i in session.get_inputs()}
    if sorted(inputs) != sorted(spec.inputs):
        raise CheckpointError(f"{graph}: takes inputs {sorted(inputs)}, but onnx.json lists {sorted(spec.inputs)}")
    for name, node in inputs.items():
        rank, kind = GRAPH_INPUTS[name]
        if len(node.shape) != rank or node.type != kind:
            raise CheckpointError(
                f"{graph}: input {name} is {node.type} of rank {len(node.shape)}, not {kind} of rank {rank}"
            )
    channels = inputs["pixel_values"].shape[1:]
    static = [d for d in channels if isinstance(d, int)]
    if static and list(channels) != list(spec.preprocessing.blank_image_shape):
        raise CheckpointError(
            f"{graph}: takes images of shape {list(channels)}, onnx.json preprocesses to "
            f"{spec.preprocessing.blank_image_shape}"
        )
    outputs = session.get_outputs()
    shape = outputs[0].shape if len(outputs) == 1 else None
    if shape is None or len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != num_labels):
        described = [list(o.shape) for o in outputs]
        raise CheckpointError(
            f"{graph}: gives outputs of shapes {described}, not one (batch, {num_labels}) for the labels"
        )


__all__ = ["OnnxClassifier", "TokenizersTokenizer", "check_graph"]
