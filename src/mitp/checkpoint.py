"""Checkpoints of trainable tensors only: ``trainable.safetensors`` + ``method.json``.

The frozen backbone is never saved; it is rebuilt from its spec. ``method.json`` also
records the backbone's shapes so loading onto a different backbone fails clearly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .backbones import Backbone
from .errors import MitpError
from .jsonio import JSONError, read_json
from .methods import ConfigError, MultimodalClassifier, build_model, config_from_dict

WEIGHTS_NAME = "trainable.safetensors"
CONFIG_NAME = "method.json"


class CheckpointError(MitpError):
    """A checkpoint that is missing, malformed or does not fit the backbone."""


class NoCheckpoint(CheckpointError):
    """A run that has not written the checkpoint asked for yet."""


def read_json_file(path: str | Path):
    """A checkpoint or run file's JSON; missing, unreadable, not UTF-8, malformed: a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return read_json(path)
    except (JSONError, OSError) as err:
        raise CheckpointError(f"{path}: {err}") from err


def check_fields(path: str | Path, obj, fields: dict, required=(), where: str = "", allow_unknown: bool = False):
    """``obj`` is a mapping whose keys are typed as ``fields`` says (``name -> type or tuple of types``),
    with every ``required`` key present; anything else is a CheckpointError naming the file and key."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: {where or 'the content'} must be a mapping, got {type(obj).__name__}")
    missing = [key for key in required if key not in obj]
    if missing:
        raise CheckpointError(f"{path}: {where}{', '.join(missing)} missing")
    unknown = sorted(set(obj) - set(fields))
    if unknown and not allow_unknown:
        raise CheckpointError(f"{path}: unknown key(s) {', '.join(where + str(k) for k in unknown)}")
    for key, types in fields.items():
        types = types if isinstance(types, tuple) else (types,)
        value = obj.get(key)
        bad_bool = isinstance(value, bool) and bool not in types
        if key in obj and (bad_bool or not isinstance(value, types)):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise CheckpointError(f"{path}: {where}{key} must be {names}, got {str(value)[:60]!r}")
    return obj


def _atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same directory, then rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(model: MultimodalClassifier, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.trainable_state_dict().items()}
    meta = {"method": model.config.to_dict(), "backbone": {"spec": model.backbone.spec, **model.backbone.shapes()}}
    _atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    _atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
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
            + ", ".join(f"{k} {a} != {b}" for k, (a, b) in differs.items()))
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
        shape_note = (f" (checkpoint backbone {saved_backbone.get('spec')!r} {_shapes(saved_backbone)}; "
                      f"this backbone {model.backbone.spec!r} {_shapes(model.backbone.shapes())})")
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: tensors do not match the model: missing {missing}, unexpected {unexpected}"
                              + shape_note)
    for name, param in expected.items():
        saved = tensors[name]
        if saved.shape != param.shape:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {tuple(saved.shape)} in the checkpoint but "
                                  f"{tuple(param.shape)} in the model" + shape_note)
    with torch.no_grad():
        for name, param in expected.items():
            param.copy_(tensors[name])


def _shapes(shapes: dict) -> str:
    return (f"text {shapes.get('text_layers')}x{shapes.get('text_width')}, "
            f"vision {shapes.get('vision_layers')}x{shapes.get('vision_width')}")
