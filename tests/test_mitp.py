"""MITP: closed gates pass gradient to the gates and head only, the hub matches its formula, switches work.
(What trains for every MITP setting: tests/test_method_cases.py.)"""


import pytest
from layer_calls import grad_enabled_per_layer, last_layer_outputs
from method_cases import GATES, HEAD
from toy_training import assert_loss_falls, labelled_batch, toy_losses
import torch
import torch.nn.functional as F

from mitp.methods import ConfigError, build_model, make_config
from mitp.methods.layers import interaction_layers
from mitp.methods.mitp import MemoryHub
from mitp.synthetic import NUM_CLASSES

@pytest.mark.parametrize("head_input", ["pooled", "pooled+memory"])
def test_closed_gates_pass_gradient_to_gates_and_head_only(tiny_backbone, head_input):
    """At init nothing the prompts do reaches the pooled embeddings: only the gates and the head
    learn from the first step (and the memory fed to the head, when it is). Then the gates open."""
    model = build_model(make_config("mitp", num_classes=NUM_CLASSES, head_input=head_input), tiny_backbone)
    model.train()
    model(**labelled_batch(tiny_backbone, "single_label")).loss.backward()
    nonzero = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    if head_input == "pooled":
        assert nonzero == HEAD | GATES
    else:  # the last step's memory reaches the head directly, through the hub and the prompts
        assert HEAD | GATES | {"text_prompt", "hub.vision_proj.weight"} <= nonzero


def test_layers_below_the_first_interaction_layer_run_without_grad(tiny_clip):
    model = build_model(make_config("mitp", num_classes=2, num_steps=2, text_layers=[3, 4],
                                    vision_layers=[5, 7]), tiny_clip)
    seen = grad_enabled_per_layer(tiny_clip, lambda: model(**tiny_clip.random_batch(2, 8)))
    assert [seen[("text", i)] for i in range(6)] == [False] * 3 + [True] * 3
    assert [seen[("vision", i)] for i in range(8)] == [False] * 5 + [True] * 3


def text_tower_output(model, batch):
    """The text tower's last layer output, prompt outputs included (they carry the exchange)."""
    return last_layer_outputs(model, batch)["text"]


@pytest.mark.parametrize("hub, independent", [("none", True), ("similarity", False), ("mean", False)])
def test_hub_none_makes_towers_independent(tiny_backbone, hub, independent):
    model = build_model(make_config("mitp", num_classes=2, hub=hub), tiny_backbone).eval()
    batch = tiny_backbone.random_batch(2, 8, torch.Generator().manual_seed(1))
    other = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    same = torch.allclose(text_tower_output(model, batch), text_tower_output(model, other), atol=1e-6)
    assert same == independent


def test_similarity_hub_matches_reference_formula():
    torch.manual_seed(0)
    hub = MemoryHub(text_width=6, vision_width=5, mode="similarity", tau=0.1, norm=True)
    p_t, p_v = torch.randn(2, 4, 6), torch.randn(2, 4, 5)
    m_t, m_v = hub(p_t, p_v)
    q = p_v @ hub.vision_proj.weight.T + hub.vision_proj.bias
    for b in range(2):
        cos = torch.tensor([[F.cosine_similarity(p_t[b, i], q[b, j], dim=0).item() for j in range(4)]
                            for i in range(4)])
        s = torch.softmax(cos / 0.1, dim=1)
        ref_t = F.layer_norm(p_t[b] + s @ q[b], (6,), hub.text_norm.weight, hub.text_norm.bias)
        ref_v = F.layer_norm(q[b] + s.T @ p_t[b], (6,), hub.vision_norm.weight, hub.vision_norm.bias)
        assert torch.allclose(m_t[b], ref_t, atol=1e-5)
        assert torch.allclose(m_v[b], ref_v, atol=1e-5)


def test_mean_and_none_hubs_match_reference():
    p_t, p_v = torch.randn(2, 3, 4), torch.randn(2, 3, 5)
    mean = MemoryHub(4, 5, mode="mean", norm=False)
    q = mean.vision_proj(p_v)
    m_t, m_v = mean(p_t, p_v)
    assert torch.allclose(m_t, p_t + q.mean(1, keepdim=True))
    assert torch.allclose(m_v, q + p_t.mean(1, keepdim=True))
    none = MemoryHub(4, 5, mode="none", norm=False)
    m_t, m_v = none(p_t, p_v)
    assert torch.equal(m_t, p_t) and torch.allclose(m_v, none.vision_proj(p_v))


def test_first_vision_prompt_is_a_linear_map_of_the_text_prompt(tiny_clip):
    model = build_model(make_config("mitp", num_classes=2), tiny_clip)
    p_t, p_v = model.initial_prompts(3)
    expected = model.text_prompt @ model.text_to_vision.weight.T + model.text_to_vision.bias
    assert p_t.shape == (3, 8, 32) and p_v.shape == (3, 8, 48)
    assert torch.allclose(p_v[2], expected)


def test_default_pairing_uses_same_relative_depth():
    config = make_config("mitp", num_classes=2)
    assert interaction_layers(config, 12, 24) == ([6, 7, 8, 9, 10, 11], [13, 15, 17, 19, 21, 23])
    assert interaction_layers(config, 12, 12) == ([6, 7, 8, 9, 10, 11], [6, 7, 8, 9, 10, 11])


def test_explicit_and_impossible_layer_lists():
    explicit = make_config("mitp", num_classes=2, num_steps=2, text_layers=[0, 4], vision_layers=[2, 3])
    assert interaction_layers(explicit, 6, 8) == ([0, 4], [2, 3])
    with pytest.raises(ConfigError) as err:
        interaction_layers(explicit, 6, 3)
    assert err.value.key == "vision_layers"
    with pytest.raises(ConfigError) as err:
        interaction_layers(make_config("mitp", num_classes=2, num_steps=13), 12, 24)
    assert err.value.key == "num_steps"
    with pytest.raises(ConfigError) as err:  # 12 text steps cannot map onto 6 distinct vision layers
        interaction_layers(make_config("mitp", num_classes=2, num_steps=12), 12, 6)
    assert err.value.key == "num_steps"


def test_losses_are_cross_entropy_and_bce(tiny_clip):
    for task, criterion in (("single_label", F.cross_entropy), ("multi_label", F.binary_cross_entropy_with_logits)):
        model = build_model(make_config("mitp", num_classes=NUM_CLASSES, task=task), tiny_clip)
        batch = labelled_batch(tiny_clip, task)
        out = model(**batch)
        assert out.logits.shape == (4, NUM_CLASSES)
        assert torch.allclose(out.loss, criterion(out.logits, batch["labels"]))
        assert model(**{k: v for k, v in batch.items() if k != "labels"}).loss is None


def test_loss_falls_on_a_task_that_needs_both_modalities(tiny_backbone):
    model = build_model(make_config("mitp", num_classes=NUM_CLASSES), tiny_backbone)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    assert_loss_falls(toy_losses(model, tiny_backbone, optimizer, steps=40))
