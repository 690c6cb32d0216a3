"""ONNX export and the onnxruntime classifier: every method's graph reproduces its eager logits (padded
batches, other batch sizes and text lengths), predictions match PyTorch's, the runtime path never
imports torch, the server runs on it, and int8 quantization writes a working graph."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")  # the onnx extra; CI installs the dev extras, which include it

from method_cases import METHOD_CASES, SPECS  # noqa: E402
from mitp import Classifier  # noqa: E402
from mitp.app.cli import main  # noqa: E402
from mitp.backbones import build_backbone  # noqa: E402
from mitp.data.manifest import LabelSpace  # noqa: E402
from mitp.files import CheckpointError  # noqa: E402
from mitp.methods import build_model, make_config  # noqa: E402
from mitp.onnx_export import _batch, export_onnx  # noqa: E402
from mitp.torch_runtime import TorchClassifier  # noqa: E402

CASES = [c for c in METHOD_CASES if c.overrides.get("head", {}) == {} and "text_layers" not in c.overrides][:9]


def opened(model) -> None:
    """Gates open and prompts non-zero, so what the prompts do is part of the logits being compared."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "gates" in name or "prompts" in name:
                param.add_(0.3 * torch.randn_like(param))


# Each method's plain case on both backbone families; its variants change the method's part of the
# graph only, which is the same on either family, so they export on the first.
EXPORT_CASES = [(case, spec) for case in CASES for spec in SPECS if not case.overrides or spec == SPECS[0]]


@pytest.mark.parametrize(("case", "spec"), EXPORT_CASES, ids=lambda value: getattr(value, "id", value))
def test_every_method_exports_a_graph_that_reproduces_its_logits(case, spec, tmp_path):
    backbone = build_backbone(spec)
    # the modality-mask input: once per prompt method (its plain case, first family); variants change no input
    aware = case.method in ("mitp", "deep_prompts") and not case.overrides and spec == SPECS[0]
    for missing_aware in (False, True) if aware else (False,):
        extra = {"missing_aware": True} if missing_aware else {}
        model = build_model(make_config(case.method, num_classes=3, **case.overrides, **extra), backbone).eval()
        opened(model)
        classifier = TorchClassifier.from_model(model, LabelSpace("single_label", ("a", "b", "c")))
        spec_json = export_onnx(classifier, tmp_path / f"m{missing_aware}")
        assert spec_json["parity_max_abs"] < 1e-4 and spec_json["reads_modality_mask"] == missing_aware
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp_path / f"m{missing_aware}" / "model.onnx"))
        for size, length in ((6, 11), (1, 3)):  # sizes and lengths the export's own check did not use
            batch = _batch(classifier, size, length, 7, missing_aware)
            with torch.no_grad():
                eager = model(**batch).logits.numpy()
            graph = session.run(None, {k: v.numpy() for k, v in batch.items()})[0]
            assert np.abs(graph - eager).max() < 1e-4, (case.id, spec, size, length)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx") / "model"
    assert main(["export", str(tiny_run), "--out", str(folder), "--onnx", "--quantize", "int8"]) == 0
    return folder


def test_the_runtime_predicts_what_pytorch_predicts(exported, tiny_run, toy_dataset):
    images = [toy_dataset / "images" / f"test-{i:04d}.png" for i in range(5)]
    texts = ["apple amber", "berry", None, "cherry date", "elder"]
    images[1] = None
    onnx, torch_ = Classifier.from_pretrained(exported, runtime="onnx"), Classifier.from_pretrained(tiny_run)
    got, want = onnx.predict(images, texts, top_k=3), torch_.predict(images, texts, top_k=3)
    assert [[p["label"] for p in row] for row in got] == [[p["label"] for p in row] for row in want]
    assert [p["score"] for row in got for p in row] == pytest.approx(
        [p["score"] for row in want for p in row], abs=1e-5
    )
    assert [row.modalities for row in got] == [row.modalities for row in want]
    int8 = Classifier.from_pretrained(exported, runtime="onnx", quantized=True).predict(images, texts, top_k=1)
    assert len(int8) == 5 and all(row[0]["label"] in onnx.labels.labels for row in int8)


def test_the_onnx_path_imports_only_numpy_pillow_onnxruntime_tokenizers_and_pydantic(exported, toy_dataset):
    """What a deployment installs (docs/guides/deploy.md): no torch, no transformers, no CLI dependencies."""
    script = (
        f"import sys\nfrom mitp import Classifier\n"
        f"c = Classifier.from_pretrained({str(exported)!r}, runtime='onnx')\n"
        f"print(c.predict(images=[{str(toy_dataset / 'images' / 'test-0000.png')!r}], texts=['apple'])[0][0]"
        f"['label'])\n"
        f"print(*sorted({{m.split('.')[0] for m in sys.modules}} - set(sys.stdlib_module_names)))\n"
    )
    label, *modules = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout.split()
    assert label in Classifier.from_pretrained(exported, runtime="onnx").labels.labels
    third_party = {m for m in modules if not m.startswith("_") and m != "cython_runtime"}
    # pydantic validates the export's files (with its own dependencies); no torch, no transformers
    validation = {"pydantic", "pydantic_core", "annotated_types", "typing_extensions", "typing_inspection"}
    assert third_party <= {"mitp", "numpy", "PIL", "onnxruntime", "tokenizers", *validation}, third_party


