"""Fashion-Cues: built from tiny generated idx files; captions carry the group only, images are degraded."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mitp.app.cli import main
from mitp.data.fashion_mnist import FASHION_MNIST_CLASSES
from mitp.data.manifest import SPLITS, read_labels, read_split
from mitp.data.prepare.fashion_cues import (
    GROUP_OF_CLASS,
    GROUPS,
    TEMPLATES,
    caption,
    convert_fashion_cues,
    degrade,
    text_only_ceiling,
)
from test_fashion_ve import make_raw

SIZES = dict(train_size=40, val_size=20, test_size=20)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw-cues")
    make_raw(raw)
    out = tmp_path_factory.mktemp("cues")
    conv = convert_fashion_cues(raw, out, **SIZES, image_size=32, pixelate=4, noise=30.0)
    return raw, out, conv


def test_classes_are_balanced_and_captions_name_only_the_group(built):
    _, out, _ = built
    labels = read_labels(out)
    assert labels.labels == FASHION_MNIST_CLASSES
    for split, n in zip(SPLITS, SIZES.values()):
        samples, _ = read_split(out, split)
        assert len(samples) == n and set(Counter(s.label for s in samples).values()) == {n // 10}
        for s in samples:
            group = GROUP_OF_CLASS[FASHION_MNIST_CLASSES.index(s.label)]
            assert any(s.text == t.format(g=phrase) for t in TEMPLATES for phrase in GROUPS[group]), s.text


def test_every_caption_of_a_group_is_shared_by_its_classes(built):
    """The text says nothing beyond the group: each caption occurs with several classes of its group."""
    _, out, _ = built
    samples = [s for split in SPLITS for s in read_split(out, split)[0]]
    texts = {caption(c, t, p) for c in range(10) for t in range(len(TEMPLATES)) for p in range(3)}
    assert {s.text for s in samples} <= texts
    for c in range(10):
        same_group = [d for d in range(10) if GROUP_OF_CLASS[d] == GROUP_OF_CLASS[c]]
        assert all(
            caption(c, t, p) == caption(d, t, p) for d in same_group for t in range(len(TEMPLATES)) for p in range(3)
        )
    assert text_only_ceiling() == pytest.approx(0.4)


def test_images_are_the_photo_pixelated_and_noisy_and_the_build_is_deterministic(built, tmp_path):
    raw, out, _ = built
    image = np.asarray(Image.open(out / "images" / "train" / "train-00000.png"))
    assert image.shape == (32, 32)
    photo = np.tile(np.arange(28, dtype=np.uint8)[None] * 9, (28, 1))
    clean = np.asarray(degrade(photo, 4, 0.0, 28, np.random.default_rng(0)), dtype=float)
    assert len(np.unique(clean[:, ::7].round())) <= 8, "pixelated: few distinct levels left"
    noisy = np.asarray(degrade(photo, 4, 30.0, 28, np.random.default_rng(0)), dtype=float)
    assert 20 < np.std(noisy - clean) < 40
    again = tmp_path / "again"
    convert_fashion_cues(raw, again, **SIZES, image_size=32, pixelate=4, noise=30.0)
    for split in SPLITS:
        assert (again / f"{split}.jsonl").read_bytes() == (out / f"{split}.jsonl").read_bytes()
    assert (again / "images/test/test-00003.png").read_bytes() == (out / "images/test/test-00003.png").read_bytes()


def test_the_cli_builds_it_and_refuses_bad_settings(built, tmp_path, capsys):
    raw, _, _ = built
    assert (
        main(
            [
                "prepare",
                "fashion-cues",
                "--raw",
                str(raw),
                "--out",
                str(tmp_path / "c"),
                "--train-size",
                "20",
                "--val-size",
                "10",
                "--test-size",
                "10",
                "--image-size",
                "28",
            ]
        )
        == 0
    )
    assert main(["check", str(tmp_path / "c")]) == 0
    assert main(["prepare", "fashion-cues", "--raw", str(raw), "--out", str(tmp_path / "d"), "--pixelate", "1"]) == 2
    assert "--pixelate" in capsys.readouterr().err
