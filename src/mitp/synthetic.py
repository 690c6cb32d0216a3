"""Generated image-text batches for a task that needs both modalities.

The label is ``2 * image_bit + text_bit``: the image bit is which colour channel is
brightened, the text bit is which of two small word sets the text is drawn from. Neither
modality alone can do better than 50% accuracy, so a falling loss means fusion works.
"""

from __future__ import annotations

import torch

from .backbones import Backbone

NUM_CLASSES = 4
WORDS_PER_BIT = 4


def toy_batch(backbone: Backbone, batch_size: int, seq_len: int = 12,
              generator: torch.Generator | None = None) -> dict:
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
