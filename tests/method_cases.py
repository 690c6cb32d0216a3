"""METHOD_CASES: one row per method setting, the table the per-method tests are driven by.

Each case says what trains (parameter names written out, per tiny backbone), whether the method
has a frozen prefix (so it can be cached) and whether it inserts prompts (so it must start at the
frozen model). tests/test_method_cases.py checks the table against the registry.
"""

from dataclasses import dataclass, field

SPECS = ["tiny-clip", "tiny-pair"]

# --- expected trainable parameter names, written out --------------------------------------
NORMS = {f"head.norms.{part}.{p}" for part in ("image", "text") for p in ("weight", "bias")}
HEAD = NORMS | {"head.classifier.weight", "head.classifier.bias"}
HIDDEN_HEAD = NORMS | {f"head.classifier.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")}
GATES = {"text_gates", "vision_gates"}
# Default deep_prompts: 6 interaction steps (MITP's default) on both tiny backbones.
DEEP_PROMPTS = {f"{tower}_prompts.{k}" for tower in ("text", "vision") for k in range(6)} | HEAD | GATES


def pmf_names(layers: int) -> set:
    """PMF: three prompt kinds per tower and fusion layer, a two-layer translator per layer and direction."""
    return (
        {
            f"{tower}_prompts.{k}.{kind}"
            for tower in ("text", "vision")
            for k in range(layers)
            for kind in ("query", "query_context", "fusion_context")
        }
        | {
            f"{direction}.{k}.{linear}.{p}"
            for direction in ("text_to_vision", "vision_to_text")
            for k in range(layers)
            for linear in (0, 2)
            for p in ("weight", "bias")
        }
        | HEAD
        | GATES
    )


PMF = pmf_names(2)  # the default: 2 fusion layers

# Full fine-tuning trains every tower tensor; tiny-clip has 6 text / 8 vision layers, tiny-pair too.
CLIP_LAYER = [f"self_attn.{proj}_proj.{p}" for proj in ("q", "k", "v", "out") for p in ("weight", "bias")] + [
    f"{m}.{p}" for m in ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2") for p in ("weight", "bias")
]
BERT_LAYER = [f"attention.self.{m}.{p}" for m in ("query", "key", "value") for p in ("weight", "bias")] + [
    f"{m}.{p}"
    for m in (
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    )
    for p in ("weight", "bias")
]
VIT_LAYER = [f"attention.{proj}_proj.{p}" for proj in ("q", "k", "v", "o") for p in ("weight", "bias")] + [
    f"{m}.{p}" for m in ("layernorm_before", "layernorm_after", "mlp.fc1", "mlp.fc2") for p in ("weight", "bias")
]
TOWER_TOP = {
    "tiny-clip": {
        "text.embeddings.token_embedding.weight",
        "text.embeddings.position_embedding.weight",
        "text.final_layer_norm.weight",
        "text.final_layer_norm.bias",
        "text.projection.weight",
        "vision.embeddings.class_embedding",
        "vision.embeddings.patch_embedding.weight",
        "vision.embeddings.position_embedding.weight",
        "vision.pre_layrnorm.weight",
        "vision.pre_layrnorm.bias",
        "vision.post_layernorm.weight",
        "vision.post_layernorm.bias",
        "vision.projection.weight",
    },
    "tiny-pair": {
        "text.embeddings.word_embeddings.weight",
        "text.embeddings.position_embeddings.weight",
        "text.embeddings.token_type_embeddings.weight",
        "text.embeddings.LayerNorm.weight",
        "text.embeddings.LayerNorm.bias",
        "vision.embeddings.cls_token",
        "vision.embeddings.position_embeddings",
        "vision.embeddings.patch_embeddings.projection.weight",
        "vision.embeddings.patch_embeddings.projection.bias",
        "vision.layernorm.weight",
        "vision.layernorm.bias",
    },
}
LAYER_NAMES = {"tiny-clip": (CLIP_LAYER, CLIP_LAYER), "tiny-pair": (BERT_LAYER, VIT_LAYER)}


