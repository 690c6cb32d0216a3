"""An export folder is a file from a stranger: every file is validated on load (the graph, onnx.json, config.json,
the tokenizer), every file onnx.json names must lie inside the folder, and the graph's inputs and outputs must be
what onnx.json and the labels say. Each problem is one named error, in the API and on the command line."""

import json
import shutil

import pytest

pytest.importorskip("onnxruntime")  # the onnx extra; CI installs the dev extras, which include it

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from mitp import Classifier  # noqa: E402
from mitp.app.cli import main  # noqa: E402
from mitp.files import CheckpointError, sha256_of  # noqa: E402


@pytest.fixture(scope="module")
def pristine(tiny_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "model"
    assert main(["export", str(tiny_run), "--out", str(folder), "--onnx", "--quantize", "int8"]) == 0
    return folder


@pytest.fixture
def export(pristine, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(pristine, folder)
    return folder


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def refused(folder, match, capsys, quantized=False):
    """The API and `mitp predict --runtime onnx` both refuse ``folder`` with one named line."""
    with pytest.raises(CheckpointError, match=match):
        Classifier.from_pretrained(folder, runtime="onnx", quantized=quantized)
    extra = ["--quantized"] if quantized else []
    assert main(["predict", str(folder), "--runtime", "onnx", "--text", "apple", *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda f: (f / "model.onnx").write_bytes((f / "model.onnx").read_bytes()[:300]), "not a loadable ONNX graph"),
        (lambda f: (f / "model.onnx").write_bytes(b"\x00garbage" * 10), "not a loadable ONNX graph"),
        (lambda f: (f / "model.onnx").write_bytes(b""), "not a loadable ONNX graph"),
        (lambda f: (f / "model.onnx").unlink(), "'model.onnx' is not a file in"),
    ],
    ids=["truncated", "garbage", "empty", "missing"],
)
def test_a_damaged_graph_is_named(export, damage, match, capsys):
    damage(export)
    refused(export, match, capsys)


def test_a_damaged_int8_graph_is_named_and_onnx_json_cannot_point_outside_the_folder(export, tmp_path, capsys):
    (export / "model.int8.onnx").write_bytes(b"garbage")
    refused(export, "model.int8.onnx: not a loadable ONNX graph", capsys, quantized=True)
    shutil.copy(export / "model.onnx", tmp_path / "x.onnx")
    edit_json(export / "onnx.json", lambda s: s.update(int8="../x.onnx"))
    refused(export, r"onnx.json: int8: '../x.onnx' lies outside the model folder", capsys, quantized=True)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s["preprocessing"].pop("image"), "onnx.json: preprocessing.image: missing"),
        (lambda s: s.update(inputs=["pixel_values", "input_ids", "mask"]), "onnx.json: inputs.2: input should be"),
        (lambda s: s["preprocessing"]["image"].update(resample=9), "onnx.json: preprocessing.image.resample"),
        (lambda s: s["preprocessing"]["text"].update(kind="bogus"), "onnx.json: preprocessing.text: input tag 'bogus'"),
        (lambda s: s.update(format="mitp-onnx-0"), "onnx.json: format: input should be 'mitp-onnx-1'"),
        (lambda s: s.update(extra=1), "onnx.json: extra: extra inputs are not permitted"),
    ],
    ids=["no-image", "input-name", "resample", "text-kind", "format", "unknown-key"],
)
def test_every_key_of_onnx_json_is_checked_and_named(export, change, match, capsys):
    edit_json(export / "onnx.json", change)
    refused(export, match, capsys)


def test_a_text_length_or_vocabulary_the_graph_cannot_take_is_refused_at_load(export, capsys):
    """A request's text can reach max_length tokens at the tokenizer's largest id: the graph must take that."""
    longer = json.loads((export / "onnx.json").read_text())["preprocessing"]["text"]["max_length"] * 2
    edit_json(export / "onnx.json", lambda s: s["preprocessing"]["text"].update(max_length=longer))
    refused(export, rf"onnx.json: the graph does not take the texts its preprocessing gives \({longer} tokens", capsys)


def test_a_graph_moved_in_from_another_export_is_refused(export, tmp_path, capsys):
    """Two exports of one method and shape give graphs that load alike: only the recorded hash tells them apart."""
    other = tmp_path / "other.onnx"
    graph = onnx.load(str(export / "model.onnx"))
    graph.doc_string = "another export"  # a different file that still loads and fits
    onnx.save(graph, str(other))
    shutil.copy(other, export / "model.onnx")
    refused(export, "model.onnx: not the graph this folder's onnx.json was exported with", capsys)


def test_onnx_json_that_is_not_json_is_named(export, capsys):
    (export / "onnx.json").write_bytes(b"{\xff")
    refused(export, "onnx.json: not valid UTF-8", capsys)


