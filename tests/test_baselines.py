"""Baselines (late_fusion, deep_prompts, pmf, full_finetune): what trains, gradients, learning,
checkpoints, config errors and the structural properties each one promises.

full_finetune flips requires_grad on the backbone it is given, so its tests build their own
backbone with build_backbone(spec) instead of using the session-scoped fixtures.
"""


import pytest
from toy_training import assert_loss_falls, toy_losses
import torch
from safetensors.torch import load_file

from mitp.backbones import build_backbone
from mitp.checkpoint import WEIGHTS_NAME, load_checkpoint, save_checkpoint
from mitp.methods import ConfigError, build_model, make_config
from mitp.synthetic import NUM_CLASSES

SPECS = ["tiny-clip", "tiny-pair"]
METHODS = ["late_fusion", "deep_prompts", "pmf", "full_finetune"]

# --- expected trainable parameter names, written out --------------------------------------
NORMS = {f"head.norms.{part}.{p}" for part in ("image", "text") for p in ("weight", "bias")}
HEAD = NORMS | {"head.classifier.weight", "head.classifier.bias"}
HIDDEN_HEAD = NORMS | {f"head.classifier.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")}
GATES = {"text_gates", "vision_gates"}
# Default deep_prompts: 6 interaction steps (MITP's default) on both tiny backbones.
DEEP_PROMPTS = {f"{tower}_prompts.{k}" for tower in ("text", "vision") for k in range(6)} | HEAD | GATES
# Default pmf: 2 fusion layers, three prompt kinds per tower, one two-layer translator per layer and direction.
PMF = ({f"{tower}_prompts.{k}.{kind}" for tower in ("text", "vision") for k in (0, 1)
        for kind in ("query", "query_context", "fusion_context")}
       | {f"{direction}.{k}.{linear}.{p}" for direction in ("text_to_vision", "vision_to_text") for k in (0, 1)
          for linear in (0, 2) for p in ("weight", "bias")}
       | HEAD | GATES)