def backbone_names(spec):
    text_layer, vision_layer = LAYER_NAMES[spec]
    names = set(TOWER_TOP[spec])
    names |= {f"text.layers.{i}.{n}" for i in range(6) for n in text_layer}
    names |= {f"vision.layers.{i}.{n}" for i in range(8) for n in vision_layer}
    return {f"backbone.{n}" for n in names}


# MITP with 6 steps on both tiny backbones (its defaults).
MITP = (
    {
        "text_prompt",
        "text_to_vision.weight",
        "text_to_vision.bias",
        "hub.vision_proj.weight",
        "hub.vision_proj.bias",
        "hub.text_norm.weight",
        "hub.text_norm.bias",
        "hub.vision_norm.weight",
        "hub.vision_norm.bias",
    }
    | HEAD
    | GATES
)
HUB_NORMS = {n for n in MITP if n.startswith("hub.") and "norm" in n}
MEMORY_NORM = {"head.norms.memory.weight", "head.norms.memory.bias"}


def generators(steps):
    return {f"generators.{i}.{p}" for i in range(steps - 1) for p in ("weight", "bias")}


@dataclass(frozen=True)
class MethodCase:
    method: str
    overrides: dict = field(default_factory=dict, hash=False)
    trainable: object = None  # set of names, or spec -> set of names
    cacheable: bool = True  # has a frozen prefix
    inserts_prompts: bool = False  # must start exactly at the frozen towers

    def expected_trainable(self, spec: str) -> set:
        return self.trainable(spec) if callable(self.trainable) else set(self.trainable)

    @property
    def id(self) -> str:
        return self.method + "".join(f",{k}={v}" for k, v in self.overrides.items())


METHOD_CASES = [
    MethodCase("late_fusion", {}, HEAD),
    MethodCase("late_fusion", {"head": {"hidden_dim": 16, "dropout": 0.1}}, HIDDEN_HEAD),
    MethodCase("deep_prompts", {}, DEEP_PROMPTS, inserts_prompts=True),
    MethodCase("pmf", {}, PMF, inserts_prompts=True),
    MethodCase("pmf", {"n_fusion_layers": 3}, pmf_names(3), inserts_prompts=True),
    MethodCase("full_finetune", {}, lambda spec: HEAD | backbone_names(spec), cacheable=False),
    MethodCase("mitp", {}, MITP, inserts_prompts=True),
    MethodCase("mitp", {"hub": "mean", "num_steps": 3}, MITP, inserts_prompts=True),
    # one step and a pooled head: the hub's output would be unused, so it is not built
    MethodCase("mitp", {"num_steps": 1}, {n for n in MITP if not n.startswith("hub.")}, inserts_prompts=True),
    MethodCase("mitp", {"hub": "none", "hub_norm": False}, MITP - HUB_NORMS, inserts_prompts=True),
    MethodCase("mitp", {"vision_init": "independent"}, MITP | {"vision_prompt"}, inserts_prompts=True),
    MethodCase("mitp", {"tied_generators": False}, MITP | generators(6), inserts_prompts=True),
    MethodCase(
        "mitp",
        {"vision_init": "independent", "tied_generators": False},
        (MITP | {"vision_prompt"} | generators(6)) - {"text_to_vision.weight", "text_to_vision.bias"},
        inserts_prompts=True,
    ),
    MethodCase("mitp", {"head_input": "pooled+memory", "prompt_length": 2}, MITP | MEMORY_NORM, inserts_prompts=True),
    MethodCase("mitp", {"num_steps": 2, "text_layers": [3, 5], "vision_layers": [1, 6]}, MITP, inserts_prompts=True),
    MethodCase("mitp", {"prompt_gate": False}, MITP - GATES, inserts_prompts=True),
    MethodCase(
        "mitp",
        {"learn_tau": True, "hub_context": "prompts+tokens", "hub_dropout": 0.1},
        MITP | {"hub.log_tau"},
        inserts_prompts=True,
    ),
    MethodCase("mitp", {"hub": "mean", "hub_context": "prompts+tokens", "num_steps": 2}, MITP, inserts_prompts=True),
]
