"""The worker process of `mitp bench inference`: one runtime, loaded as a deployment loads it.

Kept out of the ``bench`` package, whose imports bring torch: a spawned worker imports this
module only, so the onnxruntime workers' memory and load time are those of a process without torch.
"""

from __future__ import annotations

import sys
import time

from .procmem import peak_rss_mb, reset_peak_rss, rss_mb
from .workers import serve_requests


def time_logits(conn, folder: str, runtime: str, threads: int, batch_sizes: tuple[int, ...], seq_len: int) -> None:
    """Load ``folder`` on ``runtime`` (torch, onnx or onnx-int8), prepare one batch per size (one image and
    one text repeated), report the load, then answer ``(size, calls)`` requests with the wall time of each
    ``logits`` call."""
    serve_requests(conn, lambda: _load(folder, runtime, threads, batch_sizes, seq_len))


def _load(folder: str, runtime: str, threads: int, batch_sizes: tuple[int, ...], seq_len: int) -> tuple:
    from PIL import Image

    started = time.perf_counter()
    # Imported inside the timed load, and only the runtime asked for: an onnx worker must never load torch.
    if runtime == "torch":
        import torch

        torch.set_num_threads(threads)
        from mitp.torch_runtime import TorchClassifier  # brings torch: the torch worker only

        classifier = TorchClassifier.from_pretrained(folder)
    else:
        from mitp.onnx_runtime import OnnxClassifier  # numpy, PIL, onnxruntime, tokenizers

        classifier = OnnxClassifier.from_pretrained(folder, quantized=runtime == "onnx-int8", threads=threads)
    load_seconds = time.perf_counter() - started
    sample = classifier.prepare(Image.effect_noise((256, 256), 60).convert("RGB"), " ".join(["word"] * seq_len))
    batches = {size: [sample] * size for size in batch_sizes}
    classifier.logits(batches[batch_sizes[0]])  # the first call initialises lazily: not timed
    loaded = {
        "load_seconds": load_seconds,
        "rss_mb": rss_mb(),
        "peak_resettable": reset_peak_rss(),
        "torch_imported": "torch" in sys.modules,
    }

    def timed(request: tuple[int, int]) -> dict:
        size, calls = request
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            classifier.logits(batches[size])
            times.append(time.perf_counter() - start)
        return {"times": times, "peak_rss_mb": peak_rss_mb()}

    return loaded, timed


__all__ = ["time_logits"]
