"""`mitp bench step`, the parent side: validate, drive the workers in alternating rounds, make the rows and
their tables (terminal and markdown).

One worker process per method (a fresh process forked from a server that has only imported the
libraries, ``app/launch.py``, so memory figures start from a clean process) builds the backbone and the
method once and keeps them. The parent drives the measurement in rounds: in every round it asks each
worker in turn, never two at once, to run ``steps`` timed training steps and ``steps`` timed inference
passes. Drift of a shared machine therefore hits every method alike, and the medians are taken over all
rounds.

* Training step: what ``mitp train`` does per batch (without mixed precision): forward
  with labels, backward, gradient clipping (``train.max_grad_norm`` default), AdamW
  step, zero_grad, reading the loss. Only the learning-rate scheduler is left out.
  Timed as wall time and as process CPU time (all threads; CPU only).
* Inference pass: forward without labels under ``torch.no_grad`` in eval mode.
* Peak memory of training: what the training steps add on top of the built model,
  peak over every training step (warm-up included: step 1 has no AdamW state yet).
  CPU: growth of the peak resident set (VmHWM, reset after building through
  ``/proc/self/clear_refs``) in the method's own fresh process. CUDA: peak of
  ``torch.cuda.max_memory_allocated`` during the training steps minus what was
  allocated before them (weights and the input batch).

Inputs are random but well formed (``Backbone.random_batch``, fixed seed); random
weights are fine because speed and memory do not depend on them.
"""

from __future__ import annotations

import statistics
import time

import torch
from rich.table import Table

from mitp.backbones import build_backbone, family_of
from mitp.configuration import ConfigError
from mitp.markdown import table
from mitp.methods import get_method

from ..launch import process_context
from ..workers import WorkerHandle
from .protocol import start_worker
from .settings import MEMORY_KINDS, REFERENCE, BenchResult, BenchSettings, parse_method_spec


def validate(settings: BenchSettings) -> None:
    """Errors that need no worker: unknown or repeated methods, unknown built-in specs, bad numbers."""
    if not settings.methods:
        raise ConfigError("methods", "no method given")
    seen = set()
    for name in settings.methods:
        method, overrides = parse_method_spec(name)
        get_method(method).config_class.from_dict({**overrides, "num_classes": settings.num_classes})  # named errors
        if name in seen:
            raise ConfigError("methods", f"{name!r} is listed twice")
        seen.add(name)
    for key, low in (("batch_size", 1), ("steps", 1), ("rounds", 1), ("warmup", 0), ("seq_len", 2), ("num_classes", 2)):
        if getattr(settings, key) < low:
            raise ConfigError(key, f"must be >= {low}, got {getattr(settings, key)}")
    if settings.threads is not None and settings.threads < 1:
        raise ConfigError("threads", f"must be >= 1, got {settings.threads}")
    if settings.device is not None:
        try:
            device = torch.device(settings.device)
        except RuntimeError as err:
            raise ConfigError("device", str(err)) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device", "cuda requested but torch sees no CUDA device")
    if family_of(settings.backbone).builtin:  # an unknown shape: a BackboneError now, not in a worker
        build_backbone(settings.backbone, device="meta")


def _median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def _timings(reply: dict) -> str:
    train, infer = ([wall for wall, _ in reply[phase]] for phase in ("train", "infer"))
    return f"train {_median_ms(train):9.1f} ms/step  infer {_median_ms(infer):9.1f} ms/batch"


def _ratio(value, reference):
    if value is None or not reference:
        return None
    return round(value / reference, 3)


def make_rows(settings: BenchSettings, infos: dict, times: dict, memory: dict) -> list[dict]:
    rows = []
    on_cpu = settings.device == "cpu"
    for method in settings.methods:
        train, infer = times[method]["train"], times[method]["infer"]
        infer_ms = _median_ms(infer)
        mem = memory[method]
        rows.append(
            {
                "method": method,
                "backbone": settings.backbone,
                "batch_size": settings.batch_size,
                "trainable_params": infos[method]["trainable_params"],
                "peak_memory_mb": round(mem["peak_memory_mb"], 1),
                "train_step_ms": round(_median_ms(train), 2),
                "infer_samples_per_s": round(settings.batch_size / (infer_ms / 1000), 2),
                "ratio_step_vs_full": None,
                "ratio_memory_vs_full": None,
                "total_params": infos[method]["total_params"],
                "model_memory_mb": round(mem["model_memory_mb"], 1),
                "peak_memory_total_mb": round(mem["peak_memory_total_mb"], 1),
                "infer_ms": round(infer_ms, 2),
                "train_step_ms_min": round(min(train) * 1000, 2),
                "train_step_ms_max": round(max(train) * 1000, 2),
                # Process CPU time (all threads) says little on a GPU: only reported on the CPU.
                "train_step_cpu_ms": round(_median_ms(times[method]["train_cpu"]), 2) if on_cpu else None,
                "infer_cpu_ms": round(_median_ms(times[method]["infer_cpu"]), 2) if on_cpu else None,
                "ratio_step_cpu_vs_full": None,
                "device": settings.device,
                "threads": settings.threads,
                "memory_kind": mem["memory_kind"],
                "rounds": settings.rounds,
                "steps": settings.steps,
                "warmup": settings.warmup,
                "seq_len": settings.seq_len,
                "timed_train_steps": len(train),
                "timed_infer_passes": len(infer),
            }
        )
    reference = next((row for row in rows if row["method"] == REFERENCE), None)
    if reference is not None:
        for row in rows:
            row["ratio_step_vs_full"] = _ratio(row["train_step_ms"], reference["train_step_ms"])
            row["ratio_step_cpu_vs_full"] = _ratio(row["train_step_cpu_ms"], reference["train_step_cpu_ms"])
            row["ratio_memory_vs_full"] = _ratio(row["peak_memory_mb"], reference["peak_memory_mb"])
    return rows


