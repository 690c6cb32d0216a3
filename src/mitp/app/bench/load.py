"""`mitp bench serve --load SECONDS`: `mitp serve` under many concurrent clients sending good and bad
requests, in a process of its own so that its memory can be watched.

A random model on the given backbone is exported to a temporary folder and served by a real
``mitp serve`` subprocess with its default limits. ``clients`` asyncio clients send requests for
``seconds``: mostly good ones (multipart and JSON), and a share of bad ones (not JSON, nested too
deeply, a lone surrogate, a decompression bomb, a body over the limit). A client told 503 waits the
``Retry-After`` and sends the same request again, as well-behaved clients do. Reported: requests/s,
p50/p99 latency of good requests, status codes per kind, 5xx answers other than 503, and the
server's resident memory at the start, its peak and at the end (``/proc/<pid>/status``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import statistics
import struct
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

from mitp.markdown import table

from ..launch import CliProcess
from ..procmem import memory_mb
from ..serve.local import free_port
from .model import noise_png, random_classifier
from .serving import percentile_ms

# share of each request kind (good ones first)
MIX = {
    "good_multipart": 0.60,
    "good_json": 0.20,
    "bad_json": 0.04,
    "deep_json": 0.04,
    "surrogate": 0.04,
    "pixel_bomb": 0.04,
    "body_over_limit": 0.04,
}


def _bomb_png(width: int = 13000, height: int = 13000) -> bytes:
    """A few hundred bytes whose PNG header claims width x height pixels."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _requests(image: bytes, max_body: int) -> dict:
    """kind -> a function giving the keyword arguments of one httpx POST to /predict."""
    json_headers = {"content-type": "application/json"}
    over = b'{"text": "' + b"x" * (max_body + 2**20) + b'"}'

    async def over_limit():  # streamed without a length: refused while it arrives
        for start in range(0, len(over), 2**16):
            yield over[start : start + 2**16]

    return {
        "good_multipart": lambda: {
            "files": {"image": ("x.png", image, "image/png")},
            "data": {"text": "a photo of something", "top_k": "1"},
        },
        "good_json": lambda: {"json": {"image": base64.b64encode(image).decode(), "text": "a photo", "top_k": 1}},
        "bad_json": lambda: {"content": b"{not json", "headers": json_headers},
        "deep_json": lambda: {"content": b"[" * 100_000 + b"]" * 100_000, "headers": json_headers},
        "surrogate": lambda: {"content": b'{"text": "\\ud800"}', "headers": json_headers},
        "pixel_bomb": lambda: {"files": {"image": ("b.png", _bomb_png(), "image/png")}},
        "body_over_limit": lambda: {"content": over_limit(), "headers": json_headers},
    }


def load_benchmark(
    backbone: str,
    method: str,
    seconds: float = 60.0,
    clients: int = 200,
    num_classes: int = 10,
    seed: int = 0,
    progress=print,
) -> dict:
    import httpx  # a test and bench dependency, not a runtime one

    with tempfile.TemporaryDirectory() as tmp:
        classifier = random_classifier(backbone, method, num_classes)
        classifier.save_pretrained(Path(tmp) / "model")
        image = noise_png(classifier.model.backbone.image_size)
        del classifier  # freed here: the server process loads its own copy from the folder
        port = free_port()
        # The server's log goes to a file, not a pipe nobody reads while it runs (a full pipe would stall it);
        # its tracebacks are counted at the end. A new interpreter, as a deployment starts it, so its memory
        # figures count every page it loads (not one forked from the fork server).
        server = CliProcess(
            ["serve", str(Path(tmp) / "model"), "--port", str(port)],
            Path(tmp) / "server.log",
            env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
            new_interpreter=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if not server.process.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"mitp serve did not start: {server.output()[-2000:]}")
                time.sleep(0.2)
            pid = server.process.pid
            progress(f"server up (pid {pid}); {clients} clients for {seconds:.0f} s")
            result = asyncio.run(_drive(url, _requests(image, 32 * 2**20), seconds, clients, seed, pid))
        finally:
            server.stop()
        tracebacks = server.output().count("Traceback (most recent call last)")
    return {
        "backbone": backbone,
        "method": method,
        "clients": clients,
        "seconds": seconds,
        **result,
        "server_tracebacks": tracebacks,
    }


