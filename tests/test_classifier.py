"""The Python API: Classifier.from_pretrained on a run or an export, predict, save_pretrained, mitp export."""

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from mitp import Classifier
from mitp.app.cli import main
from mitp.files import CheckpointError
from mitp.inputs import InputError
from mitp.runs import Run

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"


def test_what_from_pretrained_returns_is_a_classifier(tiny_run):
    from mitp.torch_runtime import TorchClassifier

    clf = Classifier.from_pretrained(tiny_run)
    assert isinstance(clf, Classifier) and isinstance(clf, TorchClassifier) and clf.method == "mitp"


def test_predict_takes_paths_pil_images_and_bytes_and_matches_mitp_predict(tiny_run, toy_dataset, capsys):
    clf = Classifier.from_pretrained(tiny_run)
    path = toy_dataset / "images" / "test-0003.png"
    as_pil, as_bytes = Image.open(path), path.read_bytes()
    rows = clf.predict(images=[str(path), as_pil, as_bytes], texts=["apple amber"] * 3, top_k=2)
    assert rows[0] == rows[1] == rows[2] and len(rows[0]) == 2
    assert {p["label"] for p in rows[0]} <= set(clf.labels.labels)
    capsys.readouterr()
    assert main(["predict", str(tiny_run), "--image", str(path), "--text", "apple amber", "--top-k", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"] == rows[0]


def test_batches_give_the_same_scores_as_single_pairs(tiny_run, toy_dataset):
    clf = Classifier.from_pretrained(tiny_run)
    images = [toy_dataset / "images" / f"test-{i:04d}.png" for i in range(5)]
    texts = ["apple amber", "berry", "cherry crimson", "date", "elder"]
    together = clf.predict(images, texts, top_k=4, batch_size=2)
    alone = [clf.predict([image], [text], top_k=4)[0] for image, text in zip(images, texts)]
    for a, b in zip(together, alone):
        assert [p["label"] for p in a] == [p["label"] for p in b]
        assert [p["score"] for p in a] == pytest.approx([p["score"] for p in b], abs=1e-5)


@pytest.mark.parametrize(
    "images, texts, field",
    [
        ([b"not an image"], ["x"], "images[0]"),
        (["/no/such/file.png"], ["x"], "images[0]"),
        ([3], ["x"], "images[0]"),
        ([None, None], ["x"], "texts"),
    ],
)
def test_bad_inputs_are_named(tiny_run, images, texts, field):
    clf = Classifier.from_pretrained(tiny_run)
    with pytest.raises(InputError) as err:
        clf.predict(images=images, texts=texts)
    assert err.value.field == field


def test_an_empty_text_is_named(tiny_run, toy_dataset):
    clf = Classifier.from_pretrained(tiny_run)
    with pytest.raises(InputError, match=r"texts\[1\]: empty text"):
        clf.predict([toy_dataset / "images" / "test-0000.png"] * 2, ["ok", "  "])


def test_export_round_trips_and_writes_a_model_card(tiny_run, toy_dataset, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["method"]["method"] == "mitp" and config["backbone"]["spec"] == "tiny-clip"
    assert config["labels"]["labels"] == json.loads((toy_dataset / "labels.json").read_text())["labels"]
    results = json.loads((tiny_run / "results.json").read_text())
    card = (out / "README.md").read_text()
    for needed in (
        f"{results['test']['accuracy']:.4f}",
        f"{results['trainable_params']:,}",
        "mitp train",
        "## Limitations",
        "from mitp import Classifier",
    ):
        assert needed in card, needed
    images, texts = [toy_dataset / "images" / "test-0001.png"], ["berry"]
    exported = Classifier.from_pretrained(out).predict(images, texts)
    assert exported == Classifier.from_pretrained(tiny_run).predict(images, texts)
    assert main(["export", str(tiny_run), "--out", str(out)]) == 2  # not empty: refused


def test_loading_onto_a_backbone_of_other_shapes_is_a_named_error(tiny_run, tmp_path):
    out = Classifier.from_pretrained(tiny_run).save_pretrained(tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    config["backbone"]["spec"] = "tiny-pair"  # other widths than the tiny-clip it was trained on
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="trained on backbone 'tiny-pair'.*differing: text_embed_dim"):
        Classifier.from_pretrained(out)
    with pytest.raises(CheckpointError, match="neither a model folder"):
        Classifier.from_pretrained(tmp_path)


def test_save_pretrained_writes_no_pickle(tiny_run, tmp_path):
    out = Classifier.from_pretrained(tiny_run).save_pretrained(tmp_path / "e")
    assert (out / "model.safetensors").read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle stream
    buffer = io.BytesIO((out / "model.safetensors").read_bytes())
    assert json.loads(buffer.read(8 + int.from_bytes((out / "model.safetensors").read_bytes()[:8], "little"))[8:])


def test_the_card_of_a_run_exported_before_it_finished_says_so(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    best = Run(run).checkpoint("best") / "config.json"
    config = json.loads(best.read_text())
    config["results"] = None
    config["preprocessing"]["max_text_length"] = None
    best.write_text(json.dumps(config))
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    card = (tmp_path / "export" / "README.md").read_text()
    assert "not recorded (the run had not finished: its best checkpoint so far)" in card
    assert "text up to the text tower's limit" in card and "best epoch -" not in card


@pytest.mark.parametrize(
    "call, match",
    [
        ({"texts": "berry"}, "texts: expected a list with one entry per sample, got one str"),
        ({"images": "x.png"}, "images: expected a list with one entry per sample, got one str"),
        ({"images": Image.new("RGB", (8, 8))}, "images: expected a list with one entry per sample, got one Image"),
        ({"texts": ["berry"], "batch_size": 0}, "batch_size: must be >= 1, got 0"),
    ],
)
def test_one_sample_given_bare_or_a_batch_size_of_zero_is_a_named_input_error(tiny_run, call, match):
    with pytest.raises(InputError, match=match):
        Classifier.from_pretrained(tiny_run).predict(**call)
