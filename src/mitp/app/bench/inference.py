"""`mitp bench --inference`: a trained model's forward pass on eager PyTorch, on the ONNX graph and on
its int8 graph, side by side.

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

import torch

from mitp.backbones import build_backbone
from mitp.classifier import Classifier
from mitp.data.manifest import LabelSpace
from mitp.data.preprocess import Preprocessor
from mitp.methods import build_model, make_config
from mitp.onnx_export import export_onnx

from ..runtime_worker import time_logits
from .settings import BenchError

RUNTIMES = ("torch", "onnx", "onnx-int8")


def _export(
    backbone_spec: str, method: str, folder: Path, seq_len: int, image_size: int | None, num_classes: int
) -> dict:
    backbone = build_backbone(backbone_spec)
    torch.manual_seed(0)
    model = build_model(make_config(method, num_classes=num_classes), backbone).eval()
    with torch.no_grad():  # gates open as after training (the work is the same; the logits then depend on prompts)
        for name, param in model.named_parameters():
            if "gates" in name:
                param.fill_(1.0)
    max_length = min(seq_len, backbone.text_format.max_length)
    preprocessor = Preprocessor.for_backbone(backbone, max_length, image_size)
    labels = LabelSpace("single_label", tuple(f"class-{i}" for i in range(num_classes)))
    info = {
        "backbone": backbone_spec,
        "threshold": 0.5,
        "preprocessing": {"max_text_length": max_length, "image_size": image_size},
    }
    classifier = Classifier(model, preprocessor, labels, info)
    classifier.save_pretrained(folder)
    spec = export_onnx(classifier, folder, quantize="int8")
    return {
        "parity_max_abs": spec["parity_max_abs"],
        "image_size": list(preprocessor.blank_image().shape[1:]),
        "text_length": max_length,
    }


def _receive(conn, process, runtime: str) -> dict:
    try:
        return conn.recv()
    except EOFError:
        process.join(timeout=10)
        raise BenchError(f"the {runtime} worker died (exit code {process.exitcode}); its traceback is above") from None


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
    with tempfile.TemporaryDirectory(prefix="mitp-bench-onnx-") as tmp:
        folder = Path(tmp) / "model"
        say(f"exporting {method} on {backbone} (fp32 and int8 graphs)")
        export = _export(backbone, method, folder, seq_len, image_size, num_classes)
        sizes_mb = {
            "torch": (folder / "model.safetensors").stat().st_size / 2**20,
            "onnx": (folder / "model.onnx").stat().st_size / 2**20,
            "onnx-int8": (folder / "model.int8.onnx").stat().st_size / 2**20,
        }
        workers, loaded = {}, {}
        try:
            for runtime in RUNTIMES:  # one after another, so load times and memory are not shared
                parent, child = context.Pipe()
                process = context.Process(
                    target=time_logits, daemon=True, args=(child, str(folder), runtime, threads, batch_sizes, seq_len)
                )
                process.start()
                child.close()  # the worker's end: a worker that dies is then an EOFError here, not a hang
                workers[runtime] = (process, parent)
                loaded[runtime] = _receive(parent, process, runtime)
                say(f"loaded {runtime} in {loaded[runtime]['load_seconds']:.1f} s")
            times = {(r, b): [] for r in RUNTIMES for b in batch_sizes}
            peaks = dict.fromkeys(RUNTIMES, 0.0)
            for round_index in range(rounds + (1 if warmup else 0)):
                for size in batch_sizes:
                    for runtime in RUNTIMES:
                        conn = workers[runtime][1]
                        conn.send((size, warmup if round_index == 0 and warmup else steps))
                        reply = _receive(conn, workers[runtime][0], runtime)
                        peaks[runtime] = max(peaks[runtime], reply["peak_rss_mb"])
                        if round_index or not warmup:
                            times[runtime, size] += reply["times"]
                if round_index or not warmup:
                    say(
                        f"round {round_index if warmup else round_index + 1}/{rounds}: "
                        + ", ".join(
                            f"{r} b{b} {1000 * statistics.median(times[r, b]):.1f} ms"
                            for b in batch_sizes
                            for r in RUNTIMES
                        )
                    )
        finally:
            for process, conn in workers.values():
                if process.is_alive():
                    try:
                        conn.send(None)
                    except OSError:
                        pass
                process.join(timeout=30)
                if process.is_alive():
                    process.kill()
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
                    "file_mb": round(sizes_mb[runtime], 2),
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
        **export,
        "rows": rows,
    }


def render(result: dict) -> str:
    lines = [
        "| runtime | batch | ms / batch | samples/s | vs eager PyTorch | load (s) | RSS after load (MB) | "
        "peak RSS (MB) | weights file (MB) | torch loaded |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['runtime']} | {r['batch_size']} | {r['ms_per_batch']:.1f} | {r['samples_per_s']:.1f} | "
            f"{r['speedup_vs_torch']:.2f}x | {r['load_seconds']:.1f} | {r['rss_mb']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['file_mb']:.1f} | {'yes' if r['torch_in_process'] else 'no'} |"
        )
    height, width = result["image_size"]
    lines.append(
        f"\n{result['method']} on {result['backbone']}, {height}x{width} images, {result['text_length']} "
        f"text tokens, {result['threads']} thread(s) per runtime, medians of {result['rounds']} rounds x "
        f"{result['steps']} calls; the fp32 graph's logits are within {result['parity_max_abs']:.1e} of "
        "PyTorch's. The PyTorch weights file holds only the trainable tensors (the frozen backbone "
        "is rebuilt from its spec); the graphs hold everything."
    )
    return "\n".join(lines)
