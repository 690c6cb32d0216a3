"""Training state (optimizer, scheduler, RNG, loop position) without pickle.

A nested structure of dicts, lists, tuples, scalars, tensors and numpy arrays is split into
``<name>.safetensors`` (every tensor and array, under its path in the structure) and
``<name>.json`` (the structure, with each tensor replaced by a reference). Loading can
therefore never run code, unlike ``torch.load(weights_only=False)`` on a pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from mitp.files import CheckpointError, read_json_file
from mitp.model_folder import load_tensors

FORMAT = "mitp-state-1"


def _flatten(obj, path: str, tensors: dict):
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu", copy=True).contiguous()  # no shared storage
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):  # stored as int64/float64 where torch lacks the dtype (numpy's uint32 RNG)
        wide = obj.astype(np.int64 if obj.dtype.kind in "iub" else np.float64)
        tensors[path] = torch.from_numpy(np.ascontiguousarray(wide))
        return {"__ndarray__": path, "dtype": obj.dtype.str}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"{path or 'state'}: dict keys must be str or int, got {list(obj)!r}")
        return {"__dict__": [[k, _flatten(v, f"{path}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{path or 'state'}: cannot store a {type(obj).__name__} without pickle")


def _unflatten(node, tensors: dict, where: str):
    if isinstance(node, list):
        return [_unflatten(v, tensors, where) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node or "__ndarray__" in node:
        key = node.get("__tensor__", node.get("__ndarray__"))
        if key not in tensors:
            raise CheckpointError(f"{where}: tensor {key!r} is missing from the .safetensors file")
        return tensors[key] if "__tensor__" in node else tensors[key].numpy().astype(np.dtype(node["dtype"]))
    if "__tuple__" in node:
        return tuple(_unflatten(v, tensors, where) for v in node["__tuple__"])
    if "__dict__" in node:
        return {k: _unflatten(v, tensors, where) for k, v in node["__dict__"]}
    raise CheckpointError(f"{where}: unexpected entry {sorted(node)!r}")


def save_state(state: dict, directory: Path, name: str) -> list[Path]:
    """Write ``name.safetensors`` and ``name.json`` into ``directory``; returns both paths."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "", tensors)
    weights, structure = Path(directory) / f"{name}.safetensors", Path(directory) / f"{name}.json"
    save_file(tensors, str(weights), metadata={"format": FORMAT})
    structure.write_text(json.dumps({"format": FORMAT, "state": tree}))
    return [weights, structure]


def load_state(directory: Path, name: str, required: tuple[str, ...] = ()) -> dict:
    """The structure saved by :func:`save_state`; every problem is a CheckpointError naming the file."""
    structure = Path(directory) / f"{name}.json"
    if not structure.is_file():
        raise CheckpointError(f"{structure}: no such checkpoint file")
    data = read_json_file(structure)
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("state"), dict):
        raise CheckpointError(f"{structure}: not a {FORMAT} training state")
    try:
        state = _unflatten(data["state"], load_tensors(Path(directory) / f"{name}.safetensors"), str(structure))
    except (TypeError, ValueError, KeyError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{structure}: malformed training state ({type(err).__name__}: {err})") from err
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{structure}: missing {', '.join(missing)}")
    return state