@pytest.mark.parametrize(("content", "match"), [(None, "is not a file in"), (b"{garbage", "not a readable tokenizer")])
def test_a_tokenizer_file_that_is_missing_or_garbage_is_named(export, content, match, capsys):
    text = {"kind": "tokenizers", "file": "tokenizer/tokenizer.json", "max_length": 16}
    edit_json(export / "onnx.json", lambda s: s["preprocessing"].update(text=text))
    if content is not None:
        (export / "tokenizer").mkdir()
        (export / "tokenizer" / "tokenizer.json").write_bytes(content)
    refused(export, match, capsys)


def test_a_graph_whose_outputs_do_not_fit_the_labels_is_refused(export, capsys):
    """A 5-output graph in a 4-label export would silently drop a class: refused at load."""
    labels = json.loads((export / "config.json").read_text())["labels"]["labels"]
    edit_json(
        export / "config.json",
        lambda c: (c["labels"].update(labels=labels[:-1]), c["method"].update(num_classes=len(labels) - 1)),
    )
    refused(
        export, rf"gives outputs of shapes \[\['batch', {len(labels)}\]\], not one \(batch, {len(labels) - 1}\)", capsys
    )


@pytest.mark.parametrize("outputs", [5, "4", 10**30, True])
def test_a_config_json_whose_method_does_not_fit_its_labels_is_refused_on_the_onnx_runtime_too(export, outputs, capsys):
    edit_json(export / "config.json", lambda c: c["method"].update(num_classes=outputs))
    refused(export, r"config.json: the labels \(single_label, 4\) do not fit the model", capsys)


def test_a_graph_that_takes_other_inputs_than_onnx_json_lists_is_refused(export, capsys):
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3]) for n in ("pixel_values", "other")]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Add", ["pixel_values", "other"], ["logits"])], "g", inputs, [output])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), export / "model.onnx")
    edit_json(export / "onnx.json", lambda s: s["sha256"].update({"model.onnx": sha256_of(export / "model.onnx")}))
    refused(export, "takes inputs \\['other', 'pixel_values'\\], but onnx.json lists", capsys)


def test_a_damaged_config_json_is_named_on_the_onnx_runtime_too(export, capsys):
    edit_json(export / "config.json", lambda c: c["labels"].update(task="ranking"))
    refused(export, "config.json: labels.task: input should be", capsys)


def test_a_killed_exports_staging_folder_is_removed_by_the_next_export(tiny_run, tmp_path):
    left = tmp_path / ".model.partial"  # what kill -9 during an export leaves beside --out
    left.mkdir()
    (left / "model.safetensors").write_bytes(b"half")
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "model")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_export_interrupted_leaves_nothing_behind(tiny_run, tmp_path, monkeypatch, capsys):
    import mitp.onnx_export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mitp.onnx_export, "export_onnx", interrupted)
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "model"), "--onnx"]) == 130
    assert list(tmp_path.iterdir()) == []
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s["preprocessing"]["text"].update(bos_token_id=10**30), "bos_token_id: input should be less than"),
        (lambda s: s["preprocessing"].update(pad_token_id=10**30), "pad_token_id: input should be less than"),
        (lambda s: s["preprocessing"]["text"].update(max_length=1), "leaves no room for a word"),
        (
            lambda s: s["preprocessing"]["text"].update(max_length=10**9),
            "max_length: input should be less than or equal to 65536",
        ),
        (lambda s: s["preprocessing"]["text"].update(bos_token_id=5000), "must be below vocab_size"),
        (lambda s: s["preprocessing"]["image"].update(crop=[64, 64]), "images must come out at a fixed size"),
        (lambda s: s["preprocessing"].update(empty_text=[]), "empty_text: list should have at least 1 item"),
        (lambda s: s["preprocessing"]["image"].update(mean=[float("inf"), 0, 0]), "input should be a finite number"),
        (lambda s: s["preprocessing"]["image"].update(rescale_factor=float("nan")), "input should be a finite number"),
        (lambda s: s["preprocessing"]["text"].update(vocab_size=100000), "does not run on the preprocessing"),
    ],
    ids=[
        "bos-huge",
        "pad-huge",
        "max-length",
        "max-length-huge",
        "bos-outside-vocab",
        "crop",
        "empty-text",
        "mean-inf",
        "rescale-nan",
        "vocab-larger-than-graph",
    ],  # fmt: skip
)
def test_preprocessing_that_disagrees_with_itself_or_the_graph_is_refused_at_load(export, change, match, capsys):
    edit_json(export / "onnx.json", change)
    refused(export, match, capsys)


def test_config_json_cannot_be_read_from_outside_the_folder(export, tmp_path, capsys):
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes((export / "config.json").read_bytes())
    (export / "config.json").unlink()
    (export / "config.json").symlink_to(outside)
    refused(export, "'config.json' lies outside the model folder", capsys)
    with pytest.raises(CheckpointError, match="lies outside the model folder"):
        Classifier.from_pretrained(export)