def run_benchmark(settings: BenchSettings, progress=None) -> BenchResult:
    """Measure every method in ``settings.methods``; ``progress(message)`` hears about each request.

    Workers are fresh processes (``app/launch.py``), so a script calling this needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    settings = settings.resolved()
    validate(settings)
    say = progress or (lambda message: None)
    started = time.perf_counter()
    context = process_context()
    workers: dict[str, WorkerHandle] = {}
    schedule: list[tuple[int, str]] = []
    times = {m: {"train": [], "infer": [], "train_cpu": [], "infer_cpu": []} for m in settings.methods}
    memory: dict[str, dict] = {}
    infos: dict[str, dict] = {}
    try:
        # Built one after another: every worker holds a whole backbone, so peaks never add up.
        for method in settings.methods:
            say(f"building {method} on {settings.backbone} ({settings.device}, {settings.threads} threads)")
            workers[method] = start_worker(context, settings, method)
            infos[method] = workers[method].receive()
        for round_index in range(0 if settings.warmup else 1, settings.rounds + 1):  # round 0: the warm-up
            steps = settings.steps if round_index else settings.warmup
            for method in settings.methods:
                reply = workers[method].ask({"train": steps, "infer": steps})
                schedule.append((round_index, method))
                memory[method] = reply["memory"]
                for phase in ("train", "infer"):
                    if round_index:
                        times[method][phase] += [wall for wall, _ in reply[phase]]
                        times[method][phase + "_cpu"] += [cpu for _, cpu in reply[phase]]
                when = f"round {round_index}/{settings.rounds}" if round_index else "warm-up  "
                say(f"{when} {method:<14} {_timings(reply)}")
    finally:
        for handle in workers.values():
            handle.close()
    rows = make_rows(settings, infos, times, memory)
    notes = [
        MEMORY_KINDS.get(rows[0]["memory_kind"], rows[0]["memory_kind"]),
        (
            f"{settings.device}, {settings.threads} torch threads per worker; one worker process per method, "
            f"asked in turn (never two at once); {settings.rounds} rounds x {settings.steps} timed steps after "
            f"{settings.warmup} warm-up steps; medians over all rounds"
        ),
    ]
    if settings.device == "cpu":
        notes.append(
            f"train step CPU: process CPU time of a step summed over its threads; unloaded it is close "
            f"to {settings.threads} x the wall time, and much less means the workers waited for cores "
            "(other load on the machine), which inflates wall time more than CPU time"
        )
    if REFERENCE not in settings.methods:
        notes.append(f"{REFERENCE} was not measured: the ratio columns are null")
    return BenchResult(settings, rows, schedule, notes, time.perf_counter() - started)


# (markdown header, short terminal header) per column
COLUMNS = (
    ("method", "method"),
    ("trainable params", "trainable"),
    ("peak train memory (MB)", "peak MB"),
    ("train step (ms)", "step ms"),
    ("train step CPU (ms)", "CPU ms"),
    ("inference (samples/s)", "infer/s"),
    ("step vs full", "step/full"),
    ("step CPU vs full", "CPU/full"),
    ("memory vs full", "mem/full"),
)


def _cells(row: dict) -> list[str]:
    def ratio(value) -> str:
        return "-" if value is None else f"{value:.2f}x"

    return [
        row["method"],
        f"{row['trainable_params']:,}",
        f"{row['peak_memory_mb']:,.1f}",
        f"{row['train_step_ms']:,.1f}",
        "-" if row["train_step_cpu_ms"] is None else f"{row['train_step_cpu_ms']:,.1f}",
        f"{row['infer_samples_per_s']:,.2f}",
        ratio(row["ratio_step_vs_full"]),
        ratio(row["ratio_step_cpu_vs_full"]),
        ratio(row["ratio_memory_vs_full"]),
    ]


def terminal_table(result: BenchResult) -> Table:
    s = result.settings
    terminal = Table(
        title=f"mitp bench: {s.backbone}, batch {s.batch_size}, text length {s.seq_len}, {s.device}",
        caption="peak MB: peak training memory; step ms: median training step (wall); CPU ms: its "
        "process CPU time, all threads; infer/s: inference samples per second; */full: ratio "
        "to full_finetune",
    )
    for i, (_, name) in enumerate(COLUMNS):
        terminal.add_column(name, justify="left" if i == 0 else "right")
    for row in result.rows:
        terminal.add_row(*_cells(row))
    return terminal


def render(result: BenchResult) -> str:
    """The settings, the table, then the notes and the --target checks as a list."""
    s = result.settings
    return (
        f"Backbone `{s.backbone}`, batch {s.batch_size}, text length {s.seq_len}, device {s.device}, "
        f"{s.threads} threads.\n\n"
        + table([header for header, _ in COLUMNS], [_cells(row) for row in result.rows])
        + "".join(f"\n- {line}" for line in result.notes + result.checks())
    )
