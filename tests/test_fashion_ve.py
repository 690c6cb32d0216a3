"""Fashion-VE: the dataset builder on tiny generated idx files, its CLI, and late fusion's unimodal switch."""

from __future__ import annotations

import gzip
import json
import re
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mitp.app.cli import main
from mitp.backbones import build_backbone
from mitp.data.errors import BadRecord, MissingFile, UnknownLabel
from mitp.data.fashion_mnist import FASHION_MNIST_CLASSES, read_idx
from mitp.data.manifest import SPLITS, read_labels, read_split
from mitp.data.prepare.fashion_ve import (
    FASHION_VE_LABELS,
    HELD_OUT_TEMPLATES,
    META_FILE,
    SEEN_TEMPLATES,
    SIDES,
    SYNONYMS,
    TEMPLATES,
    convert_fashion_ve,
    cover_block,
    layout,
    sentence,
)
from mitp.methods import ConfigError, build_model, make_config

SIZES = dict(train_size=60, val_size=30, test_size=30)  # 20 / 10 / 10 per label: even, so exactly balanced
IMAGE_SIZE = 32
N_CLASSES = len(FASHION_MNIST_CLASSES)


# --- tiny raw Fashion-MNIST in idx format --------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def make_raw(raw: Path, per_class=(15, 6), side: int = 8, seed: int = 0) -> dict:
    """Random 8x8 "photos", ``per_class`` of each class in train / t10k; train gzipped, t10k plain."""
    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True, exist_ok=True)
    data = {}
    for name, n, suffix in (("train", per_class[0], ".gz"), ("t10k", per_class[1], "")):
        labels = rng.permutation(np.repeat(np.arange(N_CLASSES), n)).astype(np.uint8)
        images = rng.integers(0, 256, (len(labels), side, side), dtype=np.uint8)
        write_idx(raw / f"{name}-images-idx3-ubyte{suffix}", images)
        write_idx(raw / f"{name}-labels-idx1-ubyte{suffix}", labels)
        data[name] = (images, labels)
    return data


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    path = tmp_path_factory.mktemp("fashion_mnist")
    return path, make_raw(path)


