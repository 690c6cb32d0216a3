"""Writing and loading a model folder (the format is in :mod:`mitp.files`): the one way a trained method is saved
(a run's checkpoints, ``save_pretrained``, ``mitp export``) and rebuilt (every command that loads weights).

The frozen backbone is never saved; it is rebuilt from its spec, and one whose shapes differ from those the
model was trained on is refused. Tensors are checked by name, shape and value: a non-finite weight is refused
on saving and on loading, so a diverged model can never be written or used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_write, write_text_atomic
from .backbones import Backbone, build_backbone
from .data.manifest import LabelSpace
from .files import CONFIG_FILE, FORMAT, WEIGHTS_FILE, CheckpointError, file_in
from .methods import ConfigError, MultimodalClassifier, build_model, config_from_dict
from .records import ModelConfig, read_model_config


class NonFiniteWeights(CheckpointError):
    """Weights holding NaN or infinity: written by nothing, loaded by nothing."""


def non_finite_counts(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """The tensors holding NaN or infinite values, each with how many it holds (empty when all are finite)."""
    floating = {name: t.detach() for name, t in tensors.items() if t.is_floating_point()}
    if not floating:
        return {}
    # A sum is NaN or infinite wherever a value is (or where finite values overflow it: counted exactly below).
    # One pass without a copy and one sync: several times cheaper than isfinite, and the trainer runs it every step.
    sums = torch.stack([t.sum(dtype=torch.float32) for t in floating.values()])
    if torch.isfinite(sums).all().item():
        return {}
    counts = torch.stack([(~torch.isfinite(t)).sum() for t in floating.values()]).tolist()
    return {name: count for name, count in zip(floating, counts) if count}


def save_model_folder(
    model: MultimodalClassifier,
    folder: str | os.PathLike,
    labels: LabelSpace,
    preprocessing: dict,
    threshold: float | None = None,
    data: str | None = None,
    source: str | None = None,
    results: dict | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (trainable tensors only) into ``folder``, each atomically.
    Refuses (NonFiniteWeights) a model with non-finite weights, before writing anything."""
    folder = Path(folder)
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.trainable_state_dict().items()}
    bad = list(non_finite_counts(tensors))
    if bad:
        raise NonFiniteWeights(
            f"{folder}: not written: {len(bad)} weight tensor(s) hold NaN or infinity, e.g. {bad[0]}"
        )
    config = model_config(model, labels, preprocessing, threshold=threshold, data=data, source=source, results=results)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    write_model_config(folder, config)
    return folder


def model_config(model: MultimodalClassifier, labels: LabelSpace, preprocessing: dict, **provenance) -> ModelConfig:
    """The config.json of ``model`` (``provenance``: threshold, data, source, results)."""
    return ModelConfig(
        format=FORMAT,
        method=model.config.to_dict(),
        backbone={"spec": model.backbone.spec, **model.backbone.shapes()},
        labels={"task": labels.task, "labels": list(labels.labels)},
        preprocessing=preprocessing,
        **provenance,
    )


def write_model_config(folder: str | os.PathLike, config: ModelConfig) -> None:
    write_text_atomic(Path(folder) / CONFIG_FILE, json.dumps(config.model_dump(), indent=2) + "\n")


def load_model(
    folder: str | os.PathLike, backbone: Backbone | None = None, config: ModelConfig | None = None
) -> tuple[MultimodalClassifier, ModelConfig]:
    """The method of a model folder on ``backbone`` (default: rebuilt from the folder's spec), its trainable
    tensors loaded, and the folder's validated config. Every problem is a CheckpointError naming the file."""
    folder = Path(folder)
    config = config or read_model_config(folder)
    path = folder / CONFIG_FILE
    backbone = backbone or build_backbone(config.backbone.spec)
    saved = config.backbone.model_dump()
    differs = {k: (saved[k], v) for k, v in backbone.shapes().items() if k in saved and saved[k] != v}
    if differs:
        raise CheckpointError(
            f"{path}: trained on backbone {config.backbone.spec!r} ({_shapes(saved)}) but {backbone.spec!r} has "
            f"{_shapes(backbone.shapes())}; differing: " + ", ".join(f"{k} {a} != {b}" for k, (a, b) in differs.items())
        )
    try:
        method = config_from_dict(config.method)
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{path}: method.{err}") from err
    if (method.task, method.num_classes) != (config.labels.task, len(config.labels.labels)):
        raise CheckpointError(
            f"{path}: the labels ({config.labels.task}, {len(config.labels.labels)}) do not fit the model "
            f"({method.task}, {method.num_classes} outputs)"
        )
    model = build_model(method, backbone)
    load_trainable(model, file_in(folder, WEIGHTS_FILE, str(folder), must_exist=False))
    return model.eval(), config


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A .safetensors file, or a CheckpointError naming it (missing, empty, truncated, not safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror})") from None
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (a crash while it was written?)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({err})") from err


def load_trainable(model: MultimodalClassifier, path: str | os.PathLike) -> None:
    """Copy the tensors of ``path`` into the model's trainable parameters: the same names and shapes, all finite."""
    path = Path(path)
    tensors = load_tensors(path)
    expected = model.trainable_state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: tensors do not match the model: missing {missing}, unexpected {unexpected}")
    for name, param in expected.items():
        if tensors[name].shape != param.shape or tensors[name].dtype != param.dtype:
            raise CheckpointError(
                f"{path}: tensor {name!r} is {tuple(tensors[name].shape)} {tensors[name].dtype} in the file but "
                f"{tuple(param.shape)} {param.dtype} in the model"
            )
    bad = list(non_finite_counts(tensors))
    if bad:
        raise NonFiniteWeights(
            f"{path}: {len(bad)} weight tensor(s) hold NaN or infinity (e.g. {bad[0]}): a diverged model, refused"
        )
    with torch.no_grad():
        for name, param in expected.items():
            param.copy_(tensors[name])


def _shapes(shapes: dict) -> str:
    return (
        f"text {shapes.get('text_layers')}x{shapes.get('text_width')}, "
        f"vision {shapes.get('vision_layers')}x{shapes.get('vision_width')}"
    )


__all__ = [
    "NonFiniteWeights",
    "load_model",
    "load_tensors",
    "load_trainable",
    "model_config",
    "non_finite_counts",
    "save_model_folder",
    "write_model_config",
]