def test_the_server_runs_on_the_onnx_graph(exported, toy_dataset):
    import httpx

    from mitp.app.serve import create_app, running

    onnx = Classifier.from_pretrained(exported, runtime="onnx")
    image = (toy_dataset / "images" / "test-0002.png").read_bytes()
    with running(create_app(onnx)) as url:
        health = httpx.get(f"{url}/health").json()
        assert health["method"] == "mitp" and health["explain"] is False
        reply = httpx.post(
            f"{url}/predict", files={"image": ("x.png", image, "image/png")}, data={"text": "apple amber", "top_k": "2"}
        )
        assert reply.status_code == 200
        assert reply.json()["predictions"] == onnx.predict([image], ["apple amber"], top_k=2)[0]
        explained = httpx.post(f"{url}/explain", files={"image": ("x.png", image, "image/png")}, data={"text": "a"})
        assert explained.status_code == 404
        assert explained.json()["detail"] == "the onnx runtime cannot explain (explain runs on PyTorch)"


def test_a_folder_without_a_graph_or_an_int8_graph_is_named(tiny_run, tmp_path, capsys):
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "plain")]) == 0
    with pytest.raises(CheckpointError, match="no onnx.json; export the model with"):
        Classifier.from_pretrained(tmp_path / "plain", runtime="onnx")
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "fp32"), "--onnx"]) == 0
    with pytest.raises(CheckpointError, match="no int8 graph"):
        Classifier.from_pretrained(tmp_path / "fp32", runtime="onnx", quantized=True)
    spec = json.loads((tmp_path / "fp32" / "onnx.json").read_text())
    assert spec["inputs"] == ["pixel_values", "input_ids", "attention_mask"] and spec["int8"] is None
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "q"), "--quantize", "int8"]) == 2
    assert "--quantize applies to the ONNX graph" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["deep_prompts", "pmf", "mitp"])  # late fusion's graph is a part of each
def test_every_prompt_method_on_the_offline_backbone_exports_within_tolerance(method, tmp_path):
    from mitp.backbones.families.offline.cache import offline_status

    if not offline_status()["offline:dinov2s-minilm"]["ready"]:
        if os.environ.get("MITP_REQUIRE_OFFLINE") == "1":
            raise RuntimeError("the offline backbone is required here: make offline")
        pytest.skip("the offline backbone is not converted here (make offline)")
    backbone = build_backbone("offline:dinov2s-minilm")
    model = build_model(
        make_config(method, num_classes=3, **({"num_steps": 2} if method in ("mitp", "deep_prompts") else {})), backbone
    ).eval()
    opened(model)
    classifier = TorchClassifier.from_model(model, LabelSpace("single_label", ("a", "b", "c")), 32, 112)
    assert export_onnx(classifier, tmp_path / "m")["parity_max_abs"] < 1e-4
    assert (tmp_path / "m" / "tokenizer" / "tokenizer.json").is_file()


def test_a_failed_export_leaves_no_folder_behind(tiny_run, tmp_path, monkeypatch, capsys):
    import mitp.onnx_export
    from mitp.onnx_export import ExportError

    def fail(*args, **kwargs):
        raise ExportError("the ONNX graph's logits differ from eager PyTorch by 1.00e-01 (over 0.0001)")

    monkeypatch.setattr(mitp.onnx_export, "export_onnx", fail)
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "model"), "--onnx"]) == 2
    assert "differ from eager PyTorch" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither --out nor the staging folder


def test_predict_on_the_onnx_runtime_writes_what_pytorch_writes(exported, tiny_run, toy_dataset, tmp_path, capsys):
    manifest = toy_dataset / "test.jsonl"
    outs = {}
    for name, extra in (("torch", []), ("onnx", ["--runtime", "onnx"]), ("int8", ["--runtime", "onnx", "--quantized"])):
        outs[name] = tmp_path / f"{name}.jsonl"
        model = tiny_run if name == "torch" else exported
        assert (
            main(["predict", str(model), "--manifest", str(manifest), "--top-k", "2", "--out", str(outs[name]), *extra])
            == 0
        )
    rows = {name: [json.loads(line) for line in path.read_text().splitlines()] for name, path in outs.items()}
    assert len(rows["torch"]) == len(manifest.read_text().splitlines()) == len(rows["int8"])
    assert [[p["label"] for p in r["predictions"]] for r in rows["onnx"]] == [
        [p["label"] for p in r["predictions"]] for r in rows["torch"]
    ]
    assert [p["score"] for r in rows["onnx"] for p in r["predictions"]] == pytest.approx(
        [p["score"] for r in rows["torch"] for p in r["predictions"]], abs=1e-5
    )
    assert main(["predict", str(tiny_run), "--text", "apple", "--quantized"]) == 2
    assert "--quantized applies to --runtime onnx" in capsys.readouterr().err
