"""Fashion-VE: a visual-entailment dataset built from real Fashion-MNIST photographs.

Every image is a square black canvas with two slots side by side. One slot (the *visible*
side) holds a real Fashion-MNIST photo, upscaled; the other is *covered* by a checkerboard
block that is clearly not a garment. The hypothesis names a side and a garment
("There is a sneaker on the left."). Labels, as in SNLI-VE:

* entailment: the sentence names the visible side and the garment shown there;
* contradiction: the sentence names the visible side and a different garment;
* neutral: the sentence names the covered side (any garment): the image can neither
  confirm nor refute it.

Neither modality alone carries any information about the label (docs/fashion-ve.md):

* texts: one list of text slots (template, side, garment, synonym) is drawn per split and
  used **identically** under each of the three labels, so the multiset of sentences is the
  same under every label;
* images: the visible (side, garment) pairs of the three labels are made the same multiset
  (a within-side derangement of the garments for contradiction, the other side's pairs for
  neutral), exactly when ``size / 3`` is even; the photo instances are drawn at random
  regardless of the label.

Sentences come from :data:`TEMPLATES` with garment synonyms; the templates in
:data:`HELD_OUT_TEMPLATES` never occur in train or val and are the only ones in test.

Raw input: the four standard idx files (``train-images-idx3-ubyte[.gz]``,
``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``,
``t10k-labels-idx1-ubyte[.gz]``), by default from Debian's ``dataset-fashion-mnist`` package
(:data:`DEFAULT_RAW`). Fashion-MNIST's train photos feed our train and val splits (disjoint),
its t10k photos feed test. Output: the manifest plus ``images/<split>/<id>.png`` and
``fashion_ve_meta.jsonl`` (per sample: template, sides, garments, source photo).

Over 400 lines because the construction and the checks that keep it label-independent (the sentence
and image multisets per label) only make sense read together.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ...atomic import write_text_atomic
from ..fashion_mnist import DEFAULT_RAW, DEFAULT_SIZES, FASHION_MNIST_CLASSES, load_fashion_mnist, split_sizes
from ..manifest import SPLITS, LabelSpace, Record
from .common import Conversion, no_progress
from .registry import drawing_options, register_converter

FASHION_VE_LABELS = ("entailment", "neutral", "contradiction")
# Noun phrases (with article) a hypothesis may use for each class; every one occurs in every split.
SYNONYMS = (
    ("a T-shirt", "a tee", "a top"),
    ("a pair of trousers", "a pair of pants", "a pair of slacks"),
    ("a pullover", "a sweater", "a jumper"),
    ("a dress", "a frock", "a gown"),
    ("a coat", "a jacket", "an overcoat"),
    ("a sandal", "a strappy sandal", "an open-toed shoe"),
    ("a shirt", "a button-up shirt", "a blouse"),
    ("a sneaker", "a trainer", "a running shoe"),
    ("a bag", "a handbag", "a purse"),
    ("an ankle boot", "a boot", "a short boot"),
)
SIDES = ("left", "right")
# {g}: the garment's noun phrase, {G}: the same capitalised, {side}: left / right.
TEMPLATES = (
    "There is {g} on the {side}.",
    "On the {side} there is {g}.",
    "The {side} half shows {g}.",
    "{G} is pictured on the {side}.",
    "You can see {g} on the {side} side.",
    "The picture's {side} side contains {g}.",
    "{G} appears in the {side} half of the image.",
    "The item on the {side} is {g}.",
    "On the {side}-hand side we see {g}.",
    "The {side} panel holds {g}.",
    "Looking to the {side}, you find {g}.",
    "The {side} part of the photo shows {g}.",
    "{G} sits on the {side}.",
    "In the {side} half there is {g}.",
    "The {side} spot is taken by {g}.",
    "To the {side} is {g}.",
    "This image has {g} on its {side} side.",
    "The object shown on the {side} is {g}.",
)
# Fixed (not seed-dependent) so every build holds out the same phrasings: only in test.
HELD_OUT_TEMPLATES = (3, 8, 14, 16)
SEEN_TEMPLATES = tuple(i for i in range(len(TEMPLATES)) if i not in HELD_OUT_TEMPLATES)
DEFAULT_IMAGE_SIZE = 224
META_FILE = "fashion_ve_meta.jsonl"


# --- the composite image ------------------------------------------------------------------------


def layout(size: int) -> tuple[int, tuple[int, int], int]:
    """(slot side, (left x, right x), y) of the two square slots on a ``size`` x ``size`` canvas.

    Slots are 3/8 of the canvas, a small gap apart, centred: the outer margins (24 px at 224)
    stay clear of the 1/16 a 256 -> 224 centre crop removes on each side.
    """
    slot = round(size * 3 / 8)
    gap = max(2, round(size / 28))
    left = size // 2 - gap // 2 - slot
    return slot, (left, size - left - slot), (size - slot) // 2


def cover_block(slot: int) -> np.ndarray:
    """The covered slot: a 7 x 7 gray checkerboard, nothing like a garment."""
    cell = np.arange(slot) * 7 // slot
    return np.where((cell[:, None] + cell[None, :]) % 2 == 0, 150, 70).astype(np.uint8)


def composite(photo: np.ndarray, visible_side: int, size: int):
    """The grayscale PIL image: ``photo`` in the slot of ``visible_side`` (0 left, 1 right), the other covered."""
    from PIL import Image

    slot, xs, y = layout(size)
    canvas = Image.new("L", (size, size), 0)
    garment = Image.fromarray(np.ascontiguousarray(photo, dtype=np.uint8))
    garment = garment.resize((slot, slot), Image.Resampling.BICUBIC)
    canvas.paste(garment, (xs[visible_side], y))
    canvas.paste(Image.fromarray(cover_block(slot)), (xs[1 - visible_side], y))
    return canvas


def sentence(template: int, garment: int, synonym: int, side: int) -> str:
    phrase = SYNONYMS[garment][synonym]
    return TEMPLATES[template].format(g=phrase, G=phrase[0].upper() + phrase[1:], side=SIDES[side])


# --- sampling -------------------------------------------------------------------------------------


def _balanced(rng: np.random.Generator, n: int, values: int) -> np.ndarray:
    """``n`` values in ``range(values)``, each ``n // values`` or one more times (random extras), shuffled."""
    out = np.concatenate(
        [np.tile(np.arange(values), n // values), rng.choice(values, n % values, replace=False)]
    ).astype(np.int64)
    return rng.permutation(out)


def _text_slots(rng: np.random.Generator, k: int, templates: tuple[int, ...]) -> dict[str, np.ndarray]:
    """``k`` (side, garment, template, synonym) slots; sides and garments balanced jointly."""
    n_classes = len(FASHION_MNIST_CLASSES)
    # Garments balanced over the split; then, grouped by garment (in a random class order), sides
    # alternate from a random start: every garment is split evenly between the sides (one extra
    # for odd counts) and the sides' totals differ by at most one.
    rank = rng.permutation(n_classes)
    garments = np.sort(_balanced(rng, k, n_classes), kind="stable")
    garments = garments[np.argsort(rank[garments], kind="stable")]
    sides = (np.arange(k) + rng.integers(2)) % 2
    order = rng.permutation(k)
    sides, garments = sides[order], garments[order]
    template = np.asarray(templates)[_balanced(rng, k, len(templates))]
    synonym = np.array([rng.integers(len(SYNONYMS[g])) for g in garments], dtype=np.int64)
    return {"side": sides, "garment": garments, "template": template, "synonym": synonym}


def _derange(rng: np.random.Generator, classes: np.ndarray) -> np.ndarray:
    """A random rearrangement of ``classes`` with no element left in place where the multiset allows.

    Where it does not (fewer than two distinct classes), the remaining fixed points get a random
    other class instead, which changes the multiset; never the case for balanced garments.
    """
    n_classes = len(FASHION_MNIST_CLASSES)
    out = rng.permutation(classes)
    for i in range(len(classes)):
        if out[i] != classes[i]:
            continue
        for j in rng.permutation(len(classes)):
            if out[j] != classes[i] and out[i] != classes[j]:
                out[i], out[j] = out[j], out[i]
                break
        else:
            out[i] = (classes[i] + 1 + rng.integers(n_classes - 1)) % n_classes
    return out


def _visible(rng: np.random.Generator, label: str, text: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(visible side, visible garment) per text slot, for ``label``."""
    side, garment = text["side"], text["garment"]
    if label == "entailment":
        return side.copy(), garment.copy()
    if label == "contradiction":
        shown = garment.copy()
        for s in (0, 1):
            idx = np.flatnonzero(side == s)
            shown[idx] = _derange(rng, garment[idx])
        return side.copy(), shown
    # neutral: the named side is covered; the visible side shows the garments the other side's
    # slots name, so the visible (side, garment) pairs are those of entailment.
    shown = np.empty_like(garment)
    for s in (0, 1):
        idx, other = np.flatnonzero(side == s), garment[side == 1 - s]
        pool = rng.permutation(other)
        if len(pool) < len(idx):  # odd k: one extra, drawn from the other side's garments
            pool = np.concatenate([pool, rng.choice(other if len(other) else garment, len(idx) - len(pool))])
        shown[idx] = pool[: len(idx)]
    return 1 - side, shown


def _split_items(rng: np.random.Generator, size: int, templates: tuple[int, ...]) -> list[dict]:
    """``size`` items (size / 3 per label), shuffled; each without its photo yet."""
    k = size // 3
    text = _text_slots(rng, k, templates)
    items = []
    for label in FASHION_VE_LABELS:
        shown_side, shown = _visible(rng, label, text)
        for i in range(k):
            items.append(
                {
                    "label": label,
                    "side": int(text["side"][i]),
                    "garment": int(text["garment"][i]),
                    "template": int(text["template"][i]),
                    "synonym": int(text["synonym"][i]),
                    "visible_side": int(shown_side[i]),
                    "visible_garment": int(shown[i]),
                }
            )
    return [items[i] for i in rng.permutation(len(items))]


def _check_sizes(sizes: dict[str, int], image_size: int) -> None:
    for split in SPLITS:
        n = sizes[split]
        if isinstance(n, bool) or not isinstance(n, int) or n < 3 or n % 3:
            raise ValueError(f"--{split}-size must be a positive multiple of 3 (one third per label), got {n!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"--image-size must be an integer >= 32, got {image_size!r}")


# --- the converter --------------------------------------------------------------------------------


@register_converter(
    "fashion-ve",
    help="Fashion-VE: visual entailment built from Fashion-MNIST photos (docs/fashion-ve.md)",
    raw_help=f"the Fashion-MNIST idx files (default {DEFAULT_RAW})",
    raw_default=DEFAULT_RAW,
    options=(
        *drawing_options(
            DEFAULT_SIZES, DEFAULT_IMAGE_SIZE, "composite images", ", a multiple of 3 (6 for exact balance)"
        ),
    ),
)
def convert_fashion_ve(
    raw: str | os.PathLike | None,
    out: str | os.PathLike,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    track=no_progress,
) -> Conversion:
    """Build Fashion-VE from the Fashion-MNIST idx files in ``raw`` (default :data:`DEFAULT_RAW`) into ``out``.

    Deterministic: the same files, sizes, image size and seed give byte-identical manifests,
    images and metadata. Raises MissingFile (with how to get the files), BadRecord or
    UnknownLabel for the raw files, ValueError for bad sizes or too few photos.
    """
    sizes = split_sizes(train_size, val_size, test_size)
    _check_sizes(sizes, image_size)
    out = Path(out)
    source = load_fashion_mnist(raw)
    raw_dir = Path(raw if raw is not None else DEFAULT_RAW)

    items = {
        split: _split_items(
            np.random.default_rng([seed, i]), sizes[split], HELD_OUT_TEMPLATES if split == "test" else SEEN_TEMPLATES
        )
        for i, split in enumerate(SPLITS)
    }
    photos = _assign_photos(items, source, np.random.default_rng([seed, len(SPLITS)]))

    conv = Conversion("fashion-ve", space=LabelSpace("single_label", FASHION_VE_LABELS))
    meta_lines = []
    for split in SPLITS:
        width = max(5, len(str(sizes[split] - 1)))
        folder = out / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        source_name = "t10k" if split == "test" else "train"
        images = source["test" if split == "test" else "train"][0]
        for n, (item, index) in enumerate(
            track(list(zip(items[split], photos[split])), description=f"writing {split} images")
        ):
            sample_id = f"{split}-{n:0{width}d}"
            name = f"{sample_id}.png"
            composite(images[index], item["visible_side"], image_size).save(folder / name, format="PNG")
            text = sentence(item["template"], item["garment"], item["synonym"], item["side"])
            conv.splits[split].append(Record(sample_id, f"images/{split}/{name}", text, item["label"]))
            meta = {
                "id": sample_id,
                "split": split,
                "label": item["label"],
                "template": item["template"],
                "side": SIDES[item["side"]],
                "named": FASHION_MNIST_CLASSES[item["garment"]],
                "named_as": SYNONYMS[item["garment"]][item["synonym"]],
                "visible_side": SIDES[item["visible_side"]],
                "visible": FASHION_MNIST_CLASSES[item["visible_garment"]],
                "source": f"{source_name}[{int(index)}]",
            }
            meta_lines.append(json.dumps(meta, ensure_ascii=False, sort_keys=True) + "\n")

    _summarise(conv, items, sizes, image_size, seed, raw_dir)
    conv.write(out)
    write_text_atomic(out / META_FILE, "".join(sorted(meta_lines)))
    return conv


def _assign_photos(items: dict[str, list[dict]], source, rng: np.random.Generator) -> dict[str, list[int]]:
    """A distinct source photo of the visible garment for every item; train and val share no photo."""
    need = {split: Counter(item["visible_garment"] for item in items[split]) for split in SPLITS}
    pools: dict[str, dict[int, list[int]]] = {split: {} for split in SPLITS}
    for c, name in enumerate(FASHION_MNIST_CLASSES):
        train_idx = rng.permutation(np.flatnonzero(source["train"][1] == c))
        test_idx = rng.permutation(np.flatnonzero(source["test"][1] == c))
        n_train, n_val, n_test = need["train"][c], need["val"][c], need["test"][c]
        if n_train + n_val > len(train_idx):
            raise ValueError(
                f"Fashion-MNIST train has {len(train_idx):,} {name!r} photos but train + val need "
                f"{n_train + n_val:,}; lower --train-size / --val-size"
            )
        if n_test > len(test_idx):
            raise ValueError(
                f"Fashion-MNIST t10k has {len(test_idx):,} {name!r} photos but test needs {n_test:,}; lower --test-size"
            )
        pools["train"][c] = train_idx[:n_train].tolist()
        pools["val"][c] = train_idx[n_train : n_train + n_val].tolist()
        pools["test"][c] = test_idx[:n_test].tolist()
    out = {}
    for split in SPLITS:
        taken = {c: iter(pool) for c, pool in pools[split].items()}
        out[split] = [next(taken[item["visible_garment"]]) for item in items[split]]
    return out


def _range(counter: Counter, keys) -> str:
    values = [counter.get(k, 0) for k in keys]
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _summarise(conv: Conversion, items, sizes, image_size: int, seed: int, raw_dir: Path) -> None:
    n_classes = range(len(FASHION_MNIST_CLASSES))
    conv.notes.append(
        f"photos: Fashion-MNIST (MIT, Zalando Research) from {raw_dir}; its train photos feed "
        f"train and val (disjoint), its t10k photos feed test; seed {seed}"
    )
    slot, _, _ = layout(image_size)
    conv.notes.append(
        f"images: {image_size}x{image_size} grayscale PNGs under images/<split>/, two {slot}px slots "
        f"side by side, one photo and one checkerboard cover; per-sample details in {META_FILE}"
    )
    for split in SPLITS:
        its = items[split]
        labels = Counter(i["label"] for i in its)
        named = Counter(i["garment"] for i in its)
        shown = Counter(i["visible_garment"] for i in its)
        covered = Counter(SIDES[1 - i["visible_side"]] for i in its)
        templates = sorted({i["template"] for i in its})
        conv.notes.append(
            f"{split}: "
            + " / ".join(f"{labels[name]} {name}" for name in FASHION_VE_LABELS)
            + f"; garment named {_range(named, n_classes)} per class, shown {_range(shown, n_classes)} per class; "
            f"covered side left {covered['left']} / right {covered['right']}; {len(templates)} templates"
        )
        if (sizes[split] // 3) % 2:
            conv.warnings.append(
                f"{split}: size / 3 = {sizes[split] // 3} is odd, so the visible sides cannot be "
                "split evenly: images are label-independent only up to one sample per label "
                "(use a multiple of 6)"
            )
    held = "; ".join(f"#{t} {TEMPLATES[t]!r}" for t in HELD_OUT_TEMPLATES)
    conv.notes.append(f"held-out templates (test only, never in train or val): {held}")
    conv.notes.append(
        f"{len(SEEN_TEMPLATES)} templates in train and val, {len(HELD_OUT_TEMPLATES)} in test; "
        f"{sum(len(s) for s in SYNONYMS)} garment names for {len(SYNONYMS)} classes, all in every split"
    )
    conv.notes.append(
        "label-independent by construction: in every split each label has the same multiset of "
        "sentences and of visible (side, garment) pairs, so text-only and image-only models are at "
        "chance (1/3)"
    )


__all__ = [
    "DEFAULT_RAW",
    "DEFAULT_SIZES",
    "FASHION_MNIST_CLASSES",
    "FASHION_VE_LABELS",
    "HELD_OUT_TEMPLATES",
    "META_FILE",
    "SEEN_TEMPLATES",
    "SYNONYMS",
    "TEMPLATES",
    "composite",
    "convert_fashion_ve",
    "layout",
    "load_fashion_mnist",
    "sentence",
]
