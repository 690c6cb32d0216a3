"""MITP: closed gates pass gradient to the gates and head only, the hub matches its formula, switches work.
(What trains for every MITP setting: tests/test_method_cases.py.)"""

import pytest
import torch
import torch.nn.functional as F

from layer_calls import grad_enabled_per_layer, last_layer_outputs
from method_cases import GATES, HEAD
from mitp.methods import ConfigError, build_model, make_config
from mitp.methods.layers import interaction_layers
from mitp.methods.mitp import MemoryHub
from mitp.synthetic import NUM_CLASSES
from toy_training import assert_loss_falls, assert_uses_both_modalities, labelled_batch, toy_losses


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
    model = build_model(
        make_config("mitp", num_classes=2, num_steps=2, text_layers=[3, 4], vision_layers=[5, 7]), tiny_clip
    )
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
        cos = torch.tensor(
            [[F.cosine_similarity(p_t[b, i], q[b, j], dim=0).item() for j in range(4)] for i in range(4)]
        )
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


def test_token_context_joins_the_exchange_as_one_more_slot():
    """hub_context prompts+tokens: S over M+1 slots per side; only the prompt slots get a memory."""
    torch.manual_seed(0)
    hub = MemoryHub(text_width=6, vision_width=5, mode="similarity", tau=0.2, norm=False)
    p_t, p_v, c_t, c_v = torch.randn(2, 3, 6), torch.randn(2, 3, 5), torch.randn(2, 6), torch.randn(2, 5)
    m_t, m_v = hub(p_t, p_v, context=(c_t, c_v))
    text_slots = torch.cat([p_t, c_t[:, None]], 1)
    vision_slots = hub.vision_proj(torch.cat([p_v, c_v[:, None]], 1))
    s = torch.softmax(F.normalize(text_slots, dim=-1) @ F.normalize(vision_slots, dim=-1).transpose(1, 2) / 0.2, -1)
    assert s.shape == (2, 4, 4) and torch.allclose(hub.last_similarity, s)
    assert torch.allclose(m_t, p_t + (s @ vision_slots)[:, :3], atol=1e-6)
    assert torch.allclose(m_v, vision_slots[:, :3] + (s.transpose(1, 2) @ text_slots)[:, :3], atol=1e-6)
    mean = MemoryHub(6, 5, mode="mean", norm=False)
    m_t, _ = mean(p_t, p_v, context=(c_t, c_v))
    assert torch.allclose(m_t, p_t + mean.vision_proj(torch.cat([p_v, c_v[:, None]], 1)).mean(1, keepdim=True))


def test_token_context_is_the_mean_of_valid_tokens_and_reaches_the_other_tower(tiny_clip):
    from mitp.backbones import TowerState
    from mitp.methods.mitp.model import token_mean

    hidden = torch.arange(12.0).reshape(1, 4, 3)
    state = TowerState(hidden, torch.tensor([[True, True, False, False]]), torch.tensor([0]))
    assert torch.equal(token_mean(state), hidden[0, :2].mean(0, keepdim=True))  # padding left out
    # the same weights with and without the token slots: the switch is wired into the forward pass
    plain = build_model(make_config("mitp", num_classes=2, num_steps=2), tiny_clip).eval()
    tokens = build_model(make_config("mitp", num_classes=2, num_steps=2, hub_context="prompts+tokens"), tiny_clip)
    tokens.load_state_dict(plain.state_dict())
    batch = tiny_clip.random_batch(2, 8, torch.Generator().manual_seed(1))
    assert not torch.allclose(text_tower_output(plain, batch), text_tower_output(tokens.eval(), batch), atol=1e-6)
    assert tokens.last_similarities[0].shape == (2, 9, 9)  # 8 prompts + the token mean per side


def test_learned_tau_starts_at_tau_and_learns(tiny_clip):
    model = build_model(make_config("mitp", num_classes=NUM_CLASSES, num_steps=2, learn_tau=True, tau=0.3), tiny_clip)
    assert model.hub.tau.item() == pytest.approx(0.3)
    with torch.no_grad():
        model.text_gates.fill_(0.5)
    model.train()
    model(**labelled_batch(tiny_clip, "single_label")).loss.backward()
    assert model.hub.log_tau.grad is not None and model.hub.log_tau.grad.abs() > 0
    assert model.diagnostics()["hub/tau"] == pytest.approx(0.3)


def test_hub_dropout_acts_on_the_exchange_in_training_only():
    torch.manual_seed(0)
    hub = MemoryHub(6, 5, mode="similarity", norm=False, dropout=0.5)
    p_t, p_v = torch.randn(2, 3, 6), torch.randn(2, 3, 5)
    hub.eval()
    m_t, _ = hub(p_t, p_v)
    assert torch.allclose(m_t, p_t + hub.last_similarity @ hub.vision_proj(p_v), atol=1e-6)
    hub.train()
    exchanged = hub(p_t, p_v)[0] - p_t
    reference = hub.last_similarity @ hub.vision_proj(p_v)
    dropped = exchanged.abs() < 1e-7
    assert dropped.any() and (~dropped).any()
    assert torch.allclose(exchanged[~dropped], 2 * reference[~dropped], atol=1e-5)  # kept parts scaled by 1/(1-p)


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
    assert_uses_both_modalities(model, tiny_backbone)
