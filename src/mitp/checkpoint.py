"""Checkpoints of trainable tensors only: ``trainable.safetensors`` + ``method.json``.

The frozen backbone is never saved; it is rebuilt from its spec. ``method.json`` also
records the backbone's shapes so loading onto a different backbone fails clearly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_write
from .backbones import Backbone
from .files import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, check_fields, read_json_file
from .methods import ConfigError, MultimodalClassifier, build_model, config_from_dict


def save_checkpoint(model: MultimodalClassifier, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.trainable_state_dict().items()}
    meta = {"method": model.config.to_dict(), "backbone": {"spec": model.backbone.spec, **model.backbone.shapes()}}
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    return directory


def read_checkpoint_meta(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_NAME
    return check_fields(path, read_json_file(path), {"method": dict, "backbone": dict}, required=("method",))


def load_checkpoint(directory: str | Path, backbone: Backbone) -> MultimodalClassifier:
    """Rebuild the method on ``backbone`` and load its trainable tensors."""
    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    saved = meta.get("backbone", {})
    current = backbone.shapes()
    differs = {k: (saved[k], v) for k, v in current.items() if k in saved and saved[k] != v}
    if differs:
        raise CheckpointError(
            f"{directory}: checkpoint was trained on backbone {saved.get('spec')!r} ({_shapes(saved)}) but this "
            f"backbone {backbone.spec!r} has {_shapes(current)}; differing: "
            + ", ".join(f"{k} {a} != {b}" for k, (a, b) in differs.items())
        )
    model = build_model(method_config(directory / CONFIG_NAME, meta["method"]), backbone)
    load_trainable(model, directory / WEIGHTS_NAME, saved_backbone=meta.get("backbone", {}))
    return model


def method_config(path: str | Path, data: dict):
    """The validated method config stored in a checkpoint or export file; a bad one names the file."""
    try:
        return config_from_dict(data)
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{path}: method.{err}") from err


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A .safetensors file, or a CheckpointError naming it (missing, empty, truncated, not safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (a crash while it was written?)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({err})") from err


def load_trainable(model: MultimodalClassifier, path: str | Path, saved_backbone: dict | None = None) -> None:
    path = Path(path)
    tensors = load_tensors(path)
    expected = model.trainable_state_dict()
    shape_note = ""
    if saved_backbone:
        shape_note = (
            f" (checkpoint backbone {saved_backbone.get('spec')!r} {_shapes(saved_backbone)}; "
            f"this backbone {model.backbone.spec!r} {_shapes(model.backbone.shapes())})"
        )
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: tensors do not match the model: missing {missing}, unexpected {unexpected}" + shape_note
        )
    for name, param in expected.items():
        saved = tensors[name]
        if saved.shape != param.shape:
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {tuple(saved.shape)} in the checkpoint but "
                f"{tuple(param.shape)} in the model" + shape_note
            )
    with torch.no_grad():
        for name, param in expected.items():
            param.copy_(tensors[name])


def non_finite_counts(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """The tensors holding NaN or infinite values, each with how many it holds (empty when all are finite)."""
    floating = {name: t.detach() for name, t in tensors.items() if t.is_floating_point()}
    if not floating:
        return {}
    # A sum is NaN or infinite wherever a value is (or where finite values overflow it: counted exactly below).
    # One pass without a copy and one sync: several times cheaper than isfinite, and this runs every step.
    sums = torch.stack([t.sum(dtype=torch.float32) for t in floating.values()])
    if torch.isfinite(sums).all().item():
        return {}
    counts = torch.stack([(~torch.isfinite(t)).sum() for t in floating.values()]).tolist()
    return {name: count for name, count in zip(floating, counts) if count}


def _shapes(shapes: dict) -> str:
    return (
        f"text {shapes.get('text_layers')}x{shapes.get('text_width')}, "
        f"vision {shapes.get('vision_layers')}x{shapes.get('vision_width')}"
    )
