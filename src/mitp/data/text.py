"""Text to token ids: the backbone's own Hugging Face tokenizer, or a hashing fallback.

:class:`HashTokenizer` is only for the in-process random backbones (``tiny-clip``,
``tiny-pair``) that have no tokenizer: it lowercases, splits into words and
punctuation, and maps each token to ``5 + crc32(token) % (vocab_size - 8)`` -- an id
in ``[5, vocab_size - 3)``, stable across processes and Python versions -- then adds
the backbone's start/end ids where it has them and truncates to ``max_length``.
It carries no linguistic knowledge; never use it for real experiments.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class HashTokenizer:
    """Deterministic word-hash tokenizer for tiny random models (tests, CI)."""

    vocab_size: int
    max_length: int
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int = 0

    def __post_init__(self):
        if self.vocab_size < 9:
            raise ValueError(f"HashTokenizer needs vocab_size >= 9, got {self.vocab_size}")
        specials = (self.bos_token_id is not None) + (self.eos_token_id is not None)
        if self.max_length < specials + 1:
            raise ValueError(f"max_length {self.max_length} leaves no room for a word")

    def token_id(self, token: str) -> int:
        return 5 + zlib.crc32(token.encode("utf-8")) % (self.vocab_size - 8)

    def __call__(self, text: str) -> list[int]:
        # An empty text (a missing modality) is the special tokens only, as a real tokenizer gives it.
        tokens = (_TOKEN.findall(text.lower()) or [text.strip().lower()]) if text.strip() else []
        if not tokens and self.bos_token_id is None and self.eos_token_id is None:
            tokens = [""]  # a tower with no special tokens still needs one position
        room = self.max_length - (self.bos_token_id is not None) - (self.eos_token_id is not None)
        ids = [self.token_id(t) for t in tokens[:room]]
        if self.bos_token_id is not None:
            ids.insert(0, self.bos_token_id)
        if self.eos_token_id is not None:
            ids.append(self.eos_token_id)
        return ids


class HFTokenizer:
    """A Hugging Face tokenizer with truncation to ``max_length`` (special tokens kept)."""

    def __init__(self, source: str, max_length: int, pad_token_id: int | None = None):
        # Tokenizing happens in DataLoader workers (forked); the Rust thread pool must not be
        # used before the fork, and a per-worker single thread is what we want anyway.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as err:  # missing files, no hub access, ...
            hint = "" if os.path.isdir(source) else " (no hub access? pass a local checkpoint directory)"
            raise ValueError(f"could not load the tokenizer of {source!r}{hint}: {err}") from err
        self.source = source
        self.max_length = max_length
        tok_pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(tok_pad if tok_pad is not None else (pad_token_id or 0))

    def __call__(self, text: str) -> list[int]:
        return list(self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"])


__all__ = ["HFTokenizer", "HashTokenizer"]
