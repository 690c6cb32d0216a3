"""The JSON files a run or an exported model holds, read and checked key by key, with no torch: the
PyTorch classifier, the onnxruntime one and the run-directory reader share them."""

from __future__ import annotations

from pathlib import Path

from .errors import MitpError
from .jsonio import JSONError, read_json

WEIGHTS_NAME = "trainable.safetensors"  # a checkpoint: trainable tensors
CONFIG_NAME = "method.json"  # and the method config with the backbone's shapes
EXPORT_CONFIG = "config.json"  # an exported model: method, backbone, labels, preprocessing
EXPORT_WEIGHTS = "model.safetensors"
MODEL_CARD = "README.md"
FORMAT = "mitp-classifier-1"
# an ONNX export adds these (torch-free: the exporter and the runtime share them)
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
RUNTIME_FILE = "onnx.json"  # the graph's inputs, its parity with PyTorch, the preprocessing it expects
RUNTIME_FORMAT = "mitp-onnx-1"
TOKENIZER_FILE = "tokenizer/tokenizer.json"
# every name a model folder owns at its top level: no command writes over these
MODEL_FILES = (EXPORT_CONFIG, EXPORT_WEIGHTS, MODEL_CARD, ONNX_FILE, INT8_FILE, RUNTIME_FILE, "tokenizer")


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


OPTIONAL_STR = (str, type(None))
OPTIONAL_INT = (int, type(None))


def read_export_config(path: Path) -> dict:
    """An exported model's config.json, every key checked (an unknown key is an error, not ignored)."""
    config = check_fields(
        path,
        read_json_file(path),
        {
            "format": str,
            "method": dict,
            "backbone": dict,
            "labels": dict,
            "preprocessing": dict,
            "data": OPTIONAL_STR,
            "source": OPTIONAL_STR,
            "results": (dict, type(None)),
            "threshold": (float, int, type(None)),
        },
        required=("format", "method", "backbone", "labels", "preprocessing"),
    )
    if config["format"] != FORMAT:
        raise CheckpointError(f"{path}: format is {config['format']!r}, not {FORMAT!r}")
    check_fields(path, config["backbone"], {"spec": str}, required=("spec",), where="backbone.", allow_unknown=True)
    check_fields(path, config["labels"], {"task": str, "labels": list}, required=("task", "labels"), where="labels.")
    if (
        config["labels"]["task"] not in ("single_label", "multi_label")
        or not config["labels"]["labels"]
        or not all(isinstance(name, str) and name for name in config["labels"]["labels"])
    ):
        raise CheckpointError(
            f"{path}: labels must hold a task (single_label or multi_label) and a non-empty list of label names"
        )
    check_fields(
        path,
        config["preprocessing"],
        {"max_text_length": OPTIONAL_INT, "image_size": OPTIONAL_INT},
        where="preprocessing.",
    )
    return config


__all__ = [
    "CONFIG_NAME",
    "CheckpointError",
    "EXPORT_CONFIG",
    "EXPORT_WEIGHTS",
    "FORMAT",
    "MODEL_CARD",
    "NoCheckpoint",
    "WEIGHTS_NAME",
    "check_fields",
    "read_export_config",
    "read_json_file",
]
