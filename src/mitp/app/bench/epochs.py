"""Epoch time with and without the frozen-prefix cache (``mitp bench --epochs N``).

Trains the method twice on the same generated dataset, once plainly and once with
``train.cache_prefix``; the first cached epoch fills the cache, later ones read it. The
figure to read is the last epoch's time, cached over uncached.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..train.rundir import MetricsLog


def cache_epoch_benchmark(backbone: str, method: str = "mitp", samples: int = 64, batch_size: int = 8,
                          epochs: int = 2, seed: int = 0, model: dict | None = None) -> dict:
    from mitp.backbones import build_backbone, is_builtin
    from mitp.synthetic import write_toy_dataset

    from ..prefix_cache import default_root
    from ..train.config import RunConfig
    from ..train.loop import Trainer

    if epochs < 2:
        raise ValueError("--epochs must be >= 2: the first cached epoch fills the cache")
    image_size = build_backbone(backbone, device="meta" if is_builtin(backbone) else None).image_size
    with tempfile.TemporaryDirectory(prefix="mitp-bench-cache-") as tmp:
        tmp = Path(tmp)
        data = write_toy_dataset(tmp / "data", sizes=(samples, batch_size, batch_size), seed=seed,
                                 image_size=image_size)
        figures = {}
        for cached in (False, True):
            run_dir = tmp / ("cached" if cached else "plain")
            run_dir.mkdir()
            config = RunConfig.from_dict({
                "data": str(data), "backbone": backbone, "method": method, "seed": seed, "model": model or {},
                "train": {"epochs": epochs, "batch_size": batch_size, "warmup_ratio": 0.0,
                          "cache_prefix": cached, "cache_dir": str(tmp / "cache")},
                "eval": {"every_epochs": epochs}})
            trainer = Trainer(config, run_dir)
            depths = trainer.parts.model.frozen_prefix()
            trainer.fit()
            records = MetricsLog(run_dir / "metrics.jsonl").records()
            figures[cached] = [r["epoch_seconds"] for r in records if r["split"] == "train"]
        disk = sum(f.stat().st_size for f in (tmp / "cache").rglob("*") if f.is_file()) if (tmp / "cache").exists() \
            else 0
    uncached, cached = figures[False], figures[True]
    return {
        "method": method, "backbone": backbone, "batch_size": batch_size, "samples": samples, "epochs": epochs,
        "prefix_depths": list(depths) if depths else None,
        "epoch_seconds_uncached": uncached, "epoch_seconds_cached": cached,
        "ratio_cached_vs_uncached": cached[-1] / uncached[-1] if uncached[-1] else None,
        "cache_disk_mb": round(disk / 2**20, 2), "default_cache_root": str(default_root()),
    }


def render(result: dict) -> str:
    depths = result["prefix_depths"]
    where = f"text layers < {depths[0]}, vision layers < {depths[1]} cached" if depths else "nothing to cache"
    lines = [
        f"{result['method']} on {result['backbone']}, {result['samples']} samples, batch {result['batch_size']} "
        f"({where}):",
        "  epoch seconds without cache: " + ", ".join(f"{s:.2f}" for s in result["epoch_seconds_uncached"]),
        "  epoch seconds with cache:    " + ", ".join(f"{s:.2f}" for s in result["epoch_seconds_cached"])
        + "  (the first fills it)",
    ]
    if result["ratio_cached_vs_uncached"] is not None:
        lines.append(f"  last epoch, cached / uncached = {result['ratio_cached_vs_uncached']:.2f}; cache on disk "
                     f"{result['cache_disk_mb']:.1f} MB")
    return "\n".join(lines)
