"""Towers run layer by layer reproduce the Hugging Face models' own outputs."""

import re

import pytest
import torch
from transformers import BertConfig, BertModel, CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model, ViTConfig, ViTModel

from mitp.backbones import BackboneError, build_backbone, from_clip_model, from_encoders
from mitp.backbones.specs import TINY_BERT, TINY_CLIP, TINY_VIT

ATOL = 1e-5
ATTN = ["eager", "sdpa"]


def run_all_layers(tower, **inputs):
    state = tower.embed(**inputs)
    for i in range(tower.num_layers):
        state, extra = tower.run_layer(i, state)
        assert extra is None
    return state


def max_diff(a, b):
    return (a - b).abs().max().item()


def tiny_clip_model(attn, **text_overrides):
    config = CLIPConfig(
        text_config={**TINY_CLIP["text_config"], **text_overrides},
        vision_config=TINY_CLIP["vision_config"],
        projection_dim=TINY_CLIP["projection_dim"],
    )
    config._attn_implementation = attn
    for sub in (config.text_config, config.vision_config):
        sub._attn_implementation = attn
    return CLIPModel(config).eval()


@pytest.mark.parametrize("attn", ATTN)
@pytest.mark.parametrize("legacy_eos", [False, True])
def test_clip_text_tower_matches_hf_on_padded_batch(attn, legacy_eos):
    overrides = {"eos_token_id": 2} if legacy_eos else {}
    model = tiny_clip_model(attn, **overrides)
    backbone = from_clip_model("test", model)
    batch = backbone.random_batch(5, 14, torch.Generator().manual_seed(1))
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    with torch.no_grad():
        ref = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        ref_embed = model.text_projection(ref.pooler_output)
        state = run_all_layers(backbone.text, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        valid = batch["attention_mask"].bool()
        assert max_diff(backbone.text.final_states(state.hidden)[valid], ref.last_hidden_state[valid]) <= ATOL
        assert max_diff(backbone.text.pool(state), ref.pooler_output) <= ATOL
        assert max_diff(backbone.text(**batch), ref_embed) <= ATOL


@pytest.mark.parametrize("attn", ATTN)
def test_clip_vision_tower_matches_hf(attn):
    model = tiny_clip_model(attn)
    backbone = from_clip_model("test", model)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model.vision_model(pixel_values=pixels)
        state = run_all_layers(backbone.vision, pixel_values=pixels)
        assert max_diff(state.hidden, ref.last_hidden_state) <= ATOL
        assert max_diff(backbone.vision.pool(state), ref.pooler_output) <= ATOL
        assert max_diff(backbone.vision(pixel_values=pixels), model.visual_projection(ref.pooler_output)) <= ATOL


def tiny_vit(attn):
    config = ViTConfig(**TINY_VIT)
    config._attn_implementation = attn
    return ViTModel(config, add_pooling_layer=False).eval()


def tiny_bert(attn):
    config = BertConfig(**TINY_BERT)
    config._attn_implementation = attn
    return BertModel(config).eval()


@pytest.mark.parametrize("attn", ATTN)
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_bert_tower_matches_hf_on_padded_batch(attn, pooling):
    bert = tiny_bert(attn)
    backbone = from_encoders("test", bert, tiny_vit(attn), text_pooling=pooling)
    batch = backbone.random_batch(4, 12, torch.Generator().manual_seed(2))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        ref = bert(input_ids=ids, attention_mask=mask)
        state = run_all_layers(backbone.text, input_ids=ids, attention_mask=mask)
        valid = mask.bool()
        assert max_diff(state.hidden[valid], ref.last_hidden_state[valid]) <= ATOL
        if pooling == "cls":
            expected = ref.pooler_output
        else:  # reference mean pooling over real tokens only
            expected = torch.stack([ref.last_hidden_state[i, valid[i]].mean(0) for i in range(len(ids))])
        assert max_diff(backbone.text(**batch), expected) <= ATOL


@pytest.mark.parametrize("attn", ATTN)
def test_vit_tower_matches_hf(attn):
    vit = tiny_vit(attn)
    backbone = from_encoders("test", tiny_bert(attn), vit)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = vit(pixel_values=pixels)
        state = run_all_layers(backbone.vision, pixel_values=pixels)
        assert max_diff(backbone.vision.final_states(state.hidden), ref.last_hidden_state) <= ATOL
        assert max_diff(backbone.vision(pixel_values=pixels), ref.last_hidden_state[:, 0]) <= ATOL


@pytest.mark.parametrize("attn", ATTN)
def test_dinov2_tower_matches_hf(attn):
    config = Dinov2Config(
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        mlp_ratio=2,
        image_size=28,
        patch_size=7,
        layerscale_value=0.5,
    )
    config._attn_implementation = attn
    dino = Dinov2Model(config).eval()
    backbone = from_encoders("test", tiny_bert(attn), dino)
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        ref = dino(pixel_values=pixels)
        state = run_all_layers(backbone.vision, pixel_values=pixels)
        assert max_diff(backbone.vision.final_states(state.hidden), ref.last_hidden_state) <= ATOL
        assert max_diff(backbone.vision(pixel_values=pixels), ref.pooler_output) <= ATOL


def test_builtin_specs_are_frozen_and_deterministic(tiny_backbone):
    assert not any(p.requires_grad for p in tiny_backbone.parameters())
    again = build_backbone(tiny_backbone.spec)
    for (name, a), (_, b) in zip(tiny_backbone.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), name
    tiny_backbone.train()
    assert not tiny_backbone.training, "a frozen backbone stays in eval mode"


@pytest.mark.parametrize(
    "spec, published",
    [
        # Published totals of the OpenAI checkpoints minus CLIP's logit_scale, which no tower uses.
        ("shape:clip-vit-base-patch16", 149_620_737 - 1),
        ("shape:clip-vit-large-patch14", 427_616_513 - 1),
    ],
)
def test_shape_specs_have_published_sizes(spec, published):
    backbone = build_backbone(spec, device="meta")
    assert sum(p.numel() for p in backbone.parameters()) == published


def test_local_clip_checkpoint_loads_through_from_pretrained(tmp_path):
    model = tiny_clip_model("sdpa")
    model.save_pretrained(tmp_path / "clip")
    backbone = build_backbone(str(tmp_path / "clip"))
    assert backbone.text_source == backbone.vision_source == str(tmp_path / "clip")
    batch = backbone.random_batch(3, 10, torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        ref = getattr(ref, "pooler_output", ref)
        assert max_diff(backbone.text(**batch), ref) <= ATOL


def save_pickled(model, folder):
    """A model folder with its weights only as a pickle, as ``save_pretrained(safe_serialization=False)`` wrote
    it before transformers 5 (which writes safetensors whatever that flag says)."""
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called on a pickle")

    monkeypatch.setattr(torch, "load", refuse)


def test_a_checkpoint_folder_with_only_pickled_weights_is_refused(tmp_path, monkeypatch):
    """Weights are read only from model.safetensors: a pytorch_model.bin (a pickle, which can run code when
    loaded) is refused by name, never unpickled; the same model saved as safetensors loads."""
    model = tiny_clip_model("sdpa")
    pickled = save_pickled(model, tmp_path / "pickled")
    no_unpickling(monkeypatch)
    with pytest.raises(BackboneError) as err:
        build_backbone(str(pickled))
    assert str(err.value).startswith(f"{pickled}: the CLIP checkpoint needs model.safetensors")
    assert "pytorch_model.bin" in str(err.value)
    model.save_pretrained(tmp_path / "safe")
    assert build_backbone(str(tmp_path / "safe")).text_source == str(tmp_path / "safe")


def test_a_pair_with_a_pickled_encoder_is_refused(tmp_path, monkeypatch):
    text = save_pickled(tiny_bert("sdpa"), tmp_path / "text")
    tiny_vit("sdpa").save_pretrained(tmp_path / "vision")
    no_unpickling(monkeypatch)
    with pytest.raises(BackboneError, match=f"^{re.escape(str(text))}: the text encoder needs model.safetensors"):
        build_backbone(f"pair:{text}+{tmp_path / 'vision'}")


def test_local_pair_checkpoint_loads(tmp_path):
    tiny_bert("sdpa").save_pretrained(tmp_path / "text")
    tiny_vit("sdpa").save_pretrained(tmp_path / "vision")
    backbone = build_backbone(f"pair:{tmp_path / 'text'}+{tmp_path / 'vision'}")
    assert (backbone.text.width, backbone.vision.width) == (32, 48)
    assert backbone.text_source == str(tmp_path / "text")


def test_pair_spec_rejects_wrong_model_types(tmp_path):
    tiny_vit("sdpa").save_pretrained(tmp_path / "vision")
    with pytest.raises(BackboneError, match="BERT-family"):
        build_backbone(f"pair:{tmp_path / 'vision'}+{tmp_path / 'vision'}")
    with pytest.raises(BackboneError, match="not a CLIPModel"):
        build_backbone(str(tmp_path / "vision"))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("shape:clip-vit-huge", "unknown shape spec"),
        ("pair:only-one", "pair:<text>\\+<vision>"),
        ("/nonexistent/clip-dir", "not a local directory"),
    ],
)
def test_bad_specs_raise_named_errors(spec, message):
    with pytest.raises(BackboneError, match=message):
        build_backbone(spec)


@pytest.mark.parametrize(
    "spec, suggestion",
    [("tiny-clipp", "tiny-clip"), ("shape:clip-vit-base-patch61", None), ("pair:bert-nope+vit-nope", None)],
)
def test_a_typo_fails_fast_offline_with_the_known_specs(spec, suggestion, monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(BackboneError) as err:
        build_backbone(spec)
    assert time.perf_counter() - started < 5, "no retrying of an unreachable hub"
    if suggestion:
        assert f"did you mean {suggestion!r}" in str(err.value) and "Built-in specs: " in str(err.value)


@pytest.mark.parametrize("spec", ["tiny-clip", "tiny-pair"])
def test_vision_towers_accept_other_image_sizes(spec):
    backbone = build_backbone(spec)
    with torch.no_grad():
        same = backbone.vision.embed(pixel_values=torch.randn(2, 3, 32, 32)).hidden
        smaller = backbone.vision.embed(pixel_values=torch.randn(2, 3, 16, 16)).hidden
    assert same.shape[1] == 1 + 16 and smaller.shape[1] == 1 + 4  # class token + (size / 8) ** 2 patches