@pytest.fixture(scope="module")
def built(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "ve"
    conv = convert_fashion_ve(raw[0], out, image_size=IMAGE_SIZE, seed=0, **SIZES)
    return out, conv


def read_meta(out: Path) -> dict[str, list[dict]]:
    by_split = {s: [] for s in SPLITS}
    for line in (out / META_FILE).read_text(encoding="utf-8").splitlines():
        meta = json.loads(line)
        by_split[meta["split"]].append(meta)
    return by_split


def all_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# --- idx reader ----------------------------------------------------------------------------------------


def test_read_idx_plain_and_gz_and_errors(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        np.testing.assert_array_equal(read_idx(write_idx(tmp_path / name, array)), array)
    (tmp_path / "short").write_bytes(idx_bytes(array)[:-1])
    with pytest.raises(BadRecord, match="payload has 23 bytes"):
        read_idx(tmp_path / "short")
    (tmp_path / "notidx").write_bytes(b"\x1f\x8b\x08\x00" + bytes(20))
    with pytest.raises(BadRecord, match="not an idx file"):
        read_idx(tmp_path / "notidx")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(BadRecord, match="cannot read"):
        read_idx(tmp_path / "bad.gz")


# --- the dataset ---------------------------------------------------------------------------------------


def test_labels_classes_and_sides_balanced(built):
    out, conv = built
    assert read_labels(out).labels == FASHION_VE_LABELS
    assert conv.counts == {"train": 60, "val": 30, "test": 30}
    for split, metas in read_meta(out).items():
        k = len(metas) // 3
        samples = read_split(out, split)[0]
        assert Counter(s.label for s in samples) == {label: k for label in FASHION_VE_LABELS}
        assert Counter(m["named"] for m in metas) == {c: 3 * k // N_CLASSES for c in FASHION_MNIST_CLASSES}
        assert Counter(m["visible"] for m in metas) == {c: 3 * k // N_CLASSES for c in FASHION_MNIST_CLASSES}
        assert Counter(m["visible_side"] for m in metas) == {"left": 3 * k // 2, "right": 3 * k // 2}
    assert conv.warnings == []


def test_labels_follow_the_design_and_texts_match(built):
    out, _ = built
    for split, metas in read_meta(out).items():
        texts = {s.id: s.text for s in read_split(out, split)[0]}
        for m in metas:
            same_side = m["side"] == m["visible_side"]
            expected = "neutral" if not same_side else "entailment" if m["named"] == m["visible"] else "contradiction"
            assert m["label"] == expected, m
            garment, side = FASHION_MNIST_CLASSES.index(m["named"]), SIDES.index(m["side"])
            assert m["named_as"] in SYNONYMS[garment]
            assert texts[m["id"]] == sentence(m["template"], garment, SYNONYMS[garment].index(m["named_as"]), side)


def test_text_and_image_distributions_do_not_depend_on_the_label(built):
    """Each label has the same multiset of sentences and of visible (side, garment): no unimodal signal."""
    out, _ = built
    for split, metas in read_meta(out).items():
        texts = {s.id: s.text for s in read_split(out, split)[0]}
        by_label_text = {lab: Counter(texts[m["id"]] for m in metas if m["label"] == lab) for lab in FASHION_VE_LABELS}
        by_label_image = {
            lab: Counter((m["visible_side"], m["visible"]) for m in metas if m["label"] == lab)
            for lab in FASHION_VE_LABELS
        }
        assert by_label_text["entailment"] == by_label_text["neutral"] == by_label_text["contradiction"]
        assert by_label_image["entailment"] == by_label_image["neutral"] == by_label_image["contradiction"]
        # and so every (template, side) combination that occurs occurs under every label
        combos = {lab: {(m["template"], m["side"]) for m in metas if m["label"] == lab} for lab in FASHION_VE_LABELS}
        assert combos["entailment"] == combos["neutral"] == combos["contradiction"]


def test_images_show_the_photo_on_the_visible_side_and_the_cover_on_the_other(built, raw):
    out, _ = built
    slot, xs, y = layout(IMAGE_SIZE)
    source = {"train": raw[1]["train"][0], "t10k": raw[1]["t10k"][0]}
    for split, metas in read_meta(out).items():
        paths = {s.id: s.image_path() for s in read_split(out, split)[0]}
        for m in metas[:10]:
            img = np.asarray(Image.open(paths[m["id"]]))
            assert img.shape == (IMAGE_SIZE, IMAGE_SIZE)
            visible, covered = SIDES.index(m["visible_side"]), 1 - SIDES.index(m["visible_side"])
            np.testing.assert_array_equal(img[y : y + slot, xs[covered] : xs[covered] + slot], cover_block(slot))
            name, index = re.fullmatch(r"(\w+)\[(\d+)\]", m["source"]).groups()
            assert name == ("t10k" if split == "test" else "train")
            photo = np.asarray(Image.fromarray(source[name][int(index)]).resize((slot, slot), Image.Resampling.BICUBIC))
            np.testing.assert_array_equal(img[y : y + slot, xs[visible] : xs[visible] + slot], photo)
            assert FASHION_MNIST_CLASSES[raw[1][name][1][int(index)]] == m["visible"]


def test_photos_are_not_shared_between_splits(built):
    sources = {split: [m["source"] for m in metas] for split, metas in read_meta(built[0]).items()}
    assert all(len(set(v)) == len(v) for v in sources.values())  # no photo twice within a split
    assert not set(sources["train"]) & set(sources["val"])
    assert all(s.startswith("train[") for s in sources["train"] + sources["val"])
    assert all(s.startswith("t10k[") for s in sources["test"])


def test_held_out_templates_only_in_test(built):
    out, conv = built
    metas = read_meta(out)
    assert {m["template"] for m in metas["test"]} == set(HELD_OUT_TEMPLATES)
    for split in ("train", "val"):
        assert {m["template"] for m in metas[split]} <= set(SEEN_TEMPLATES)
    assert {m["template"] for m in metas["train"]} == set(SEEN_TEMPLATES)  # 20 slots cover all 14
    # On the texts themselves: no training sentence can be produced by a held-out template.
    held = [
        re.compile(
            re.escape(TEMPLATES[t]).replace(r"\{side\}", "(left|right)").replace(r"\{g\}", ".+").replace(r"\{G\}", ".+")
            + "$"
        )
        for t in HELD_OUT_TEMPLATES
    ]
    train_texts = [s.text for s in read_split(out, "train")[0]]
    test_texts = [s.text for s in read_split(out, "test")[0]]
    assert not any(p.match(t) for p in held for t in train_texts)
    assert all(any(p.match(t) for p in held) for t in test_texts)
    assert any("held-out templates" in note for note in conv.notes)


def test_same_seed_byte_identical_other_seed_differs(raw, built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    convert_fashion_ve(raw[0], again, image_size=IMAGE_SIZE, seed=0, **SIZES)
    first, second = all_bytes(out), all_bytes(again)
    assert sorted(first) == sorted(second) and first == second
    assert len([n for n in first if n.endswith(".png")]) == 120
    other = tmp_path / "other"
    convert_fashion_ve(raw[0], other, image_size=IMAGE_SIZE, seed=1, **SIZES)
    third = all_bytes(other)
    assert all(third[f"{s}.jsonl"] != first[f"{s}.jsonl"] for s in SPLITS)
    # a smaller rebuild into the same directory leaves no orphan images behind
    convert_fashion_ve(raw[0], other, image_size=IMAGE_SIZE, seed=1, train_size=30, val_size=30, test_size=30)
    assert len(list((other / "images" / "train").glob("*.png"))) == 30


def test_missing_or_bad_raw_files_are_named_errors(raw, tmp_path):
    src = raw[0]
    partial = tmp_path / "partial"
    partial.mkdir()
    for p in src.iterdir():
        if "t10k-labels" not in p.name:
            (partial / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    with pytest.raises(MissingFile, match="t10k-labels-idx1-ubyte") as err:
        convert_fashion_ve(partial, out, **SIZES)
    assert "apt-get install dataset-fashion-mnist" in str(err.value) and "--raw" in str(err.value)
    with pytest.raises(MissingFile, match="apt-get install dataset-fashion-mnist"):
        convert_fashion_ve(tmp_path / "nowhere", out, **SIZES)
    assert not out.exists()  # nothing written
    write_idx(partial / "t10k-labels-idx1-ubyte", np.zeros(59, np.uint8))  # 60 images
    with pytest.raises(BadRecord, match="59 labels for 60 images"):
        convert_fashion_ve(partial, out, **SIZES)
    write_idx(partial / "t10k-labels-idx1-ubyte", np.full(60, 10, np.uint8))
    with pytest.raises(UnknownLabel, match="label value 10"):
        convert_fashion_ve(partial, out, **SIZES)
    with pytest.raises(ValueError, match="multiple of 3"):
        convert_fashion_ve(src, out, train_size=10, val_size=30, test_size=30)
    with pytest.raises(ValueError, match="lower --test-size"):  # 6 photos per class in t10k
        convert_fashion_ve(src, out, train_size=30, val_size=30, test_size=300)
    assert not out.exists()


def test_cli_end_to_end(raw, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "prepare",
            "fashion-ve",
            "--raw",
            str(raw[0]),
            "--out",
            str(out),
            "--train-size",
            "60",
            "--val-size",
            "30",
            "--test-size",
            "30",
            "--image-size",
            "32",
            "--seed",
            "0",
            "--no-progress",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "fashion-ve" in text and "held-out templates" in text and "20 entailment / 20 neutral" in text
    assert read_split(out, "train")[0] and (out / META_FILE).is_file()
    assert main(["check", str(out)]) == 0
    capsys.readouterr()
    assert main(["prepare", "food101", "--raw", str(raw[0]), "--out", str(tmp_path / "x"), "--train-size", "3"]) == 2
    assert "unrecognized arguments: --train-size" in capsys.readouterr().err
    assert (
        main(["prepare", "fashion-ve", "--raw", str(raw[0]), "--out", str(tmp_path / "x"), "--val-fraction", "0.1"])
        == 2
    )
    assert main(["prepare", "fashion-ve", "--raw", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert "[missing_file]" in capsys.readouterr().err


# --- late fusion: one modality only ------------------------------------------------------------------

CLASSIFIER = {"head.classifier.weight", "head.classifier.bias"}


def head_names(*parts):
    return CLASSIFIER | {f"head.norms.{part}.{p}" for part in parts for p in ("weight", "bias")}


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("inputs", ["image", "text"])
def test_late_fusion_unimodal_ignores_the_other_modality(inputs, tiny_backbone):
    model = build_model(make_config("late_fusion", num_classes=3, inputs=inputs), tiny_backbone)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == head_names(inputs)
    width = (tiny_backbone.vision if inputs == "image" else tiny_backbone.text).embed_dim
    assert model.head.classifier.in_features == width
    a = tiny_backbone.random_batch(4, 10, torch.Generator().manual_seed(0))
    b = tiny_backbone.random_batch(4, 10, torch.Generator().manual_seed(1))
    other_text = dict(a, input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    other_image = dict(a, pixel_values=b["pixel_values"])
    base = _logits(model, a)
    same, changed = (other_text, other_image) if inputs == "image" else (other_image, other_text)
    torch.testing.assert_close(_logits(model, same), base, rtol=0, atol=0)
    assert not torch.allclose(_logits(model, changed), base)


def test_late_fusion_both_uses_both_and_bad_inputs_rejected(tiny_clip):
    model = build_model(make_config("late_fusion", num_classes=3), tiny_clip)
    assert model.config.inputs == "both"
    assert model.head.classifier.in_features == tiny_clip.vision.embed_dim + tiny_clip.text.embed_dim
    a = tiny_clip.random_batch(4, 10, torch.Generator().manual_seed(0))
    b = tiny_clip.random_batch(4, 10, torch.Generator().manual_seed(1))
    base = _logits(model, a)
    assert not torch.allclose(_logits(model, dict(a, pixel_values=b["pixel_values"])), base)
    assert not torch.allclose(
        _logits(model, dict(a, input_ids=b["input_ids"], attention_mask=b["attention_mask"])), base
    )
    with pytest.raises(ConfigError, match="inputs"):
        make_config("late_fusion", num_classes=3, inputs="audio")


def test_full_finetune_unimodal_trains_only_the_used_tower():
    backbone = build_backbone("tiny-clip")  # full_finetune flips requires_grad: a fresh backbone
    model = build_model(make_config("full_finetune", num_classes=3, inputs="image"), backbone)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert head_names("image") < trainable
    assert all(n in head_names("image") or n.startswith("backbone.vision.") for n in trainable)
    assert {n for n in trainable if n.startswith("backbone.vision.")} == {
        f"backbone.{n}" for n, _ in backbone.named_parameters() if n.startswith("vision.")
    }
    batch = backbone.random_batch(4, 10, torch.Generator().manual_seed(0))
    model.train()
    model(**batch, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable and "k_proj.bias" not in n)
    groups = {g["name"]: g["params"] for g in model.param_groups(1e-3)}
    assert len(groups["backbone"]) == sum(1 for n in trainable if n.startswith("backbone."))
