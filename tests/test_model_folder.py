"""A model folder (config.json + model.safetensors) holds trainable tensors only, reloads bit-exactly, and is read
as a file from a stranger: every problem is a named CheckpointError, non-finite weights are never written or
loaded."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mitp.backbones import build_backbone
from mitp.data.manifest import LabelSpace
from mitp.files import CONFIG_FILE, WEIGHTS_FILE, CheckpointError
from mitp.methods import build_model, make_config
from mitp.model_folder import NonFiniteWeights, load_model, save_model_folder

LABELS = LabelSpace("single_label", ("a", "b", "c"))


def trained_model(backbone, **overrides):
    model = build_model(make_config("mitp", num_classes=3, **overrides), backbone)
    with torch.no_grad():  # move every tensor off its init so a failed load cannot pass
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def save(model, folder):
    return save_model_folder(model, folder, LABELS, {"max_text_length": None, "image_size": None})


@pytest.mark.parametrize("overrides", [{}, {"vision_init": "independent", "tied_generators": False}])
def test_round_trip_is_bit_exact_on_a_fresh_backbone(tmp_path, tiny_backbone, overrides):
    model = trained_model(tiny_backbone, **overrides)
    batch = tiny_backbone.random_batch(3, 10, torch.Generator().manual_seed(0))
    save(model, tmp_path / "ckpt")

    saved = load_file(str(tmp_path / "ckpt" / WEIGHTS_FILE))
    assert set(saved) == set(model.trainable_state_dict()), "only trainable tensors are saved"
    assert not any(name.startswith("backbone.") for name in saved)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted([WEIGHTS_FILE, CONFIG_FILE])

    reloaded, config = load_model(tmp_path / "ckpt", build_backbone(tiny_backbone.spec))
    assert reloaded.config == model.config and tuple(config.labels.labels) == LABELS.labels
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, model(**batch).logits)


def test_loading_onto_other_shapes_names_both(tmp_path, tiny_clip, tiny_pair):
    save(trained_model(tiny_clip), tmp_path / "ckpt")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "ckpt", tiny_pair)
    message = str(err.value)
    assert "'tiny-clip'" in message and "'tiny-pair'" in message
    assert message.count("text 6x32, vision 8x48") == 2
    assert "text_embed_dim 24 != 32" in message


def test_tensor_with_wrong_shape_is_named(tmp_path, tiny_clip):
    save(trained_model(tiny_clip), tmp_path / "ckpt")
    path = tmp_path / "ckpt" / WEIGHTS_FILE
    tensors = load_file(str(path))
    tensors["text_prompt"] = torch.zeros(5, 32)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"'text_prompt' is \(5, 32\) torch.float32 in the file but \(8, 32\)"):
        load_model(tmp_path / "ckpt", tiny_clip)


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.float64, torch.float16])
def test_a_tensor_of_another_dtype_is_named_not_cast(tmp_path, tiny_clip, dtype):
    """Float64 weights of 1e300 are finite in the file and infinite once cast; ints and bools are not weights."""
    save(trained_model(tiny_clip), tmp_path / "ckpt")
    path = tmp_path / "ckpt" / WEIGHTS_FILE
    tensors = load_file(str(path))
    tensors["text_prompt"] = (tensors["text_prompt"] * (1e300 if dtype == torch.float64 else 1)).to(dtype)
    save_file(tensors, str(path))
    with pytest.raises(
        CheckpointError, match=rf"'text_prompt' is \(8, 32\) {dtype} in the file but \(8, 32\) torch.float32"
    ):
        load_model(tmp_path / "ckpt", tiny_clip)


def test_missing_or_broken_folder(tmp_path, tiny_clip):
    with pytest.raises(CheckpointError, match="config.json: no such file"):
        load_model(tmp_path / "nothing", tiny_clip)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path / "bad", tiny_clip)


def test_the_folder_records_method_backbone_labels_and_preprocessing(tmp_path, tiny_clip):
    save(trained_model(tiny_clip, prompt_length=4), tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert config["method"]["method"] == "mitp" and config["method"]["prompt_length"] == 4
    assert config["backbone"]["spec"] == "tiny-clip" and config["backbone"]["vision_layers"] == 8
    assert config["labels"] == {"task": "single_label", "labels": ["a", "b", "c"]}
    assert config["preprocessing"] == {"max_text_length": None, "image_size": None}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("labels"), "labels: missing"),
        (lambda c: c.update(odd=1), "odd: extra inputs are not permitted"),
        (lambda c: c["labels"].update(task="regression"), "labels.task: input should be 'single_label' or"),
        (lambda c: c["labels"].update(labels=["a", "b"]), "the labels (single_label, 2) do not fit the model"),
        (lambda c: c["preprocessing"].update(image_size=True), "preprocessing.image_size: input should be a valid"),
        (lambda c: c.update(threshold=1.5), "threshold: input should be less than 1"),
        (lambda c: c["method"].update(prompt_length="8"), "method.prompt_length"),
        (lambda c: c.update(format="other"), "format: input should be 'mitp-classifier-1'"),
    ],
)
def test_every_key_of_config_json_is_checked_and_named(tmp_path, tiny_clip, change, message):
    folder = save(trained_model(tiny_clip), tmp_path / "ckpt")
    config = json.loads((folder / CONFIG_FILE).read_text())
    change(config)
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_model(folder, tiny_clip)
    assert str(err.value).startswith(str(folder / CONFIG_FILE)) and message in str(err.value)


def test_non_finite_weights_are_never_written_nor_loaded(tmp_path, tiny_clip):
    model = trained_model(tiny_clip)
    folder = save(model, tmp_path / "ckpt")
    before = (folder / WEIGHTS_FILE).read_bytes()
    with torch.no_grad():
        model.text_prompt[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeights, match="not written: 1 weight tensor"):
        save(model, folder)
    assert (folder / WEIGHTS_FILE).read_bytes() == before, "the folder keeps its finite weights"
    tensors = load_file(str(folder / WEIGHTS_FILE))
    tensors["text_prompt"][0, 0] = float("inf")
    save_file(tensors, str(folder / WEIGHTS_FILE))
    with pytest.raises(NonFiniteWeights, match=r"model.safetensors: 1 weight tensor\(s\) hold NaN or infinity"):
        load_model(folder, tiny_clip)
