"""`mitp bench --serve`: requests per second and latency of `mitp serve`, with and without batching.

The same model (random weights on the given backbone) is served on 127.0.0.1 twice, once
grouping concurrent requests into batches (``max_batch``) and once one request per batch;
``clients`` threads send ``requests`` multipart requests in total to each.
"""

from __future__ import annotations

import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from mitp.backbones import build_backbone
from mitp.classifier import Classifier
from mitp.data.manifest import LabelSpace
from mitp.data.preprocess import Preprocessor
from mitp.methods import build_model, make_config

from ..serve import create_app, running


def _classifier(backbone_spec: str, method: str, num_classes: int):
    import torch

    backbone = build_backbone(backbone_spec)
    torch.manual_seed(0)
    model = build_model(make_config(method, num_classes=num_classes), backbone).eval()
    labels = LabelSpace("single_label", tuple(f"class-{i}" for i in range(num_classes)))
    info = {"backbone": backbone_spec, "preprocessing": {}, "threshold": 0.5}
    return Classifier(model, Preprocessor.for_backbone(backbone), labels, info)


def _png(size: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((size, size), 60).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def serve_benchmark(
    backbone: str,
    method: str,
    requests: int = 200,
    clients: int = 16,
    max_batch: int = 16,
    max_wait_ms: float = 10.0,
    num_classes: int = 10,
) -> list[dict]:
    """One row per mode (batched, unbatched): requests/s, p50 and p99 latency, batches the server ran."""
    import httpx

    classifier = _classifier(backbone, method, num_classes)
    image = _png(classifier.model.backbone.image_size)
    rows = []
    for mode, batch in (("batched", max_batch), ("unbatched", 1)):
        app = create_app(classifier, max_batch=batch, max_wait_ms=max_wait_ms if batch > 1 else 0.0)
        with running(app) as url:

            def one(_):
                with httpx.Client(timeout=300) as client:
                    start = time.perf_counter()
                    reply = client.post(
                        f"{url}/predict",
                        files={"image": ("x.png", image, "image/png")},
                        data={"text": "a photo of something", "top_k": "1"},
                    )
                    reply.raise_for_status()
                    return time.perf_counter() - start

            one(0)  # warm-up, not counted
            stats = app.state.batcher.stats
            warm_batches, stats.largest = stats.batches, 0
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=clients) as pool:
                latencies = sorted(pool.map(one, range(requests)))
            wall = time.perf_counter() - started
        rows.append(
            {
                "mode": mode,
                "max_batch": batch,
                "requests": requests,
                "clients": clients,
                "requests_per_s": round(requests / wall, 2),
                "p50_ms": round(1000 * statistics.median(latencies), 1),
                "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
                "batches": stats.batches - warm_batches,
                "largest_batch": stats.largest,
                "method": method,
                "backbone": backbone,
            }
        )
    return rows


def render(rows: list[dict]) -> str:
    lines = [
        "| mode | max batch | requests/s | p50 latency (ms) | p99 latency (ms) | batches run | largest |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['max_batch']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['batches']} | {r['largest_batch']} |"
        )
    if len(rows) == 2 and rows[1]["requests_per_s"]:
        lines.append(
            f"\nbatched / unbatched throughput: {rows[0]['requests_per_s'] / rows[1]['requests_per_s']:.2f}x "
            f"({rows[0]['requests']} requests from {rows[0]['clients']} clients each, {rows[0]['method']} "
            f"on {rows[0]['backbone']})"
        )
    return "\n".join(lines)
