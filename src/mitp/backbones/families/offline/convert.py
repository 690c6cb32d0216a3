"""Converting the graph into a Hugging Face ``Dinov2Model`` directory, and verifying it with onnxruntime."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ...registry import from_pretrained_safe
from .graph import Graph, Mapping, load_onnx, model_key
from .graph import numpy_module as _np
from .specs import DEFAULT_ATOL, DINOV2_PREPROCESSOR, OfflineBackboneError


@contextlib.contextmanager
def quiet_transformers():
    """No progress bars from transformers while converting (they would clutter the CLI's messages)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def convert_dinov2_onnx(onnx_path, out_dir, num_attention_heads: int | None = None) -> Path:
    """Convert the DINOv2 backbone inside an ONNX graph to a Hugging Face ``Dinov2Model`` directory.

    Writes ``config.json``, ``model.safetensors`` and ``preprocessor_config.json`` into
    ``out_dir``. Raises :class:`OfflineBackboneError` naming every backbone tensor that maps
    nowhere and every model parameter left unfilled.
    """
    import torch
    from transformers import Dinov2Config, Dinov2Model

    onnx, _ = load_onnx()
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise OfflineBackboneError(f"no ONNX file at {onnx_path}")
    graph = Graph(onnx.load(str(onnx_path)))
    mapping = Mapping(graph, onnx_path)
    mapping.build()
    problems = []
    unmapped = mapping.unmapped()
    if unmapped:
        problems.append(f"{len(unmapped)} backbone tensor(s) map to no Dinov2Model parameter: " + ", ".join(unmapped))
    try:
        config = Dinov2Config(**mapping.describe_config(num_attention_heads))
    except OfflineBackboneError as err:
        if not problems:
            raise
        problems.append(str(err))
        config = None
    if config is not None:
        # Built on the meta device: no random init (seconds for 22M parameters); the graph's
        # tensors are assigned below.
        with torch.device("meta"):
            model = Dinov2Model(config)
        model_keys = model.state_dict()
        state, orphans = {}, []
        for key, array in mapping.tensors.items():
            target = model_key(key, model_keys)
            if target is None:
                orphans.append(f"{mapping.sources[key]} {list(array.shape)} (as {key!r})")
                continue
            if tuple(array.shape) != tuple(model_keys[target].shape):
                problems.append(
                    f"{mapping.sources[key]} has shape {list(array.shape)} but {target} needs "
                    f"{list(model_keys[target].shape)}"
                )
            state[target] = torch.from_numpy(_np().array(array, dtype="float32", order="C", copy=True))
        if orphans:
            problems.append(f"{len(orphans)} backbone tensor(s) map to no Dinov2Model parameter: " + ", ".join(orphans))
        missing = sorted(set(model_keys) - set(state))
        if missing:
            problems.append(f"{len(missing)} Dinov2Model parameter(s) left unfilled: " + ", ".join(missing))
    if problems:
        raise OfflineBackboneError(f"cannot convert {onnx_path}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True, assign=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(DINOV2_PREPROCESSOR, indent=2) + "\n")
    return out_dir


def verify_against_onnx(onnx_path, hf_dir, atol: float = DEFAULT_ATOL, seed: int = 0, batch_size: int = 2) -> float:
    """Run the graph (onnxruntime, up to the backbone's final LayerNorm) and the converted model on a
    fixed seeded input; return the max abs difference of the last hidden states, raise above ``atol``."""
    import torch
    from transformers import Dinov2Model

    onnx, _ = load_onnx()
    try:
        import onnxruntime
    except ImportError as err:
        raise OfflineBackboneError(
            "verifying a conversion needs 'onnxruntime': pip install onnxruntime (or: make offline)"
        ) from err
    np = _np()
    model_proto = onnx.load(str(onnx_path))
    graph = Graph(model_proto)
    target = Mapping(graph, onnx_path).output
    elem_type = onnx.TensorProto.FLOAT
    # Expose the last hidden state as the only output; the head becomes dead code.
    del model_proto.graph.output[:]
    model_proto.graph.output.append(onnx.helper.make_tensor_value_info(target, elem_type, None))
    if len(graph.graph_inputs) != 1:
        raise OfflineBackboneError(
            f"{onnx_path}: expected one image input, found {[i.name for i in graph.graph_inputs]}"
        )
    image = graph.graph_inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim]
    with quiet_transformers():
        model = from_pretrained_safe(Dinov2Model, str(hf_dir), "converted image encoder").eval()
    size = model.config.image_size if isinstance(model.config.image_size, int) else model.config.image_size[0]
    default = [batch_size, model.config.num_channels, size, size]
    shape = [d if d else default[i] for i, d in enumerate(dims)]
    pixels = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = session.run([target], {image.name: pixels})[0]
    with torch.no_grad():
        actual = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    if expected.shape != actual.shape:
        raise OfflineBackboneError(
            f"verification of {hf_dir} failed: onnxruntime gives {list(expected.shape)}, "
            f"the converted model {list(actual.shape)}"
        )
    diff = float(np.abs(expected - actual).max())
    if not diff <= atol:  # also catches NaN
        raise OfflineBackboneError(
            f"verification of {hf_dir} failed: max abs diff {diff:.3g} against onnxruntime "
            f"on {onnx_path} exceeds {atol:g}"
        )
    return diff
