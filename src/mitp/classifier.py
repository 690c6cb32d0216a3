"""Use a trained model in one line: ``Classifier.from_pretrained(path).predict(images=..., texts=...)``.

``path`` is a run directory (its best checkpoint) or a folder written by :meth:`save_pretrained` /
``mitp export``, in a Hub-style layout with no pickle anywhere:

    config.json        the method config, the backbone spec and shapes, the labels, the preprocessing
    model.safetensors  the trainable tensors only (the frozen backbone is rebuilt from its spec)
    README.md          a model card: task, data, metrics, parameters, how it was trained, limitations

Loading rebuilds the backbone from its spec and refuses one whose shapes differ from those the
model was trained on (a named :class:`~mitp.checkpoint.CheckpointError`, not garbage).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from PIL import Image, UnidentifiedImageError

from .backbones import build_backbone
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, load_checkpoint, load_trainable, save_checkpoint
from .data.dataset import pad_token_ids
from .data.images import to_rgb
from .data.manifest import LabelSpace, read_labels
from .data.preprocess import Preprocessor
from .methods import build_model, config_from_dict

EXPORT_CONFIG = "config.json"
EXPORT_WEIGHTS = "model.safetensors"
MODEL_CARD = "README.md"
FORMAT = "mitp-classifier-1"


class InputError(ValueError):
    """A prediction input that cannot be used; ``field`` names it (``images[2]``, ``texts[0]``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass
class Classifier:
    """A trained method on its frozen backbone, with its preprocessing and label names."""

    model: torch.nn.Module
    preprocessor: Preprocessor
    labels: LabelSpace
    info: dict  # backbone spec, preprocessing, results and provenance, for the model card

    # --- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> "Classifier":
        """A run directory (its best checkpoint) or an exported folder."""
        path = Path(path)
        if (path / EXPORT_CONFIG).is_file() and (path / EXPORT_WEIGHTS).is_file():
            return cls._from_export(path, device)
        if (path / "config.yaml").is_file():
            return cls._from_run(path, device)
        raise CheckpointError(f"{path}: neither an exported model ({EXPORT_CONFIG} + {EXPORT_WEIGHTS}) nor a run "
                              "directory (config.yaml)")

    @classmethod
    def _from_run(cls, run_dir: Path, device) -> "Classifier":
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
        except yaml.YAMLError as err:
            raise CheckpointError(f"{run_dir / 'config.yaml'}: not valid YAML ({err})") from err
        best = run_dir / "checkpoint" / "best"
        if not (best / WEIGHTS_NAME).is_file() and (run_dir / "checkpoint" / "best.old").is_dir():
            best = run_dir / "checkpoint" / "best.old"  # a crash in the middle of a checkpoint swap
        if not (best / WEIGHTS_NAME).is_file():
            raise CheckpointError(f"{run_dir}: no best checkpoint yet (training has not evaluated)")
        backbone = build_backbone(config["backbone"])
        model = load_checkpoint(best, backbone).eval()
        data = config["data"]["path"] if isinstance(config["data"], dict) else config["data"]
        labels = read_labels(run_dir if (run_dir / "labels.json").is_file() else data)
        train = config.get("train") or {}
        preprocessing = {"max_text_length": train.get("max_text_length"), "image_size": train.get("image_size")}
        results = run_dir / "results.json"
        info = {"backbone": config["backbone"], "preprocessing": preprocessing, "data": data,
                "source": str(run_dir), "results": json.loads(results.read_text()) if results.is_file() else {},
                "threshold": (config.get("eval") or {}).get("threshold", 0.5)}
        return cls._assemble(model, backbone, labels, info, device)

    @classmethod
    def _from_export(cls, folder: Path, device) -> "Classifier":
        try:
            config = json.loads((folder / EXPORT_CONFIG).read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{folder / EXPORT_CONFIG}: not valid JSON ({err})") from err
        missing = [key for key in ("format", "method", "backbone", "labels", "preprocessing") if key not in config]
        if missing or config.get("format") != FORMAT:
            raise CheckpointError(f"{folder / EXPORT_CONFIG}: not a {FORMAT} config (missing {missing or 'format'})")
        backbone = build_backbone(config["backbone"]["spec"])
        _check_backbone(folder / EXPORT_CONFIG, config["backbone"], backbone)
        model = build_model(config_from_dict(config["method"]), backbone)
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

    def predict(self, images: list, texts: list[str], top_k: int = 5, batch_size: int = 32) -> list[list[dict]]:
        """One list of ``{"label", "score"}`` per pair: the top-k softmax probabilities (single-label),
        or every label whose sigmoid probability passes the run's threshold (multi-label).

        Images may be PIL images, paths or bytes. Bad inputs raise :class:`InputError` naming them."""
        if len(images) != len(texts):
            raise InputError("texts", f"{len(texts)} texts for {len(images)} images; give one text per image")
        if top_k < 1:
            raise InputError("top_k", f"must be >= 1, got {top_k}")
        pairs = [self.prepare(image, text, f"images[{i}]", f"texts[{i}]")
                 for i, (image, text) in enumerate(zip(images, texts))]
        logits = torch.cat([self.logits(pairs[start:start + batch_size])
                            for start in range(0, len(pairs), batch_size)]) if pairs else torch.zeros(0)
        return self.to_predictions(logits, top_k)

    def prepare(self, image, text: str, image_field: str = "image", text_field: str = "text"):
        """One pair as model inputs ``(pixels, token ids)``; InputError names a bad field."""
        return self._pixels(image, image_field), self._tokens(text, text_field)

    @torch.inference_mode()
    def logits(self, pairs: list) -> torch.Tensor:
        """Logits (on the CPU) for prepared pairs, as one batch."""
        input_ids, mask = pad_token_ids([tokens for _, tokens in pairs], self.preprocessor.pad_token_id)
        pixels = torch.stack([pixels for pixels, _ in pairs])
        return self.model(pixel_values=pixels.to(self.device), input_ids=input_ids.to(self.device),
                          attention_mask=mask.to(self.device)).logits.float().cpu()

    def to_predictions(self, logits: torch.Tensor, top_k: int = 5) -> list[list[dict]]:
        return scores_to_predictions(logits, self.labels.labels, self.labels.task, top_k,
                                     self.info.get("threshold") or 0.5)

    def _pixels(self, image, field: str) -> torch.Tensor:
        try:
            if isinstance(image, (bytes, bytearray)):
                with Image.open(io.BytesIO(image)) as img:
                    img.load()
                    image = to_rgb(img)
            elif isinstance(image, (str, os.PathLike)):
                if not os.path.isfile(image):
                    raise InputError(field, f"no image file {os.fspath(image)!r}")
                with Image.open(image) as img:
                    img.load()
                    image = to_rgb(img)
            elif isinstance(image, Image.Image):
                image = to_rgb(image)
            else:
                raise InputError(field, f"expected a PIL image, a path or bytes, got {type(image).__name__}")
            return torch.from_numpy(self.preprocessor.image(image))
        except InputError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise InputError(field, f"cannot be decoded as an image ({err})") from err

    def _tokens(self, text, field: str) -> list[int]:
        if not isinstance(text, str):
            raise InputError(field, f"expected a string, got {type(text).__name__}")
        if not text.strip():
            raise InputError(field, "empty text")
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
        from .model_card import model_card

        (folder / MODEL_CARD).write_text(model_card(self, config))
        return folder


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
