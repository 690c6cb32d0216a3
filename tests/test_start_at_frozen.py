"""The prompt gates: open ones let the prompts in, the gated attention matches a reference computation,
the attention share on prompts is recorded. (That every fresh prompt method reproduces the frozen
embeddings is tested over the METHOD_CASES table: tests/test_method_cases.py.)"""

import pytest
import torch

from mitp.backbones.prompt_attention import PromptAttentionRecord
from mitp.methods import build_model, make_config


def frozen_features(backbone, batch):
    late = build_model(make_config("late_fusion", num_classes=3), backbone)
    with torch.no_grad():
        return late.forward_features(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])


def features(model, batch):
    with torch.no_grad():
        return model.forward_features(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("method", ["mitp", "deep_prompts", "pmf"])
def test_open_gates_let_the_prompts_in(tiny_clip, method):
    model = build_model(make_config(method, num_classes=3), tiny_clip)
    batch = tiny_clip.random_batch(2, 8, torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.vision_gates.fill_(1.0)
    moved = features(model, batch)["image"]
    assert not torch.allclose(moved, frozen_features(tiny_clip, batch)["image"], atol=1e-4)


def test_gated_attention_matches_a_reference_computation(tiny_clip):
    """Tokens: softmax over tokens plus tanh(g) x softmax over prompts; prompts: one softmax over all."""
    vision = tiny_clip.vision
    state = vision.embed(pixel_values=torch.randn(2, 3, tiny_clip.image_size, tiny_clip.image_size))
    prompts = torch.randn(2, 3, vision.width)
    gate = torch.linspace(-1.0, 1.0, vision.num_heads)
    layer = vision.layers[0]
    captured = {}
    layer.self_attn.out_proj.register_forward_pre_hook(lambda m, args: captured.__setitem__("attn", args[0]))
    with torch.no_grad():
        _, prompt_out = vision.run_layer(0, state, prompts, gate=gate)
        hidden = layer.layer_norm1(torch.cat([state.hidden, prompts], dim=1))
    layer.self_attn.out_proj._forward_pre_hooks.clear()
    attn = layer.self_attn
    heads, dim = vision.num_heads, vision.width // vision.num_heads

    def split(x):
        return x.view(2, -1, heads, dim).transpose(1, 2)

    q, k, v = split(attn.q_proj(hidden)) * attn.scale, split(attn.k_proj(hidden)), split(attn.v_proj(hidden))
    length = state.hidden.shape[1]
    tokens = (q[:, :, :length] @ k[:, :, :length].transpose(-1, -2)).softmax(-1) @ v[:, :, :length]
    reads = (q[:, :, :length] @ k[:, :, length:].transpose(-1, -2)).softmax(-1) @ v[:, :, length:]
    own = (q[:, :, length:] @ k.transpose(-1, -2)).softmax(-1) @ v
    expected = torch.cat([tokens + torch.tanh(gate)[None, :, None, None] * reads, own], dim=2)
    expected = expected.transpose(1, 2).reshape(2, -1, vision.width)
    assert torch.allclose(captured["attn"], expected, atol=1e-5)
    assert prompt_out.shape == (2, 3, vision.width)


def test_prompt_attention_share_is_recorded(tiny_clip):
    text = tiny_clip.text
    batch = tiny_clip.random_batch(2, 8, torch.Generator().manual_seed(0))
    state = text.embed(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    prompts = torch.randn(2, 4, text.width)
    ungated, gated = PromptAttentionRecord(), PromptAttentionRecord()
    text.run_layer(1, state, prompts, record=ungated)
    text.run_layer(1, state, prompts, gate=torch.zeros(text.num_heads), record=gated)
    (share,) = ungated.prompt_share
    assert share.shape == (text.num_heads,) and bool(((share > 0) & (share < 1)).all())
    assert torch.equal(gated.prompt_share[0], torch.zeros(text.num_heads))  # a closed gate reads nothing
