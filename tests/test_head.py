"""The shared head: one section of the run config builds the same head for every method."""

import pytest
import torch
import torch.nn.functional as F

from mitp.methods import ConfigError, available_methods, build_model, config_from_dict, make_config
from mitp.methods.head import FusionHead, HeadConfig


def parts(batch=5, widths=(6, 4), seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, widths[0], generator=generator) * 30  # very different scales, as in
    text = torch.randn(batch, widths[1], generator=generator) * 0.5  # DINOv2 next to MiniLM
    return {"image": image, "text": text}


def randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))


@pytest.mark.parametrize(
    "config",
    [
        HeadConfig(),
        HeadConfig(norm="joint"),
        HeadConfig(norm="none"),
        HeadConfig(hidden_dim=7),
        HeadConfig(fusion="mean_of_linear"),
        HeadConfig(fusion="mean_of_linear", norm="none"),
    ],
    ids=lambda c: f"{c.norm},{c.fusion},{c.hidden_dim}",
)
def test_head_matches_a_reference_computation(config):
    head = FusionHead({"image": 6, "text": 4}, 3, config).eval()
    randomise(head)
    x = parts()

    def ln(name, value):
        if config.norm != "per_input":
            return value
        norm = head.norms[name]
        return F.layer_norm(value, value.shape[-1:], norm.weight, norm.bias)

    normed = {name: ln(name, value) for name, value in x.items()}
    if config.fusion == "mean_of_linear":
        expected = (
            sum(F.linear(normed[n], head.classifiers[n].weight, head.classifiers[n].bias) for n in ("image", "text"))
            / 2
        )
    else:
        joint = torch.cat([normed["image"], normed["text"]], -1)
        if config.norm == "joint":
            joint = F.layer_norm(joint, (10,), head.joint_norm.weight, head.joint_norm.bias)
        if config.hidden_dim is None:
            expected = F.linear(joint, head.classifier.weight, head.classifier.bias)
        else:
            first, last = head.classifier[0], head.classifier[3]
            expected = F.linear(F.gelu(F.linear(joint, first.weight, first.bias)), last.weight, last.bias)
    assert torch.allclose(head(x), expected, atol=1e-5)


def test_per_input_norm_keeps_a_small_modality_visible():
    """One LayerNorm over [large; small] leaves the small part near zero; per-input norms do not."""
    x = parts(batch=64)
    joint = FusionHead({"image": 6, "text": 4}, 3, HeadConfig(norm="joint")).joint_norm
    per = FusionHead({"image": 6, "text": 4}, 3, HeadConfig()).norms
    joint_text = joint(torch.cat([x["image"], x["text"]], -1))[:, 6:]
    # how much the text features still vary within a sample (the text's information)
    assert joint_text.std(dim=1).mean() < 0.1 and per["text"](x["text"]).std(dim=1).mean() > 0.9


def test_head_refuses_missing_or_extra_parts():
    head = FusionHead({"image": 6, "text": 4}, 3, HeadConfig())
    with pytest.raises(ValueError, match="image"):
        head({"image": torch.zeros(1, 6), "memory": torch.zeros(1, 4)})


@pytest.mark.parametrize("method", ["late_fusion", "mitp", "deep_prompts", "pmf", "full_finetune"])
def test_every_method_builds_the_same_head_from_the_same_section(method, tiny_clip):
    assert set(available_methods()) == {"late_fusion", "mitp", "deep_prompts", "pmf", "full_finetune"}
    head = {"hidden_dim": 9, "dropout": 0.1, "norm": "joint"}
    model = build_model(make_config(method, num_classes=3, head=head), tiny_clip)
    reference = build_model(make_config("late_fusion", num_classes=3, head=head), tiny_clip)
    shapes = {n: p.shape for n, p in model.head.named_parameters()}
    assert shapes == {n: p.shape for n, p in reference.head.named_parameters()}
    assert isinstance(model.head, FusionHead) and model.head.config == HeadConfig(**head)
    assert model.head.classifier[2].p == 0.1


def test_pmf_paper_head_is_the_mean_of_two_linear_heads(tiny_clip):
    model = build_model(make_config("pmf", num_classes=3, head={"fusion": "mean_of_linear"}), tiny_clip).eval()
    batch = tiny_clip.random_batch(2, 8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.forward_features(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        per_tower = [model.head.classifiers[n](model.head.norms[n](features[n])) for n in ("image", "text")]
        assert torch.allclose(model(**batch).logits, (per_tower[0] + per_tower[1]) / 2)


def test_head_round_trips_through_the_method_json():
    config = make_config("mitp", num_classes=4, head={"hidden_dim": 16, "norm": "none"})
    data = config.to_dict()
    assert data["head"] == {"hidden_dim": 16, "dropout": 0.0, "norm": "none", "fusion": "concat"}
    assert config_from_dict(data) == config


def test_head_keys_given_as_model_keys_point_to_the_head_section():
    with pytest.raises(ConfigError, match=r"under `head:` \(head.hidden_dim\)") as err:
        make_config("late_fusion", num_classes=3, hidden_dim=512)
    assert err.value.key == "hidden_dim"
