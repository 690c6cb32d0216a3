"""Checkpoints hold trainable tensors only and reload bit-exactly."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mitp.backbones import build_backbone
from mitp.checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, load_checkpoint, save_checkpoint
from mitp.methods import build_model, make_config


def trained_model(backbone, **overrides):
    model = build_model(make_config("mitp", num_classes=3, **overrides), backbone)
    with torch.no_grad():  # move every tensor off its init so a failed load cannot pass
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize("overrides", [{}, {"vision_init": "independent", "tied_generators": False}])
def test_round_trip_is_bit_exact_on_a_fresh_backbone(tmp_path, tiny_backbone, overrides):
    model = trained_model(tiny_backbone, **overrides)
    batch = tiny_backbone.random_batch(3, 10, torch.Generator().manual_seed(0))
    save_checkpoint(model, tmp_path / "ckpt")

    saved = load_file(str(tmp_path / "ckpt" / WEIGHTS_NAME))
    assert set(saved) == set(model.trainable_state_dict()), "only trainable tensors are saved"
    assert not any(name.startswith("backbone.") for name in saved)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted([WEIGHTS_NAME, CONFIG_NAME])

    reloaded = load_checkpoint(tmp_path / "ckpt", build_backbone(tiny_backbone.spec)).eval()
    assert reloaded.config == model.config
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, model(**batch).logits)


def test_loading_onto_other_shapes_names_both(tmp_path, tiny_clip, tiny_pair):
    save_checkpoint(trained_model(tiny_clip), tmp_path / "ckpt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "ckpt", tiny_pair)
    message = str(err.value)
    assert "'tiny-clip'" in message and "'tiny-pair'" in message
    assert message.count("text 6x32, vision 8x48") == 2
    assert "text_embed_dim 24 != 32" in message


def test_tensor_with_wrong_shape_is_named(tmp_path, tiny_clip):
    save_checkpoint(trained_model(tiny_clip), tmp_path / "ckpt")
    path = tmp_path / "ckpt" / WEIGHTS_NAME
    tensors = load_file(str(path))
    tensors["text_prompt"] = torch.zeros(5, 32)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"'text_prompt' has shape \(5, 32\) in the checkpoint but \(8, 32\)"):
        load_checkpoint(tmp_path / "ckpt", tiny_clip)


def test_missing_or_broken_checkpoint(tmp_path, tiny_clip):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nothing", tiny_clip)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "bad", tiny_clip)


def test_checkpoint_records_method_and_backbone(tmp_path, tiny_clip):
    save_checkpoint(trained_model(tiny_clip, prompt_length=4), tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / CONFIG_NAME).read_text())
    assert meta["method"]["method"] == "mitp" and meta["method"]["prompt_length"] == 4
    assert meta["backbone"]["spec"] == "tiny-clip" and meta["backbone"]["vision_layers"] == 8
