"""The files of a model folder: their names, and reading them as files from a stranger (every error names the
file; the records are validated key by key in :mod:`mitp.records`). Cheap to import (the output guard and the
command line load it) and torch-free.

A model folder is what a run's checkpoints (``checkpoint/best``, ``checkpoint/last``) and ``mitp export`` write,
and what ``Classifier.from_pretrained`` reads::

    config.json        the method config, the backbone spec and shapes, the labels, the preprocessing, the
                       decision threshold (multi-label), and where it came from (data, source run, results)
    model.safetensors  the trainable tensors only (the frozen backbone is rebuilt from its spec)
    README.md          the model card (an export)
    onnx.json, model.onnx, model.int8.onnx, tokenizer/   the ONNX graph and what it expects (``export --onnx``)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import MitpError
from .jsonio import JSONError, read_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_CARD = "README.md"
FORMAT = "mitp-classifier-1"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
RUNTIME_FILE = "onnx.json"  # the graph's inputs, its parity with PyTorch, the preprocessing it expects
RUNTIME_FORMAT = "mitp-onnx-1"
TOKENIZER_FILE = "tokenizer/tokenizer.json"
# every name a model folder owns at its top level: no command writes over these
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, MODEL_CARD, ONNX_FILE, INT8_FILE, RUNTIME_FILE, "tokenizer")


class CheckpointError(MitpError):
    """A model folder or run file that is missing, malformed or does not fit the backbone."""


class NoCheckpoint(CheckpointError):
    """A run that has not written the checkpoint asked for yet."""


def sha256_of(path: str | os.PathLike) -> str:
    """The file's SHA-256, read in 1 MiB pieces (a graph can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as reader:
        for piece in iter(lambda: reader.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def read_json_file(path: str | os.PathLike):
    """A model folder's or run's JSON file; missing, unreadable, not UTF-8, malformed: a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return read_json(path)
    except (JSONError, OSError) as err:
        raise CheckpointError(f"{path}: {err}") from err


def file_in(folder: str | os.PathLike, name: str, named_by: str, must_exist: bool = True) -> Path:
    """``folder/name`` for a file that ``named_by`` (a file and key) names: it must be a file inside the folder,
    symlinks resolved, so a model folder cannot make us read files elsewhere (``must_exist=False``: a missing
    one is left to the reader to name)."""
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root:
        raise CheckpointError(f"{named_by}: {name!r} lies outside the model folder {folder}")
    if must_exist and not os.path.isfile(path):
        raise CheckpointError(f"{named_by}: {name!r} is not a file in {folder}")
    return Path(folder) / name


__all__ = [
    "CONFIG_FILE",
    "CheckpointError",
    "FORMAT",
    "INT8_FILE",
    "MODEL_CARD",
    "MODEL_FILES",
    "NoCheckpoint",
    "ONNX_FILE",
    "RUNTIME_FILE",
    "RUNTIME_FORMAT",
    "TOKENIZER_FILE",
    "WEIGHTS_FILE",
    "file_in",
    "read_json_file",
]
