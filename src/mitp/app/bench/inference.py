"""`mitp bench inference`: a trained model's forward pass on eager PyTorch, on the ONNX graph and on its int8
graph, side by side.

One model (random weights on the given backbone, gates opened so the prompts are live) is exported
once with ``mitp export --onnx --quantize int8``; each runtime then loads it in its own fresh process
("spawn") the way a deployment would (``Classifier.from_pretrained``), with the same number of
threads. The parent asks the runtimes in turn, round after round, for timed ``logits`` calls on the
same prepared batch (one image and one text repeated; preprocessing is not timed), so drift of a
shared machine hits all of them alike. Medians over every round; memory is the worker's resident
set after loading and its peak while timing.
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
from pathlib import Path

from mitp.markdown import table
from mitp.onnx_export import export_onnx

from ..runtime_worker import time_logits
from ..workers import WorkerHandle
from .model import random_classifier
from .settings import BenchError

RUNTIMES = ("torch", "onnx", "onnx-int8")
WEIGHT_FILES = {"torch": "model.safetensors", "onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}


def inference_benchmark(
    backbone: str,
    method: str,
    batch_sizes: tuple[int, ...] = (1, 16),
    rounds: int = 3,
    steps: int = 5,
    warmup: int = 2,
    threads: int = 1,
    seq_len: int = 32,
    image_size: int | None = None,
    num_classes: int = 10,
    progress=None,
) -> dict:
    """Rows per runtime and batch size: median ms per batch, samples/s, speed-up over eager PyTorch."""
    say = progress or (lambda message: None)
    context = multiprocessing.get_context("spawn")
    times = {(r, b): [] for r in RUNTIMES for b in batch_sizes}
    peaks = dict.fromkeys(RUNTIMES, 0.0)
    with tempfile.TemporaryDirectory(prefix="mitp-bench-onnx-") as tmp:
        folder = Path(tmp) / "model"
        say(f"exporting {method} on {backbone} (fp32 and int8 graphs)")
        classifier = random_classifier(backbone, method, num_classes, seq_len, image_size, open_gates=True)
        classifier.save_pretrained(folder)
        parity = export_onnx(classifier, folder, quantize="int8")["parity_max_abs"]
        file_mb = {runtime: (folder / name).stat().st_size / 2**20 for runtime, name in WEIGHT_FILES.items()}
        workers, loaded = {}, {}
        try:
            for runtime in RUNTIMES:  # one after another, so load times and memory are not shared
                args = (str(folder), runtime, threads, batch_sizes, seq_len)
                workers[runtime] = WorkerHandle(context, time_logits, args, f"the {runtime} runtime", BenchError)
                loaded[runtime] = workers[runtime].receive()
                say(f"loaded {runtime} in {loaded[runtime]['load_seconds']:.1f} s")
            for round_index in range(0 if warmup else 1, rounds + 1):  # round 0: the warm-up, not timed
                for size in batch_sizes:
                    for runtime in RUNTIMES:
                        reply = workers[runtime].ask((size, steps if round_index else warmup))
                        peaks[runtime] = max(peaks[runtime], reply["peak_rss_mb"])
                        if round_index:
                            times[runtime, size] += reply["times"]
                if round_index:
                    medians = (
                        f"{r} b{b} {1000 * statistics.median(times[r, b]):.1f} ms"
                        for b in batch_sizes
                        for r in RUNTIMES
                    )
                    say(f"round {round_index}/{rounds}: " + ", ".join(medians))
        finally:
            for handle in workers.values():
                handle.close()
    rows = []
    for size in batch_sizes:
        eager = statistics.median(times["torch", size])
        for runtime in RUNTIMES:
            median = statistics.median(times[runtime, size])
            rows.append(
                {
                    "runtime": runtime,
                    "batch_size": size,
                    "ms_per_batch": round(1000 * median, 2),
                    "samples_per_s": round(size / median, 1),
                    "speedup_vs_torch": round(eager / median, 2),
                    "load_seconds": round(loaded[runtime]["load_seconds"], 2),
                    "rss_mb": round(loaded[runtime]["rss_mb"], 1),
                    "peak_rss_mb": round(peaks[runtime], 1),
                    "file_mb": round(file_mb[runtime], 2),
                    "timed_calls": len(times[runtime, size]),
                    "torch_in_process": loaded[runtime]["torch_imported"],
                }
            )
    return {
        "method": method,
        "backbone": backbone,
        "threads": threads,
        "rounds": rounds,
        "steps": steps,
        "warmup": warmup,
        "parity_max_abs": parity,
        "image_size": list(classifier.preprocessor.blank_image().shape[1:]),
        "text_length": classifier.preprocessor.max_length,
        "rows": rows,
    }


def render(result: dict) -> str:
    header = (
        "runtime | batch | ms / batch | samples/s | vs eager PyTorch | load (s) | RSS after load (MB) | peak RSS (MB) "
        "| weights file (MB) | torch loaded"
    ).split(" | ")
    rows = [
        (
            r["runtime"],
            r["batch_size"],
            f"{r['ms_per_batch']:.1f}",
            f"{r['samples_per_s']:.1f}",
            f"{r['speedup_vs_torch']:.2f}x",
            f"{r['load_seconds']:.1f}",
            f"{r['rss_mb']:.0f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['file_mb']:.1f}",
            "yes" if r["torch_in_process"] else "no",
        )
        for r in result["rows"]
    ]
    height, width = result["image_size"]
    return (
        table(header, rows, align="l" + "r" * 8 + "l")
        + f"\n{result['method']} on {result['backbone']}, {height}x{width} images, {result['text_length']} "
        f"text tokens, {result['threads']} thread(s) per runtime, medians of {result['rounds']} rounds x "
        f"{result['steps']} calls; the fp32 graph's logits are within {result['parity_max_abs']:.1e} of "
        "PyTorch's. The PyTorch weights file holds only the trainable tensors (the frozen backbone "
        "is rebuilt from its spec); the graphs hold everything."
    )
