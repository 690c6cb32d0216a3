"""Baselines (late_fusion, deep_prompts, pmf, full_finetune): what trains, gradients, learning,
checkpoints, config errors and the structural properties each one promises.

full_finetune flips requires_grad on the backbone it is given, so its tests build their own
backbone with build_backbone(spec) instead of using the session-scoped fixtures.
"""

import pytest
import torch
from safetensors.torch import load_file

from layer_calls import grad_enabled_per_layer, last_layer_outputs, record_layer_calls
from method_cases import METHOD_CASES, SPECS
from mitp.backbones import build_backbone
from mitp.data.manifest import LabelSpace
from mitp.files import WEIGHTS_FILE
from mitp.methods import ConfigError, build_model, make_config
from mitp.model_folder import load_model, save_model_folder
from mitp.synthetic import NUM_CLASSES
from toy_training import assert_loss_falls, assert_uses_both_modalities, toy_losses

METHODS = ["late_fusion", "deep_prompts", "pmf", "full_finetune"]
DEFAULT_CASES = {c.method: c for c in reversed(METHOD_CASES) if not c.overrides}  # each method's defaults


def backbone_for(method, spec, shared):
    """A fresh backbone for full_finetune (it trains what it is given), else the shared one."""
    return build_backbone(spec) if method == "full_finetune" else shared[spec]


@pytest.fixture
def shared(tiny_clip, tiny_pair):
    return {"tiny-clip": tiny_clip, "tiny-pair": tiny_pair}


# --- learning ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("method", METHODS)
def test_loss_falls_on_a_task_that_needs_both_modalities(method, spec, shared):
    backbone = backbone_for(method, spec, shared)
    model = build_model(make_config(method, num_classes=NUM_CLASSES), backbone).train()
    # Full fine-tuning moves the towers too (at lr * backbone_lr_scale), so its head lr is lower.
    optimizer = torch.optim.AdamW(model.param_groups(3e-3 if method == "full_finetune" else 1e-2))
    assert_loss_falls(toy_losses(model, backbone, optimizer, steps=30))
    assert_uses_both_modalities(model, backbone)


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
    save_model_folder(model, tmp_path / "ckpt", LabelSpace("single_label", ("a", "b", "c")), {})
    saved = set(load_file(str(tmp_path / "ckpt" / WEIGHTS_FILE)))
    assert saved == DEFAULT_CASES[method].expected_trainable(spec)
    assert any(n.startswith("backbone.") for n in saved) == (method == "full_finetune")

    reloaded, _ = load_model(tmp_path / "ckpt", build_backbone(spec))
    assert reloaded.config == model.config
    batch = backbone.random_batch(3, 10, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, model(**batch).logits)


# --- config validation -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, values, key",
    [
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
    ],
)
def test_invalid_config_names_the_key(method, values, key):
    with pytest.raises(ConfigError) as err:
        make_config(method, num_classes=3, **values)
    assert err.value.key == key


@pytest.mark.parametrize(
    "method, values, key",
    [
        ("pmf", {"n_fusion_layers": 7}, "n_fusion_layers"),  # tiny-clip text tower has 6 layers
        ("deep_prompts", {"num_steps": 7}, "num_steps"),
        ("deep_prompts", {"num_steps": 2, "text_layers": [1, 2], "vision_layers": [3, 8]}, "vision_layers"),
    ],
)
def test_configs_that_do_not_fit_the_backbone_name_the_key(method, values, key, tiny_clip):
    with pytest.raises(ConfigError) as err:
        build_model(make_config(method, num_classes=3, **values), tiny_clip)
    assert err.value.key == key


# --- late fusion -------------------------------------------------------------------------------
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
def test_deep_prompts_towers_do_not_exchange(tiny_backbone):
    model = build_model(make_config("deep_prompts", num_classes=2), tiny_backbone).eval()
    batch = tiny_backbone.random_batch(2, 8, torch.Generator().manual_seed(1))
    new_image = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    new_text = tiny_backbone.random_batch(2, 8, torch.Generator().manual_seed(5))
    new_text["pixel_values"] = batch["pixel_values"]
    base, image_changed, text_changed = (last_layer_outputs(model, b) for b in (batch, new_image, new_text))
    assert torch.equal(base["text"], image_changed["text"])
    assert not torch.allclose(base["vision"], image_changed["vision"])
    assert torch.equal(base["vision"], text_changed["vision"])


def test_deep_prompts_insert_fresh_prompts_only_at_interaction_layers(tiny_clip):
    config = make_config(
        "deep_prompts", num_classes=2, num_steps=2, text_layers=[2, 4], vision_layers=[3, 6], prompt_length=3
    )
    model = build_model(config, tiny_clip)
    batch = tiny_clip.random_batch(2, 8, torch.Generator().manual_seed(1))
    lengths = {"text": batch["input_ids"].shape[1], "vision": (32 // 8) ** 2 + 1}
    calls = record_layer_calls(tiny_clip, lambda: model(**batch))
    extras = {key: entries[0]["input"][:, lengths[key[0]] :] for key, entries in calls.items()}
    grads = {key: entries[0]["grad"] for key, entries in calls.items()}
    for tower, layers, prompts, depth in (
        ("text", [2, 4], model.text_prompts, 6),
        ("vision", [3, 6], model.vision_prompts, 8),
    ):
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