# Full fine-tuning trains every tower tensor; tiny-clip has 6 text / 8 vision layers, tiny-pair too.
CLIP_LAYER = [f"self_attn.{proj}_proj.{p}" for proj in ("q", "k", "v", "out") for p in ("weight", "bias")] + [
    f"{m}.{p}" for m in ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2") for p in ("weight", "bias")]
BERT_LAYER = [f"attention.self.{m}.{p}" for m in ("query", "key", "value") for p in ("weight", "bias")] + [
    f"{m}.{p}" for m in ("attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                         "output.dense", "output.LayerNorm") for p in ("weight", "bias")]
VIT_LAYER = [f"attention.{proj}_proj.{p}" for proj in ("q", "k", "v", "o") for p in ("weight", "bias")] + [
    f"{m}.{p}" for m in ("layernorm_before", "layernorm_after", "mlp.fc1", "mlp.fc2") for p in ("weight", "bias")]
TOWER_TOP = {
    "tiny-clip": {
        "text.embeddings.token_embedding.weight", "text.embeddings.position_embedding.weight",
        "text.final_layer_norm.weight", "text.final_layer_norm.bias", "text.projection.weight",
        "vision.embeddings.class_embedding", "vision.embeddings.patch_embedding.weight",
        "vision.embeddings.position_embedding.weight", "vision.pre_layrnorm.weight", "vision.pre_layrnorm.bias",
        "vision.post_layernorm.weight", "vision.post_layernorm.bias", "vision.projection.weight",
    },
    "tiny-pair": {
        "text.embeddings.word_embeddings.weight", "text.embeddings.position_embeddings.weight",
        "text.embeddings.token_type_embeddings.weight", "text.embeddings.LayerNorm.weight",
        "text.embeddings.LayerNorm.bias", "vision.embeddings.cls_token", "vision.embeddings.position_embeddings",
        "vision.embeddings.patch_embeddings.projection.weight", "vision.embeddings.patch_embeddings.projection.bias",
        "vision.layernorm.weight", "vision.layernorm.bias",
    },
}
LAYER_NAMES = {"tiny-clip": (CLIP_LAYER, CLIP_LAYER), "tiny-pair": (BERT_LAYER, VIT_LAYER)}
# Softmax ignores a per-query constant, so attention key biases cannot change any output:
# their gradient is zero up to rounding. Every other tower tensor must receive gradient.
KEY_BIAS = {"tiny-clip": ("self_attn.k_proj.bias",), "tiny-pair": ("attention.self.key.bias", "attention.k_proj.bias")}


def backbone_names(spec):
    text_layer, vision_layer = LAYER_NAMES[spec]
    names = set(TOWER_TOP[spec])
    names |= {f"text.layers.{i}.{n}" for i in range(6) for n in text_layer}
    names |= {f"vision.layers.{i}.{n}" for i in range(8) for n in vision_layer}
    return {f"backbone.{n}" for n in names}


def expected_trainable(method, spec, overrides=None):
    if method == "late_fusion":
        return HIDDEN_HEAD if (overrides or {}).get("head", {}).get("hidden_dim") else HEAD
    if method == "deep_prompts":
        return DEEP_PROMPTS
    if method == "pmf":
        return PMF
    return HEAD | backbone_names(spec)


def backbone_for(method, spec, shared):
    """A fresh backbone for full_finetune (it trains what it is given), else the shared one."""
    return build_backbone(spec) if method == "full_finetune" else shared[spec]


@pytest.fixture
def shared(tiny_clip, tiny_pair):
    return {"tiny-clip": tiny_clip, "tiny-pair": tiny_pair}


def labelled_batch(backbone, seed=0):
    batch = backbone.random_batch(4, 10, torch.Generator().manual_seed(seed))
    batch["labels"] = torch.tensor([0, 1, 2, 3])
    return batch


def is_key_bias(name, spec):
    return name.endswith(KEY_BIAS[spec])


# --- trainable parameters and gradients ----------------------------------------------------
CASES = [("late_fusion", {}), ("late_fusion", {"head": {"hidden_dim": 16, "dropout": 0.1}}), ("deep_prompts", {}),
         ("pmf", {}), ("full_finetune", {})]


def open_gates(model):
    """Prompt methods start with closed gates (tests/test_start_at_frozen.py); open them so that
    every prompt is on the path to the loss."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in GATES:
                param.fill_(0.5)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("method, overrides", CASES, ids=lambda c: c if isinstance(c, str) else
                         ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_exactly_the_expected_parameters_train_and_get_gradient(method, overrides, spec, shared):
    backbone = backbone_for(method, spec, shared)
    model = build_model(make_config(method, num_classes=NUM_CLASSES, **overrides), backbone)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected_trainable(method, spec, overrides)
    assert set(model.trainable_state_dict()) == trainable

    open_gates(model)
    model.train()
    model(**labelled_batch(backbone)).loss.backward()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert name.startswith("backbone.") and param.grad is None, f"frozen {name} got a gradient"
        elif is_key_bias(name, spec):
            assert param.grad is not None and param.grad.abs().max() < 1e-6, f"{name}: gradient beyond rounding"
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} got no gradient"
    assert not backbone.training


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("method", METHODS)
def test_loss_falls_on_a_task_that_needs_both_modalities(method, spec, shared):
    backbone = backbone_for(method, spec, shared)
    model = build_model(make_config(method, num_classes=NUM_CLASSES), backbone).train()
    # Full fine-tuning moves the towers too (at lr * backbone_lr_scale), so its head lr is lower.
    optimizer = torch.optim.AdamW(model.param_groups(3e-3 if method == "full_finetune" else 1e-2))
    assert_loss_falls(toy_losses(model, backbone, optimizer, steps=30))


# --- checkpoints -----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_round_trip_is_bit_exact_on_a_fresh_backbone(method, spec, shared, tmp_path):
    backbone = backbone_for(method, spec, shared)
    model = build_model(make_config(method, num_classes=3), backbone)
    with torch.no_grad():  # move every trained tensor off its init so a failed load cannot pass
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    save_checkpoint(model, tmp_path / "ckpt")
    saved = set(load_file(str(tmp_path / "ckpt" / WEIGHTS_NAME)))
    assert saved == expected_trainable(method, spec)
    assert any(n.startswith("backbone.") for n in saved) == (method == "full_finetune")

    reloaded = load_checkpoint(tmp_path / "ckpt", build_backbone(spec)).eval()
    assert reloaded.config == model.config
    batch = backbone.random_batch(3, 10, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, model(**batch).logits)


# --- config validation -----------------------------------------------------------------------
@pytest.mark.parametrize("method, values, key", [
    ("late_fusion", {"head": {"hidden_dim": 0}}, "head.hidden_dim"),
    ("late_fusion", {"head": {"hidden_dim": 8, "dropout": 1.0}}, "head.dropout"),
    ("late_fusion", {"head": {"dropout": 0.2}}, "head.dropout"),
    ("late_fusion", {"head": {"norm": "batch"}}, "head.norm"),
    ("late_fusion", {"head": {"fusion": "mean_of_linear", "hidden_dim": 4}}, "head.hidden_dim"),
    ("late_fusion", {"head": {"fusion": "mean_of_linear", "norm": "joint"}}, "head.norm"),
    ("late_fusion", {"head": {"width": 3}}, "head.width"),
    ("late_fusion", {"hidden_dim": 512}, "hidden_dim"),  # moved to the head section
    ("late_fusion", {"hub": "none"}, "hub"),
    ("full_finetune", {"backbone_lr_scale": 0}, "backbone_lr_scale"),
    ("full_finetune", {"backbone_lr_scale": "fast"}, "backbone_lr_scale"),
    ("full_finetune", {"head": {"hidden_dim": -1}}, "head.hidden_dim"),
    ("deep_prompts", {"prompt_gate": "yes"}, "prompt_gate"),
    ("deep_prompts", {"num_steps": 0}, "num_steps"),
    ("deep_prompts", {"prompt_length": 0}, "prompt_length"),
    ("deep_prompts", {"prompt_init_std": 0.0}, "prompt_init_std"),
    ("deep_prompts", {"text_layers": [1, 2]}, "vision_layers"),
    ("deep_prompts", {"num_steps": 2, "text_layers": [2, 1], "vision_layers": [1, 2]}, "text_layers"),
    ("deep_prompts", {"num_steps": 2, "text_layers": [1, 2], "vision_layers": [1, 2, 3]}, "vision_layers"),
    ("deep_prompts", {"hub": "similarity"}, "hub"),
    ("pmf", {"n_fusion_layers": 0}, "n_fusion_layers"),
    ("pmf", {"prompt_length": 0}, "prompt_length"),
    ("pmf", {"prompt_init_std": -0.1}, "prompt_init_std"),
    ("pmf", {"mapper_hidden": 0}, "mapper_hidden"),
    ("pmf", {"n_fusion_layers": 1.5}, "n_fusion_layers"),
])
def test_invalid_config_names_the_key(method, values, key):
    with pytest.raises(ConfigError) as err:
        make_config(method, num_classes=3, **values)
    assert err.value.key == key


@pytest.mark.parametrize("method, values, key", [
    ("pmf", {"n_fusion_layers": 7}, "n_fusion_layers"),  # tiny-clip text tower has 6 layers
    ("deep_prompts", {"num_steps": 7}, "num_steps"),
    ("deep_prompts", {"num_steps": 2, "text_layers": [1, 2], "vision_layers": [3, 8]}, "vision_layers"),
])
def test_configs_that_do_not_fit_the_backbone_name_the_key(method, values, key, tiny_clip):
    with pytest.raises(ConfigError) as err:
        build_model(make_config(method, num_classes=3, **values), tiny_clip)
    assert err.value.key == key


# --- late fusion -------------------------------------------------------------------------------
def grad_enabled_per_layer(backbone, run):
    seen = {}
    def record(key):
        return lambda module, args, output: seen.__setitem__(key, torch.is_grad_enabled())

    hooks = [layer.register_forward_hook(record((tower, idx)))
             for tower in ("text", "vision") for idx, layer in enumerate(getattr(backbone, tower).layers)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_late_fusion_is_a_head_on_clips_own_embeddings(tiny_backbone):
    model = build_model(make_config("late_fusion", num_classes=3), tiny_backbone).eval()
    batch = tiny_backbone.random_batch(3, 9, torch.Generator().manual_seed(2))
    seen = grad_enabled_per_layer(tiny_backbone, lambda: model(**batch))
    assert not any(seen.values()), "the towers of a linear probe need no graph"
    with torch.no_grad():
        image = tiny_backbone.vision(pixel_values=batch["pixel_values"])
        text = tiny_backbone.text(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        expected = model.head({"image": image, "text": text})
        assert torch.equal(model(**batch).logits, expected)


# --- deep prompts --------------------------------------------------------------------------------
def tower_outputs(model, batch):
    """Final-layer outputs of each tower (detached), from forward hooks."""
    captured = {}
    backbone = model.backbone
    hooks = [getattr(backbone, t).layers[-1].register_forward_hook(
        lambda m, i, o, t=t: captured.__setitem__(t, (o[0] if isinstance(o, tuple) else o).detach()))
        for t in ("text", "vision")]
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        for h in hooks:
            h.remove()
    return captured


def test_deep_prompts_towers_do_not_exchange(tiny_backbone):
    model = build_model(make_config("deep_prompts", num_classes=2), tiny_backbone).eval()
    batch = tiny_backbone.random_batch(2, 8, torch.Generator().manual_seed(1))
    new_image = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    new_text = tiny_backbone.random_batch(2, 8, torch.Generator().manual_seed(5))
    new_text["pixel_values"] = batch["pixel_values"]
    base, image_changed, text_changed = (tower_outputs(model, b) for b in (batch, new_image, new_text))
    assert torch.equal(base["text"], image_changed["text"])
    assert not torch.allclose(base["vision"], image_changed["vision"])
    assert torch.equal(base["vision"], text_changed["vision"])


def test_deep_prompts_insert_fresh_prompts_only_at_interaction_layers(tiny_clip):
    config = make_config("deep_prompts", num_classes=2, num_steps=2, text_layers=[2, 4], vision_layers=[3, 6],
                         prompt_length=3)
    model = build_model(config, tiny_clip)
    batch = tiny_clip.random_batch(2, 8, torch.Generator().manual_seed(1))
    lengths = {"text": batch["input_ids"].shape[1], "vision": (32 // 8) ** 2 + 1}
    extras, grads = {}, {}

    def record(module, args, key):
        tower, idx = key
        extras[key] = args[0][:, lengths[tower]:].detach()
        grads[key] = torch.is_grad_enabled()

    hooks = [layer.register_forward_pre_hook(lambda m, a, key=(tower, idx): record(m, a, key))
             for tower in ("text", "vision") for idx, layer in enumerate(getattr(tiny_clip, tower).layers)]
    try:
        model(**batch)
    finally:
        for h in hooks:
            h.remove()
    for tower, layers, prompts, depth in (("text", [2, 4], model.text_prompts, 6),
                                          ("vision", [3, 6], model.vision_prompts, 8)):
        for idx in range(depth):
            if idx in layers:
                expected = prompts[layers.index(idx)].detach().expand(2, -1, -1)
                assert torch.equal(extras[(tower, idx)], expected), f"{tower} layer {idx}: wrong prompts"
            else:
                assert extras[(tower, idx)].shape[1] == 0, f"{tower} layer {idx} should run without prompts"
            assert grads[(tower, idx)] == (idx >= layers[0])


# --- full fine-tuning ---------------------------------------------------------------------------
def test_full_finetune_param_groups_split_backbone_and_head():
    backbone = build_backbone("tiny-clip")
    model = build_model(make_config("full_finetune", num_classes=3, backbone_lr_scale=0.25), backbone)
    groups = model.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [pytest.approx(2.5e-4), 1e-3]
    backbone_ids = {id(p) for p in backbone.parameters()}
    head_ids = {id(p) for p in model.head.parameters()}
    assert {id(p) for p in groups[0]["params"]} == backbone_ids
    assert {id(p) for p in groups[1]["params"]} == head_ids
    torch.optim.AdamW(groups)  # a valid optimizer spec


def test_full_finetune_runs_with_grad_and_building_another_method_refreezes():
    backbone = build_backbone("tiny-pair")
    model = build_model(make_config("full_finetune", num_classes=3), backbone).train()
    assert all(p.requires_grad for p in backbone.parameters())
    assert not backbone.training, "towers stay in eval mode (no dropout) even when they train"
    seen = grad_enabled_per_layer(backbone, lambda: model(**backbone.random_batch(2, 8)))
    assert all(seen.values())
    build_model(make_config("late_fusion", num_classes=3), backbone)
    assert not any(p.requires_grad for p in backbone.parameters())
