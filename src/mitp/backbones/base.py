"""The frozen two-tower backbone every method runs on, and the error for specs that cannot be built."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import MitpError
from .towers import Tower

BERT_LIKE = {"bert", "roberta", "xlm-roberta", "electra", "camembert"}
VIT_LIKE = {"vit", "dinov2"}


class BackboneError(MitpError):
    """A backbone spec that cannot be resolved or loaded."""


@dataclass(frozen=True)
class TextFormat:
    """What a caller needs to build valid token ids for the text tower without a tokenizer."""

    vocab_size: int
    max_length: int
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int


class Backbone(nn.Module):
    """A frozen (text tower, vision tower) pair.

    ``text_source`` / ``vision_source`` name where the tokenizer and image processor
    live (``None`` for in-process random models).
    """

    def __init__(
        self,
        spec: str,
        text: Tower,
        vision: Tower,
        text_format: TextFormat,
        image_size: int,
        text_source: str | None = None,
        vision_source: str | None = None,
    ):
        super().__init__()
        self.spec = spec
        self.text = text
        self.vision = vision
        self.text_format = text_format
        self.image_size = image_size
        self.text_source = text_source
        self.vision_source = vision_source
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        # Frozen encoders always run in eval mode (no dropout), whatever the caller asks.
        return super().train(False)

    def shapes(self) -> dict:
        """The shapes a checkpoint depends on, for compatibility checks and reports."""
        return {
            "text_width": self.text.width,
            "text_layers": self.text.num_layers,
            "text_embed_dim": self.text.embed_dim,
            "vision_width": self.vision.width,
            "vision_layers": self.vision.num_layers,
            "vision_embed_dim": self.vision.embed_dim,
        }

    def random_batch(self, batch_size: int, seq_len: int = 16, generator: torch.Generator | None = None) -> dict:
        """Random but well-formed inputs: padded token ids with an end token, and pixels."""
        fmt = self.text_format
        seq_len = min(seq_len, fmt.max_length)
        low = 5
        high = fmt.vocab_size - 3
        ids = torch.randint(low, high, (batch_size, seq_len), generator=generator)
        lengths = torch.randint(3, seq_len + 1, (batch_size,), generator=generator)
        lengths[0] = seq_len  # at least one unpadded row
        mask = torch.arange(seq_len)[None, :] < lengths[:, None]
        if fmt.bos_token_id is not None:
            ids[:, 0] = fmt.bos_token_id
        if fmt.eos_token_id is not None:
            ids[torch.arange(batch_size), lengths - 1] = fmt.eos_token_id
        ids = ids.masked_fill(~mask, fmt.pad_token_id)
        pixels = torch.randn(batch_size, 3, self.image_size, self.image_size, generator=generator)
        return {"input_ids": ids, "attention_mask": mask.long(), "pixel_values": pixels}


@contextlib.contextmanager
def random_init(device):
    """Build in-process models on ``device`` with a fixed seed, so a spec always means the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            yield
