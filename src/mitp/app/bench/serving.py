"""`mitp bench serve`: requests per second and latency of `mitp serve`, with and without batching.

The same model (random weights on the given backbone) is served on 127.0.0.1 twice, once
grouping concurrent requests into batches (``max_batch``) and once one request per batch;
``clients`` threads send ``requests`` multipart requests in total to each.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from mitp.markdown import table

from ..serve import create_app, running
from .model import noise_png, random_classifier


def percentile_ms(sorted_seconds: list[float], share: float) -> float:
    """The ``share`` quantile (nearest rank below) of sorted latencies, in ms."""
    return round(1000 * sorted_seconds[min(len(sorted_seconds) - 1, int(share * len(sorted_seconds)))], 1)


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
    import httpx  # a test and bench dependency, not a runtime one

    classifier = random_classifier(backbone, method, num_classes)
    image = noise_png(classifier.model.backbone.image_size)
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
                "p99_ms": percentile_ms(latencies, 0.99),
                "batches": stats.batches - warm_batches,
                "largest_batch": stats.largest,
                "method": method,
                "backbone": backbone,
            }
        )
    return rows


def render(rows: list[dict]) -> str:
    header = ("mode", "max batch", "requests/s", "p50 latency (ms)", "p99 latency (ms)", "batches run", "largest")
    cells = [
        (
            r["mode"],
            r["max_batch"],
            f"{r['requests_per_s']:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            r["batches"],
            r["largest_batch"],
        )
        for r in rows
    ]
    text = table(header, cells)
    batched, unbatched = rows
    if unbatched["requests_per_s"]:
        text += (
            f"\nbatched / unbatched throughput: {batched['requests_per_s'] / unbatched['requests_per_s']:.2f}x "
            f"({batched['requests']} requests from {batched['clients']} clients each, {batched['method']} "
            f"on {batched['backbone']})"
        )
    return text
