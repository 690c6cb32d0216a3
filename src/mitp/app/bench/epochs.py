"""What a user pays per epoch (``mitp bench epochs``): every method side by side, each in its best mode.

Every method trains ``epochs`` epochs on the same generated dataset, as a real ``mitp train`` in a
fresh process (its peak memory is its own), with the frozen-prefix cache on where the method has
a frozen prefix (full fine-tuning has none). Methods take turns, round after round, so drift of a
shared machine hits them alike; the cache persists across rounds, so the last epoch of every
round reads it. The figures are the last epoch's: wall and CPU time, per step, and the process's
peak memory; inference is the test split's pass (prefix included) at the end of the run.
Min / median / max over rounds make the noise visible in the table itself.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path

import yaml

from mitp.backbones import build_backbone, is_builtin
from mitp.markdown import table
from mitp.methods import build_model, make_config
from mitp.runs import Run
from mitp.synthetic import write_toy_dataset

from ..errors import UserError
from ..launch import CliProcess
from ..train.rundir import MetricsLog
from .settings import REFERENCE, parse_method_spec


def _run(config: dict, run_dir: Path, threads: int | None) -> dict:
    """One `mitp train` in a fresh process; its last epoch's times, peak memory and inference speed."""
    config_path = run_dir.with_suffix(".yaml")
    config_path.write_text(yaml.safe_dump(config))
    process = CliProcess(
        ["train", "--config", str(config_path), "--out", str(run_dir)],
        run_dir.with_suffix(".log"),
        env={"OMP_NUM_THREADS": str(threads)} if threads else None,
    )
    if process.wait() != 0:
        raise RuntimeError(f"mitp train failed for {config['method']}: " + "\n".join(process.tail()))
    last = [r for r in MetricsLog(Run(run_dir).metrics_path).records() if r["split"] == "train"][-1]
    results = Run(run_dir).read_results()
    return {
        "epoch_s": last["epoch_seconds"],
        "epoch_cpu_s": last["epoch_cpu_seconds"],
        "peak_memory_mb": results["peak_memory_mb"],
        "trainable_params": results["trainable_params"],
        "infer_samples_per_s": results["test_samples"] / max(results["test_seconds"], 1e-9),
    }


def epoch_benchmark(
    backbone: str,
    methods: tuple[str, ...],
    samples: int = 16,
    batch_size: int = 8,
    epochs: int = 2,
    rounds: int = 2,
    threads: int | None = None,
    compile: bool = False,
    seed: int = 0,
    progress=print,
) -> list[dict]:
    """One row per method: its last epoch (min / median / max over rounds) and ratios to full fine-tuning."""
    if epochs < 2:
        raise UserError("--epochs must be >= 2: the first epoch of a cached method fills its cache")
    meta = build_backbone(backbone, device="meta" if is_builtin(backbone) else None)
    specs = {m: parse_method_spec(m) for m in methods}  # "mitp[prompt_gate=false]": a setting as a row
    cached = {
        m: build_model(make_config(name, num_classes=2, **overrides), meta).frozen_prefix() is not None
        for m, (name, overrides) in specs.items()
    }
    figures: dict[str, list[dict]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory(prefix="mitp-bench-epochs-") as tmp:
        tmp = Path(tmp)
        data = write_toy_dataset(
            tmp / "data", sizes=(samples, batch_size, batch_size), seed=seed, image_size=meta.image_size
        )
        for round_ in range(rounds):
            for index, method in enumerate(methods):
                name, overrides = specs[method]
                config = {
                    "data": str(data),
                    "backbone": backbone,
                    "method": name,
                    "seed": seed,
                    "model": overrides,
                    "train": {
                        "epochs": epochs,
                        "batch_size": batch_size,
                        "warmup_ratio": 0.0,
                        "cache_prefix": cached[method],
                        "cache_dir": str(tmp / "cache"),
                        "compile": compile,
                        "log_with": "none",
                    },
                    "eval": {"every_epochs": epochs},
                }
                figures[method].append(_run(config, tmp / f"round{round_}-{index}-{name}", threads))
                progress(f"round {round_ + 1}/{rounds}: {method} last epoch {figures[method][-1]['epoch_s']:.2f} s")
    steps = math.ceil(samples / batch_size)
    rows = []
    for method in methods:
        runs = figures[method]
        epoch = [r["epoch_s"] for r in runs]
        rows.append(
            {
                "method": method,
                "mode": "prefix cache" if cached[method] else "no cache (trains the towers)",
                "trainable_params": runs[0]["trainable_params"],
                "epoch_s_min": min(epoch),
                "epoch_s": statistics.median(epoch),
                "epoch_s_max": max(epoch),
                "step_ms": 1000 * statistics.median(epoch) / steps,
                "epoch_cpu_s": statistics.median(r["epoch_cpu_s"] for r in runs),
                "peak_memory_mb": max(r["peak_memory_mb"] for r in runs),
                "infer_samples_per_s": statistics.median(r["infer_samples_per_s"] for r in runs),
                "backbone": backbone,
                "samples": samples,
                "batch_size": batch_size,
                "epochs": epochs,
                "rounds": rounds,
                "compile": compile,
            }
        )
    reference = next((r for r in rows if r["method"] == REFERENCE), None)
    for row in rows:
        for key, of in (
            ("ratio_epoch_vs_full", "epoch_s"),
            ("ratio_cpu_vs_full", "epoch_cpu_s"),
            ("ratio_memory_vs_full", "peak_memory_mb"),
        ):
            row[key] = round(row[of] / reference[of], 3) if reference and reference[of] else None
    return rows


def render(rows: list[dict]) -> str:
    def ratio(value):
        return "-" if value is None else f"{value:.2f}x"

    first = rows[0]
    header = (
        "method | mode | epoch (s) | step (ms) | epoch CPU (s) | peak memory (MB) | inference (samples/s) | "
        "epoch vs full | CPU vs full | memory vs full"
    ).split(" | ")
    cells = [
        (
            r["method"],
            r["mode"],
            f"{r['epoch_s_min']:.2f} / {r['epoch_s']:.2f} / {r['epoch_s_max']:.2f}",
            f"{r['step_ms']:.0f}",
            f"{r['epoch_cpu_s']:.2f}",
            f"{r['peak_memory_mb']:.0f}",
            f"{r['infer_samples_per_s']:.1f}",
            ratio(r["ratio_epoch_vs_full"]),
            ratio(r["ratio_cpu_vs_full"]),
            ratio(r["ratio_memory_vs_full"]),
        )
        for r in rows
    ]
    return (
        f"{first['backbone']}, {first['samples']} samples, batch {first['batch_size']}, last of {first['epochs']} "
        f"epochs, {first['rounds']} rounds (min / median / max){', compiled' if first['compile'] else ''}:\n\n"
        + table(header, cells, align="ll" + "r" * 8)
    )
