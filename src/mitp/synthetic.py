"""Generated image-text batches for a task that needs both modalities.

The label is ``2 * image_bit + text_bit``: the image bit is which colour channel is
brightened, the text bit is which of two small word sets the text is drawn from. Neither
modality alone can do better than 50% accuracy, so a falling loss means fusion works.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from .backbones import Backbone
from .data.manifest import LabelSpace, Record, write_manifest

NUM_CLASSES = 4
WORDS_PER_BIT = 4


def toy_batch(backbone: Backbone, batch_size: int, seq_len: int = 12, generator: torch.Generator | None = None) -> dict:
    batch = backbone.random_batch(batch_size, seq_len, generator)
    image_bit = torch.randint(0, 2, (batch_size,), generator=generator)
    text_bit = torch.randint(0, 2, (batch_size,), generator=generator)

    pixels = batch["pixel_values"] * 0.5
    pixels[torch.arange(batch_size), image_bit] += 1.5
    batch["pixel_values"] = pixels

    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    fmt = backbone.text_format
    # Two disjoint sets of WORDS_PER_BIT token ids; a small set keeps the signal visible
    # through a randomly initialised text tower.
    words = torch.randint(0, WORDS_PER_BIT, ids.shape, generator=generator) + 5 + text_bit[:, None] * WORDS_PER_BIT
    special = torch.zeros_like(mask)
    special[:, 0] = fmt.bos_token_id is not None
    lengths = mask.sum(1)
    if fmt.eos_token_id is not None:
        special[torch.arange(batch_size), lengths - 1] = True
    batch["input_ids"] = torch.where(mask & ~special, words, ids)
    batch["labels"] = 2 * image_bit + text_bit
    return batch


# --- a generated dataset on disk, in the manifest format --------------------------------------

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60)}
WORD_SETS = {"alpha": ["apple", "amber", "arch", "atlas"], "beta": ["berry", "bronze", "bridge", "basin"]}


def write_toy_dataset(
    out_dir, sizes: tuple[int, int, int] = (64, 32, 32), seed: int = 0, task: str = "single_label", image_size: int = 32
):
    """Write a small prepared dataset whose label needs both the image colour and the text's words.

    single_label: 4 classes ``<colour>-<wordset>``; multi_label: labels {red, green, alpha, beta},
    each sample carries its colour and its word set. Returns the directory.
    """
    from PIL import Image

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    splits = {}
    for split, count in zip(("train", "val", "test"), sizes):
        records = []
        for i in range(count):
            colour, words = rng.choice(sorted(COLOURS)), rng.choice(sorted(WORD_SETS))
            pixels = bytes(
                max(0, min(255, c + rng.randint(-40, 40)))
                for _ in range(image_size * image_size)
                for c in COLOURS[colour]
            )
            name = f"images/{split}-{i:04d}.png"
            Image.frombytes("RGB", (image_size, image_size), pixels).save(out / name)
            text = " ".join(rng.choice(WORD_SETS[words]) for _ in range(rng.randint(3, 8)))
            label = (colour, words) if task == "multi_label" else f"{colour}-{words}"
            records.append(Record(f"{split}-{i:04d}", name, text, label))
        splits[split] = records
    if task == "multi_label":
        labels = LabelSpace("multi_label", (*sorted(COLOURS), *sorted(WORD_SETS)))
    else:
        labels = LabelSpace("single_label", tuple(f"{c}-{w}" for c in sorted(COLOURS) for w in sorted(WORD_SETS)))
    write_manifest(out, splits, labels)
    return out
