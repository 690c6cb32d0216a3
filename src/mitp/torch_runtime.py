"""A trained model on PyTorch: :class:`TorchClassifier`, what ``mitp.Classifier.from_pretrained(path)`` returns.

``path`` is a model folder (:mod:`mitp.files`: ``mitp export``'s, or ``save_pretrained``'s) or a run directory,
whose best checkpoint is one. Loading rebuilds the backbone from its spec and refuses one whose shapes differ
from those the model was trained on, and weights that are not finite (:mod:`mitp.model_folder`).

An image or a text may be missing (``None``, or ``images=None`` / ``texts=None`` for all): it reaches the model
as a blank image / an empty text with a modality mask saying so, as in training with missing modalities; each
prediction's ``modalities`` records what it saw.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .api import Classifier, labels_of
from .configuration import ConfigError
from .data.dataset import pad_token_ids
from .data.manifest import LabelSpace
from .data.preprocess import Preprocessor
from .files import CONFIG_FILE, MODEL_CARD, CheckpointError
from .inputs import Prepared
from .model_card import model_card
from .model_folder import load_model, model_config, save_model_folder
from .records import ModelConfig
from .runs import Run


def model_folder_of(path: str | os.PathLike) -> Path:
    """``path`` if it is a model folder, else the best checkpoint of the run directory ``path``."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return path
    if Run(path).is_run():
        return Run(path).best_checkpoint()
    raise CheckpointError(f"{path}: neither a model folder ({CONFIG_FILE}) nor a run directory")


class TorchClassifier(Classifier):
    """A trained method on its frozen backbone (PyTorch), with its preprocessing and label names."""

    runtime = "torch"

    def __init__(self, model: torch.nn.Module, config: ModelConfig, preprocessor: Preprocessor):
        self.model, self.config, self.preprocessor = model, config, preprocessor
        self.labels = labels_of(config)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> TorchClassifier:
        """A model folder, or a run directory (its best checkpoint)."""
        folder = model_folder_of(path)
        model, config = load_model(folder)
        if config.labels.task == "multi_label" and config.threshold is None:
            raise CheckpointError(
                f"{folder / CONFIG_FILE}: no decision threshold yet: eval.threshold auto is chosen on validation "
                "when training finishes, and this run has not finished"
            )
        pre = config.preprocessing
        try:
            preprocessor = Preprocessor.for_backbone(model.backbone, pre.max_text_length, pre.image_size)
        except ConfigError as err:  # in range, but beyond this backbone's text tower
            key = {"max_length": "max_text_length"}.get(err.key, err.key)
            raise CheckpointError(f"{folder / CONFIG_FILE}: preprocessing.{key}: {err.message}") from None
        if device is not None:
            model.to(device)
        return cls(model, config, preprocessor)

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        labels: LabelSpace,
        max_text_length: int | None = None,
        image_size: int | None = None,
    ) -> TorchClassifier:
        """A classifier of an in-memory model (its config as ``save_pretrained`` would write it)."""
        config = model_config(model, labels, {"max_text_length": max_text_length, "image_size": image_size})
        return cls(model, config, Preprocessor.for_backbone(model.backbone, max_text_length, image_size))

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

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the model folder (``config.json``, ``model.safetensors``) and its model card ``README.md``."""
        c = self.config
        folder = save_model_folder(
            self.model, folder, self.labels, c.preprocessing.model_dump(), c.threshold, c.data, c.source, c.results
        )
        (folder / MODEL_CARD).write_text(model_card(self.config, self.model))
        return folder


__all__ = ["TorchClassifier", "model_folder_of"]
