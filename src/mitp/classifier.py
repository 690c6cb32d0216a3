"""Use a trained model in one line: ``Classifier.from_pretrained(path).predict(images=..., texts=...)``.

``path`` is a run directory (its best checkpoint) or a folder written by :meth:`save_pretrained` /
``mitp export``, in a Hub-style layout with no pickle anywhere:

    config.json        the method config, the backbone spec and shapes, the labels, the preprocessing
    model.safetensors  the trainable tensors only (the frozen backbone is rebuilt from its spec)
    README.md          a model card: task, data, metrics, parameters, how it was trained, limitations

Loading rebuilds the backbone from its spec and refuses one whose shapes differ from those the
model was trained on (a named :class:`~mitp.checkpoint.CheckpointError`, not garbage).

An image or a text may be missing (``None``, or ``images=None`` / ``texts=None`` for all): it
reaches the model as a blank image / an empty text with a modality mask saying so, as in training
with missing modalities; each prediction's ``modalities`` records what it saw.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image, UnidentifiedImageError

from .backbones import build_backbone
from .checkpoint import (CONFIG_NAME, WEIGHTS_NAME, CheckpointError, check_fields, load_checkpoint, load_trainable,
                         method_config, read_json_file, save_checkpoint)
from .data.dataset import pad_token_ids
from .data.images import DEFAULT_MAX_IMAGE_PIXELS, to_rgb
from .data.manifest import LabelSpace, read_labels
from .data.preprocess import Preprocessor
from .jsonio import has_lone_surrogate
from .methods import build_model
from .model_card import model_card
from .runs import Run

EXPORT_CONFIG = "config.json"
EXPORT_WEIGHTS = "model.safetensors"
MODEL_CARD = "README.md"
FORMAT = "mitp-classifier-1"


class InputError(ValueError):
    """A prediction input that cannot be used; ``field`` names it (``images[2]``, ``texts[0]``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class NoImageFile(InputError):
    """An image given as a path that does not name a file."""


class ImageTooLarge(InputError):
    """An input image with more pixels than ``Classifier.max_image_pixels``."""


class Prepared(NamedTuple):
    """One sample as model inputs: pixels (a blank image if absent), token ids (the specials only if
    absent) and which modalities are really there."""

    pixels: torch.Tensor
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


@dataclass
class Classifier:
    """A trained method on its frozen backbone, with its preprocessing and label names."""

    model: torch.nn.Module
    preprocessor: Preprocessor
    labels: LabelSpace
    info: dict  # backbone spec, preprocessing, results and provenance, for the model card
    # decoded pixels an input image may have (checked from its header, before decoding); None: no limit
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS

    # --- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> "Classifier":
        """A run directory (its best checkpoint) or an exported folder."""
        path = Path(path)
        if (path / EXPORT_CONFIG).is_file() and (path / EXPORT_WEIGHTS).is_file():
            return cls._from_export(path, device)
        if Run(path).config_path.is_file():
            return cls._from_run(Run(path), device)
        raise CheckpointError(f"{path}: neither an exported model ({EXPORT_CONFIG} + {EXPORT_WEIGHTS}) nor a run "
                              "directory (config.yaml)")

    @classmethod
    def _from_run(cls, run: Run, device) -> "Classifier":
        config = run.read_config()
        best = run.best_checkpoint()
        backbone = build_backbone(config["backbone"])
        model = load_checkpoint(best, backbone).eval()
        labels = read_labels(run.labels_dir(config))
        train = config.get("train") or {}
        preprocessing = {"max_text_length": train.get("max_text_length"), "image_size": train.get("image_size")}
        results = run.read_results() or {}
        threshold = (config.get("eval") or {}).get("threshold", 0.5)
        if threshold == "auto" and not labels.multi_label:
            threshold = 0.5  # unused by single-label predictions
        elif threshold == "auto":  # chosen on validation when the run finished
            if not isinstance(results.get("threshold"), (int, float)):
                raise CheckpointError(f"{run.path}: eval.threshold is auto, and the threshold is chosen on "
                                      "validation when training finishes; this run has no results.json with it yet")
            threshold = results["threshold"]
        info = {"backbone": config["backbone"], "preprocessing": preprocessing, "data": run.data_dir(config),
                "source": str(run.path), "results": results, "threshold": threshold}
        return cls._assemble(model, backbone, labels, info, device)

    @classmethod
    def _from_export(cls, folder: Path, device) -> "Classifier":
        path = folder / EXPORT_CONFIG
        config = read_export_config(path)
        backbone = build_backbone(config["backbone"]["spec"])
        _check_backbone(path, config["backbone"], backbone)
        model = build_model(method_config(path, config["method"]), backbone)
        load_trainable(model, folder / EXPORT_WEIGHTS, saved_backbone=config["backbone"])
        labels = LabelSpace(config["labels"]["task"], tuple(config["labels"]["labels"]))
        info = {k: config.get(k) for k in ("preprocessing", "data", "source", "results", "threshold")}
        info["backbone"] = config["backbone"]["spec"]
        return cls._assemble(model.eval(), backbone, labels, info, device)

    @classmethod
    def _assemble(cls, model, backbone, labels: LabelSpace, info: dict, device) -> "Classifier":
        if labels.num_classes != model.config.num_classes or labels.task != model.config.task:
            raise CheckpointError(f"the labels ({labels.task}, {labels.num_classes}) do not fit the model "
                                  f"({model.config.task}, {model.config.num_classes} outputs)")
        pre = info["preprocessing"]
        preprocessor = Preprocessor.for_backbone(backbone, pre.get("max_text_length"), pre.get("image_size"))
        if device is not None:
            model.to(device)
        return cls(model, preprocessor, labels, info)

    # --- predicting ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predict(self, images: list | None = None, texts: list[str | None] | None = None, top_k: int = 5,
                batch_size: int = 32) -> list[Prediction]:
        """One :class:`Prediction` (a list of ``{"label", "score"}``) per sample: the top-k softmax
        probabilities (single-label), or every label whose sigmoid probability passes the run's
        threshold (multi-label).

        Images may be PIL images, paths or bytes. A missing modality is ``None`` (per sample, or the
        whole list: ``predict(texts=[...])`` classifies texts alone). Bad inputs raise
        :class:`InputError` naming them."""
        if images is None and texts is None:
            raise InputError("images", "give images, texts or both")
        images = [None] * len(texts) if images is None else list(images)
        texts = [None] * len(images) if texts is None else list(texts)
        if len(images) != len(texts):
            raise InputError("texts", f"{len(texts)} texts for {len(images)} images; give one text per image "
                                      "(None where a text is missing)")
        if top_k < 1:
            raise InputError("top_k", f"must be >= 1, got {top_k}")
        samples = [self.prepare(image, text, f"images[{i}]", f"texts[{i}]")
                   for i, (image, text) in enumerate(zip(images, texts))]
        logits = torch.cat([self.logits(samples[start:start + batch_size])
                            for start in range(0, len(samples), batch_size)]) if samples else torch.zeros(0)
        return self.to_predictions(logits, top_k, [s.modalities for s in samples])

    def prepare(self, image, text: str | None, image_field: str = "image", text_field: str = "text") -> Prepared:
        """One sample as model inputs; either side may be None (missing). InputError names a bad field."""
        if image is None and text is None:
            raise InputError(text_field, f"neither {image_field} nor {text_field} is given; a sample needs one")
        pixels = self._pixels(image, image_field) if image is not None else \
            torch.from_numpy(self.preprocessor.blank_image())
        tokens = self._tokens(text, text_field) if text is not None else self.preprocessor.empty_text()
        return Prepared(pixels, tokens, (image is not None, text is not None))

    @torch.inference_mode()
    def logits(self, samples: list[Prepared]) -> torch.Tensor:
        """Logits (on the CPU) for prepared samples, as one batch."""
        input_ids, mask = pad_token_ids([s.tokens for s in samples], self.preprocessor.pad_token_id)
        pixels = torch.stack([s.pixels for s in samples])
        present = torch.tensor([s.present for s in samples], dtype=torch.bool)
        return self.model(pixel_values=pixels.to(self.device), input_ids=input_ids.to(self.device),
                          attention_mask=mask.to(self.device),
                          modality_mask=present.to(self.device)).logits.float().cpu()

    def to_predictions(self, logits: torch.Tensor, top_k: int = 5, modalities: list | None = None
                       ) -> list[Prediction]:
        rows = scores_to_predictions(logits, self.labels.labels, self.labels.task, top_k,
                                     self.info.get("threshold") or 0.5)
        modalities = modalities or [("image", "text")] * len(rows)
        return [Prediction(row, seen) for row, seen in zip(rows, modalities)]

    def _pixels(self, image, field: str) -> torch.Tensor:
        try:
            if isinstance(image, (bytes, bytearray)):
                with _quiet_bombs(), Image.open(io.BytesIO(image)) as img:
                    self._check_pixels(img, field)
                    img.load()
                    image = to_rgb(img)
            elif isinstance(image, (str, os.PathLike)):
                if not os.path.isfile(image):
                    raise NoImageFile(field, f"no image file {os.fspath(image)!r}")
                with _quiet_bombs(), Image.open(image) as img:
                    self._check_pixels(img, field)
                    img.load()
                    image = to_rgb(img)
            elif isinstance(image, Image.Image):
                image = to_rgb(image)
            else:
                raise InputError(field, f"expected a PIL image, a path or bytes, got {type(image).__name__}")
            return torch.from_numpy(self.preprocessor.image(image))
        except InputError:
            raise
        except Image.DecompressionBombError as err:  # PIL's own refusal (over twice its 89 MP default)
            raise ImageTooLarge(field, f"over the pixel limit ({err})") from err
        except UnidentifiedImageError as err:  # PIL's message holds the stream's repr, a memory address
            raise InputError(field, "cannot be decoded as an image (not a format PIL recognises, or empty)") from err
        except (OSError, ValueError, SyntaxError) as err:
            raise InputError(field, f"cannot be decoded as an image ({err})") from err

    def _check_pixels(self, img: Image.Image, field: str) -> None:
        """Refuse, from the header alone, an image whose decoded pixels would pass ``max_image_pixels``."""
        limit = self.max_image_pixels
        width, height = img.size
        if limit is not None and width * height > limit:
            raise ImageTooLarge(field, f"{width} x {height} = {width * height:,} pixels is over the "
                                       f"{limit:,}-pixel limit")

    def _tokens(self, text, field: str) -> list[int]:
        if not isinstance(text, str):
            raise InputError(field, f"expected a string, got {type(text).__name__}")
        if not text.strip():
            raise InputError(field, "empty text")
        if has_lone_surrogate(text):
            raise InputError(field, "not valid Unicode: the text holds a lone surrogate such as \\ud800")
        return self.preprocessor.text(text)

    # --- saving ------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json``, ``model.safetensors`` and the model card ``README.md`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.model, folder)  # trainable.safetensors + method.json, written atomically
        os.replace(folder / WEIGHTS_NAME, folder / EXPORT_WEIGHTS)
        meta = json.loads((folder / CONFIG_NAME).read_text())
        (folder / CONFIG_NAME).unlink()
        config = {"format": FORMAT, "method": meta["method"], "backbone": meta["backbone"],
                  "labels": {"task": self.labels.task, "labels": list(self.labels.labels)},
                  **{k: self.info.get(k) for k in ("preprocessing", "data", "source", "results", "threshold")}}
        (folder / EXPORT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (folder / MODEL_CARD).write_text(model_card(self, config))
        return folder


OPTIONAL_STR = (str, type(None))
OPTIONAL_INT = (int, type(None))


def read_export_config(path: Path) -> dict:
    """An exported model's config.json, every key checked (an unknown key is an error, not ignored)."""
    config = check_fields(path, read_json_file(path), {
        "format": str, "method": dict, "backbone": dict, "labels": dict, "preprocessing": dict,
        "data": OPTIONAL_STR, "source": OPTIONAL_STR, "results": (dict, type(None)),
        "threshold": (float, int, type(None))}, required=("format", "method", "backbone", "labels", "preprocessing"))
    if config["format"] != FORMAT:
        raise CheckpointError(f"{path}: format is {config['format']!r}, not {FORMAT!r}")
    check_fields(path, config["backbone"], {"spec": str}, required=("spec",), where="backbone.", allow_unknown=True)
    check_fields(path, config["labels"], {"task": str, "labels": list}, required=("task", "labels"), where="labels.")
    if config["labels"]["task"] not in ("single_label", "multi_label") or not config["labels"]["labels"] or \
            not all(isinstance(name, str) and name for name in config["labels"]["labels"]):
        raise CheckpointError(f"{path}: labels must hold a task (single_label or multi_label) and a non-empty "
                              "list of label names")
    check_fields(path, config["preprocessing"], {"max_text_length": OPTIONAL_INT, "image_size": OPTIONAL_INT},
                 where="preprocessing.")
    return config


@contextlib.contextmanager
def _quiet_bombs():
    """PIL warns on opening a large image; the classifier checks the size itself, right after."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _check_backbone(where: Path, saved: dict, backbone) -> None:
    differs = {k: (saved[k], v) for k, v in backbone.shapes().items() if k in saved and saved[k] != v}
    if differs:
        raise CheckpointError(f"{where}: trained on backbone {saved.get('spec')!r} but {backbone.spec!r} differs: "
                              + ", ".join(f"{k} {a} != {b}" for k, (a, b) in differs.items()))


def scores_to_predictions(logits: torch.Tensor, labels, task: str, top_k: int = 1, threshold: float = 0.5):
    """One list of {label, score} per row: top-k softmax (single-label) or all above threshold (multi-label)."""
    rows = []
    if task == "multi_label":
        probs = torch.sigmoid(logits.float())
        for row in probs:
            picked = [(labels[i], p) for i, p in enumerate(row.tolist()) if p > threshold]
            rows.append([{"label": name, "score": round(p, 6)} for name, p in sorted(picked, key=lambda x: -x[1])])
    else:
        probs = torch.softmax(logits.float(), dim=-1)
        values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        for v, i in zip(values.tolist(), indices.tolist()):
            rows.append([{"label": labels[j], "score": round(p, 6)} for p, j in zip(v, i)])
    return rows
