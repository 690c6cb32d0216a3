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

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .backbones import build_backbone
from .checkpoint import load_checkpoint, load_trainable, method_config, save_checkpoint
from .data.dataset import pad_token_ids
from .data.images import DEFAULT_MAX_IMAGE_PIXELS
from .data.manifest import LabelSpace, read_labels
from .data.preprocess import Preprocessor
from .files import (
    CONFIG_NAME,
    EXPORT_CONFIG,
    EXPORT_WEIGHTS,
    FORMAT,
    MODEL_CARD,
    WEIGHTS_NAME,
    CheckpointError,
    read_export_config,
)
from .inputs import Predictor, Prepared
from .methods import build_model
from .model_card import model_card
from .runs import Run


@dataclass
class Classifier(Predictor):
    """A trained method on its frozen backbone, with its preprocessing and label names."""

    model: torch.nn.Module
    preprocessor: Preprocessor
    labels: LabelSpace
    info: dict  # backbone spec, preprocessing, results and provenance, for the model card
    # decoded pixels an input image may have (checked from its header, before decoding); None: no limit
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS

    # --- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> Classifier:
        """A run directory (its best checkpoint) or an exported folder."""
        path = Path(path)
        if (path / EXPORT_CONFIG).is_file() and (path / EXPORT_WEIGHTS).is_file():
            return cls._from_export(path, device)
        if Run(path).config_path.is_file():
            return cls._from_run(Run(path), device)
        raise CheckpointError(
            f"{path}: neither an exported model ({EXPORT_CONFIG} + {EXPORT_WEIGHTS}) nor a run directory (config.yaml)"
        )

    @classmethod
    def _from_run(cls, run: Run, device) -> Classifier:
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
                raise CheckpointError(
                    f"{run.path}: eval.threshold is auto, and the threshold is chosen on "
                    "validation when training finishes; this run has no results.json with it yet"
                )
            threshold = results["threshold"]
        info = {
            "backbone": config["backbone"],
            "preprocessing": preprocessing,
            "data": run.data_dir(config),
            "source": str(run.path),
            "results": results,
            "threshold": threshold,
        }
        return cls._assemble(model, backbone, labels, info, device)

    @classmethod
    def _from_export(cls, folder: Path, device) -> Classifier:
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
    def _assemble(cls, model, backbone, labels: LabelSpace, info: dict, device) -> Classifier:
        if labels.num_classes != model.config.num_classes or labels.task != model.config.task:
            raise CheckpointError(
                f"the labels ({labels.task}, {labels.num_classes}) do not fit the model "
                f"({model.config.task}, {model.config.num_classes} outputs)"
            )
        pre = info["preprocessing"]
        preprocessor = Preprocessor.for_backbone(backbone, pre.get("max_text_length"), pre.get("image_size"))
        if device is not None:
            model.to(device)
        return cls(model, preprocessor, labels, info)

    # --- predicting ------------------------------------------------------------------------------
    runtime = "torch"

    @property
    def method(self) -> str:
        return self.model.config.method

    @property
    def can_explain(self) -> bool:
        """Whether the model inserts prompts, whose hub and attention `mitp explain` can show."""
        return bool(getattr(self.model, "inserts_prompts", False))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def pixels(self, image):
        return torch.from_numpy(
            self.preprocessor.image(image) if image is not None else self.preprocessor.blank_image()
        )

    def tokens(self, text: str | None) -> list[int]:
        return self.preprocessor.text(text) if text is not None else self.preprocessor.empty_text()

    @torch.inference_mode()
    def logits(self, samples: list[Prepared]) -> torch.Tensor:
        """Logits (on the CPU) for prepared samples, as one batch."""
        input_ids, mask = pad_token_ids([s.tokens for s in samples], self.preprocessor.pad_token_id)
        pixels = torch.stack([s.pixels for s in samples])
        present = torch.tensor([s.present for s in samples], dtype=torch.bool)
        return (
            self.model(
                pixel_values=pixels.to(self.device),
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                modality_mask=present.to(self.device),
            )
            .logits.float()
            .cpu()
        )

    # --- saving ------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json``, ``model.safetensors`` and the model card ``README.md`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.model, folder)  # trainable.safetensors + method.json, written atomically
        os.replace(folder / WEIGHTS_NAME, folder / EXPORT_WEIGHTS)
        meta = json.loads((folder / CONFIG_NAME).read_text())
        (folder / CONFIG_NAME).unlink()
        config = {
            "format": FORMAT,
            "method": meta["method"],
            "backbone": meta["backbone"],
            "labels": {"task": self.labels.task, "labels": list(self.labels.labels)},
            **{k: self.info.get(k) for k in ("preprocessing", "data", "source", "results", "threshold")},
        }
        (folder / EXPORT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (folder / MODEL_CARD).write_text(model_card(self, config))
        return folder


def _check_backbone(where: Path, saved: dict, backbone) -> None:
    differs = {k: (saved[k], v) for k, v in backbone.shapes().items() if k in saved and saved[k] != v}
    if differs:
        raise CheckpointError(
            f"{where}: trained on backbone {saved.get('spec')!r} but {backbone.spec!r} differs: "
            + ", ".join(f"{k} {a} != {b}" for k, (a, b) in differs.items())
        )
