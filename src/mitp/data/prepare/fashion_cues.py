"""Fashion-Cues: Fashion-MNIST classification where each modality carries part of the signal.

The label is the garment's Fashion-MNIST class (10 classes). The text is a catalogue line that
names only the garment's coarse group (:data:`GROUPS`: tops; dresses and trousers; shoes; bags),
never the class, so text alone can at best pick a class within the group (at most 0.40 with
balanced classes). The image is the real photo degraded on purpose: pixelated to ``--pixelate``
pixels a side, blurred back up and overlaid with Gaussian noise (``--noise``), so that image alone
confuses similar garments, within and across groups. Together they do better than either: the
text settles the group, the image what it can within it. docs/fashion-cues.md reports the
text-only, image-only and joint accuracies on the offline backbone.

It exists to measure robustness to missing modalities (`mitp robustness`): on Fashion-VE
neither modality alone is informative, so a missing one leaves chance; here each missing one
leaves a different, measured amount of signal.

Raw input: the Fashion-MNIST idx files, as for Fashion-VE (:func:`load_fashion_mnist`); its
train photos feed train and val (disjoint), its t10k photos feed test. Classes are balanced in
every split (up to one sample). Output: the manifest plus ``images/<split>/<id>.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..fashion_mnist import DEFAULT_RAW, DEFAULT_SIZES, FASHION_MNIST_CLASSES, load_fashion_mnist, split_sizes
from ..manifest import SPLITS, LabelSpace, Record
from .common import Conversion, no_progress
from .registry import drawing_options, option, register_converter

# Coarse group of each Fashion-MNIST class (index = class value) and how captions name it.
GROUP_OF_CLASS = (0, 1, 0, 1, 0, 2, 0, 2, 3, 2)
GROUPS = (
    ("tops", "upper-body wear", "our tops range"),
    ("dresses and trousers", "dresses & trousers", "the dresses-and-trousers rail"),
    ("shoes", "footwear", "the shoe department"),
    ("bags", "bags & carry-alls", "the bag section"),
)
TEMPLATES = (
    "Listed under {g}.",
    "A product from {g}.",
    "Category: {g}.",
    "You will find this in {g}.",
    "Catalogue section: {g}.",
    "Filed with {g}.",
    "This item belongs to {g}.",
    "Shelved among {g}.",
)
DEFAULT_IMAGE_SIZE = 112
DEFAULT_PIXELATE = 7
DEFAULT_NOISE = 60.0


def degrade(photo: np.ndarray, pixelate: int, noise: float, size: int, rng: np.random.Generator):
    """The degraded grayscale PIL image of a 28 x 28 photo: box-downsampled to ``pixelate`` px, bilinear
    back up to ``size`` px, plus Gaussian noise of std ``noise`` (0-255 scale), clipped."""
    from PIL import Image

    small = Image.fromarray(np.ascontiguousarray(photo, dtype=np.uint8)).resize(
        (pixelate, pixelate), Image.Resampling.BOX
    )
    big = np.asarray(small.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)
    noisy = big + rng.normal(0.0, noise, big.shape) if noise > 0 else big
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mode="L")


def caption(garment: int, template: int, phrase: int) -> str:
    return TEMPLATES[template].format(g=GROUPS[GROUP_OF_CLASS[garment]][phrase])


def _balanced_classes(rng: np.random.Generator, n: int) -> np.ndarray:
    k = len(FASHION_MNIST_CLASSES)
    return rng.permutation(np.concatenate([np.tile(np.arange(k), n // k), rng.choice(k, n % k, replace=False)]))


def _check(sizes: dict[str, int], image_size: int, pixelate: int, noise: float) -> None:
    for split in SPLITS:
        n = sizes[split]
        if isinstance(n, bool) or not isinstance(n, int) or n < len(FASHION_MNIST_CLASSES):
            raise ValueError(f"--{split}-size must be an integer >= {len(FASHION_MNIST_CLASSES)}, got {n!r}")
    if not isinstance(image_size, int) or image_size < 28:
        raise ValueError(f"--image-size must be an integer >= 28, got {image_size!r}")
    if not isinstance(pixelate, int) or not 2 <= pixelate <= 28:
        raise ValueError(f"--pixelate must be an integer in [2, 28], got {pixelate!r}")
    if not noise >= 0:
        raise ValueError(f"--noise must be >= 0, got {noise!r}")


@register_converter(
    "fashion-cues",
    help="Fashion-Cues: Fashion-MNIST classes from degraded photos and captions naming only the "
    "coarse group; each modality alone carries part of the label (docs/fashion-cues.md)",
    raw_help=f"the Fashion-MNIST idx files (default {DEFAULT_RAW})",
    raw_default=DEFAULT_RAW,
    options=(
        *drawing_options(DEFAULT_SIZES, DEFAULT_IMAGE_SIZE),
        option(
            "--pixelate",
            type=int,
            default=DEFAULT_PIXELATE,
            metavar="PX",
            help=f"photos are reduced to this many pixels a side first; default {DEFAULT_PIXELATE}",
        ),
        option(
            "--noise",
            type=float,
            default=DEFAULT_NOISE,
            metavar="STD",
            help=f"std of the Gaussian noise on the 0-255 scale; default {DEFAULT_NOISE:g}",
        ),
    ),
)
def convert_fashion_cues(
    raw: str | os.PathLike | None,
    out: str | os.PathLike,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    pixelate: int = DEFAULT_PIXELATE,
    noise: float = DEFAULT_NOISE,
    seed: int = 0,
    track=no_progress,
) -> Conversion:
    """Build Fashion-Cues from the Fashion-MNIST idx files in ``raw`` into ``out``; deterministic in its
    arguments. Raises MissingFile / BadRecord / UnknownLabel for the raw files, ValueError for bad sizes."""
    sizes = split_sizes(train_size, val_size, test_size)
    _check(sizes, image_size, pixelate, noise)
    out = Path(out)
    source = load_fashion_mnist(raw)
    rng = np.random.default_rng([seed, 1])
    classes = {split: _balanced_classes(rng, sizes[split]) for split in SPLITS}
    photos = {split: np.empty(sizes[split], dtype=np.int64) for split in SPLITS}
    for c, name in enumerate(FASHION_MNIST_CLASSES):
        train_pool = rng.permutation(np.flatnonzero(source["train"][1] == c))
        test_pool = rng.permutation(np.flatnonzero(source["test"][1] == c))
        n_train, n_val, n_test = ((classes[s] == c).sum() for s in SPLITS)
        if n_train + n_val > len(train_pool) or n_test > len(test_pool):
            raise ValueError(f"not enough {name!r} photos in Fashion-MNIST for these sizes; lower them")
        photos["train"][classes["train"] == c] = train_pool[:n_train]
        photos["val"][classes["val"] == c] = train_pool[n_train : n_train + n_val]
        photos["test"][classes["test"] == c] = test_pool[:n_test]

    conv = Conversion("fashion-cues", space=LabelSpace("single_label", FASHION_MNIST_CLASSES))
    for i, split in enumerate(SPLITS):
        noise_rng = np.random.default_rng([seed, 2, i])
        text_rng = np.random.default_rng([seed, 3, i])
        folder = out / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        images = source["test" if split == "test" else "train"][0]
        width = max(5, len(str(sizes[split] - 1)))
        for n, (garment, index) in enumerate(
            track(list(zip(classes[split].tolist(), photos[split].tolist())), description=f"writing {split} images")
        ):
            sample_id = f"{split}-{n:0{width}d}"
            degrade(images[index], pixelate, noise, image_size, noise_rng).save(folder / f"{sample_id}.png")
            text = caption(garment, int(text_rng.integers(len(TEMPLATES))), int(text_rng.integers(3)))
            conv.splits[split].append(
                Record(sample_id, f"images/{split}/{sample_id}.png", text, FASHION_MNIST_CLASSES[garment])
            )
    conv.notes.append(
        f"photos: Fashion-MNIST (MIT, Zalando Research) from {Path(raw or DEFAULT_RAW)}; train and val "
        f"from its train photos (disjoint), test from t10k; seed {seed}"
    )
    conv.notes.append(
        f"images: {image_size}px grayscale, pixelated to {pixelate}px and noise std {noise:g}; texts "
        f"name only the coarse group ({'; '.join(g[0] for g in GROUPS)}): text alone reaches at most "
        f"{text_only_ceiling():.2f}"
    )
    conv.write(out)
    return conv


def text_only_ceiling() -> float:
    """The best accuracy from the group alone with balanced classes: one class per group is right."""
    return len(GROUPS) / len(FASHION_MNIST_CLASSES)


__all__ = ["GROUPS", "GROUP_OF_CLASS", "TEMPLATES", "caption", "convert_fashion_cues", "degrade", "text_only_ceiling"]
