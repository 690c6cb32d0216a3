"""Attention masks when prompts are appended to a layer's tokens."""

import pytest
import torch

from mitp.methods import build_model, make_config

LAYER = 2
NUM_PROMPTS = 3


def padded_text_state(backbone, seed=0):
    batch = backbone.random_batch(3, 10, torch.Generator().manual_seed(seed))
    batch["attention_mask"][1, 6:] = 0  # row 1: 6 real tokens then padding
    return backbone.text.embed(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def run(backbone, state, hidden, prompts):
    with torch.no_grad():
        out, prompt_out = backbone.text.run_layer(LAYER, state.with_hidden(hidden), prompts)
    return out.hidden, prompt_out


def test_prompts_are_removed_after_the_layer(tiny_backbone):
    state = padded_text_state(tiny_backbone)
    prompts = torch.randn(3, NUM_PROMPTS, tiny_backbone.text.width)
    out, prompt_out = run(tiny_backbone, state, state.hidden, prompts)
    assert out.shape == state.hidden.shape
    assert prompt_out.shape == prompts.shape


@pytest.mark.parametrize("changed", [2, 4])
def test_clip_text_tokens_do_not_see_later_tokens_with_prompts(tiny_clip, changed):
    state = padded_text_state(tiny_clip)
    prompts = torch.randn(3, NUM_PROMPTS, tiny_clip.text.width)
    base, base_prompts = run(tiny_clip, state, state.hidden, prompts)
    hidden = state.hidden.clone()
    hidden[1, changed] += torch.randn(hidden.shape[-1])  # not a constant: LayerNorm would hide it
    out, out_prompts = run(tiny_clip, state, hidden, prompts)
    assert torch.allclose(out[1, :changed], base[1, :changed], atol=1e-6), "earlier tokens must not see later ones"
    assert not torch.allclose(out[1, changed:6], base[1, changed:6], atol=1e-4), "later tokens do see it"
    assert not torch.allclose(out_prompts[1], base_prompts[1], atol=1e-4), "prompts see every real token"


def test_text_tokens_attend_to_prompts(tiny_backbone):
    state = padded_text_state(tiny_backbone)
    prompts = torch.randn(3, NUM_PROMPTS, tiny_backbone.text.width)
    base, _ = run(tiny_backbone, state, state.hidden, prompts)
    out, _ = run(tiny_backbone, state, state.hidden, prompts + torch.randn_like(prompts))
    valid = state.valid
    assert not torch.allclose(out[valid], base[valid], atol=1e-4)
    # the first token of a causal tower sees only itself and the prompts
    assert not torch.allclose(out[:, 0], base[:, 0], atol=1e-4)


def test_prompts_see_every_real_token_and_no_padding(tiny_backbone):
    state = padded_text_state(tiny_backbone)
    prompts = torch.randn(3, NUM_PROMPTS, tiny_backbone.text.width)
    _, base_prompts = run(tiny_backbone, state, state.hidden, prompts)
    for position in range(10):
        hidden = state.hidden.clone()
        hidden[1, position] += torch.randn(hidden.shape[-1])
        out, out_prompts = run(tiny_backbone, state, hidden, prompts)
        moved = not torch.allclose(out_prompts[1], base_prompts[1], atol=1e-5)
        assert moved == bool(state.valid[1, position]), f"position {position}"
        if not state.valid[1, position]:
            assert torch.allclose(out[1, :6], run(tiny_backbone, state, state.hidden, prompts)[0][1, :6], atol=1e-6)


def test_padding_does_not_change_mitp_logits(tiny_backbone):
    """Pooled end-of-text position and prompt masks are right for padded batches."""
    model = build_model(make_config("mitp", num_classes=3, num_steps=3), tiny_backbone).eval()
    batch = tiny_backbone.random_batch(4, 12, torch.Generator().manual_seed(5))
    lengths = batch["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) > 1
    with torch.no_grad():
        padded = model(**batch).logits
        for i, length in enumerate(lengths.tolist()):
            alone = model(
                pixel_values=batch["pixel_values"][i : i + 1],
                input_ids=batch["input_ids"][i : i + 1, :length],
                attention_mask=batch["attention_mask"][i : i + 1, :length],
            ).logits
            assert torch.allclose(alone, padded[i : i + 1], atol=1e-5), f"row {i} (length {length})"


def test_eos_position_follows_padding(tiny_clip):
    batch = tiny_clip.random_batch(4, 12, torch.Generator().manual_seed(6))
    state = tiny_clip.text.embed(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert torch.equal(state.pool_index, batch["attention_mask"].sum(1) - 1)