async def _drive(url: str, kinds: dict, seconds: float, clients: int, seed: int, pid: int) -> dict:
    import httpx  # a test and bench dependency, not a runtime one

    def process_memory() -> tuple[float, float]:
        return memory_mb(pid) or (0.0, 0.0)

    names, weights = list(MIX), list(MIX.values())
    statuses: dict[str, Counter] = defaultdict(Counter)
    latencies: list[float] = []
    retried = Counter()
    unfinished = 0

    async def client(number: int, http: httpx.AsyncClient):
        nonlocal unfinished
        rng = random.Random(seed * 100_003 + number)
        while time.monotonic() < stop_at:
            kind = rng.choices(names, weights)[0]
            started = time.perf_counter()
            while True:
                try:
                    reply = await http.post(f"{url}/predict", **kinds[kind]())
                    status = reply.status_code
                except httpx.HTTPError as err:  # a refused streamed body may end the connection
                    status = f"closed ({type(err).__name__})"
                    break
                if status != 503:
                    break
                retried[kind] += 1
                if time.monotonic() > stop_at:
                    unfinished += 1
                    break
                await asyncio.sleep(float(reply.headers.get("retry-after", "1")))
            statuses[kind][status] += 1
            if kind.startswith("good") and status == 200:
                latencies.append(time.perf_counter() - started)

    async def watch_memory():
        while time.monotonic() < stop_at:
            rss_samples.append(process_memory()[0])
            await asyncio.sleep(0.25)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        for request in kinds.values():  # warm-up: one of each
            try:
                await http.post(f"{url}/predict", timeout=60, **request())
            except httpx.HTTPError:
                pass  # the refused streamed body
        rss_start, _ = process_memory()
        rss_samples = [rss_start]
        stop_at = time.monotonic() + seconds
        started = time.perf_counter()
        await asyncio.gather(watch_memory(), *(client(i, http) for i in range(clients)))
        wall = time.perf_counter() - started
    rss_end, rss_peak = process_memory()
    latencies.sort()
    answered = sum(sum(c.values()) for c in statuses.values())
    good_5xx = sum(
        n
        for kind, c in statuses.items()
        if kind.startswith("good")
        for status, n in c.items()
        if isinstance(status, int) and status >= 500
    )
    return {
        "requests": answered,
        "requests_per_s": round(answered / wall, 1),
        "good_ok_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "p99_ms": percentile_ms(latencies, 0.99) if latencies else None,
        "statuses": {kind: {str(s): n for s, n in sorted(c.items(), key=str)} for kind, c in statuses.items()},
        "retried_503": dict(retried),
        "unfinished_at_end": unfinished,
        "good_5xx": good_5xx,
        "rss_mb": {
            "start": round(rss_start, 1),
            "peak": round(max(rss_samples + [rss_end]), 1),
            "end": round(rss_end, 1),
            "high_water": round(rss_peak, 1),
        },
    }


def render(row: dict) -> str:
    rss = row["rss_mb"]
    totals = (
        f"{row['requests']:,}",
        row["requests_per_s"],
        row["good_ok_per_s"],
        row["p50_ms"],
        row["p99_ms"],
        row["good_5xx"],
        row["server_tracebacks"],
        f"{rss['start']} / {rss['peak']} / {rss['end']}",
    )
    header = (
        "requests answered | requests/s | good answered 200/s | p50 (ms, good) | p99 (ms, good) | 5xx on good "
        "requests | tracebacks in the server's log | server RSS start / peak / end (MB)"
    ).split(" | ")
    kinds = [
        (
            kind,
            f"{share:.0%}",
            ", ".join(f"{s}: {n:,}" for s, n in row["statuses"].get(kind, {}).items()),
            f"{row['retried_503'].get(kind, 0):,}",
        )
        for kind, share in MIX.items()
    ]
    return (
        f"`mitp serve` under load: {row['clients']} clients for {row['seconds']:.0f} s, {row['method']} on "
        f"{row['backbone']}\n\n"
        + table(header, [totals], align="r" * 7 + "l")
        + "\n"
        + table(("kind", "share", "answers (status: count)", "503s retried"), kinds, align="lrlr")
    )


__all__ = ["MIX", "load_benchmark", "render"]
