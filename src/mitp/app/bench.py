"""Side-by-side speed and memory of the methods on one backbone (``mitp bench``).

One worker process per method (``multiprocessing`` "spawn": a fresh interpreter, so
memory figures start from a clean process) builds the backbone and the method once
and keeps them. The parent drives the measurement in rounds: in every round it asks
each worker in turn, never two at once, to run ``steps`` timed training steps and
``steps`` timed inference passes. Drift of a shared machine therefore hits every
method alike, and the medians are taken over all rounds.

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

import dataclasses
import os
import re
import statistics
import time
from dataclasses import dataclass, field

DEFAULT_METHODS = ("mitp", "pmf", "deep_prompts", "late_fusion", "full_finetune")
REFERENCE = "full_finetune"

# Keys every JSON row has; the issue asks for the first nine.
REQUIRED_KEYS = ("method", "backbone", "batch_size", "trainable_params", "peak_memory_mb", "train_step_ms",
                 "infer_samples_per_s", "ratio_step_vs_full", "ratio_memory_vs_full")
EXTRA_KEYS = ("total_params", "model_memory_mb", "peak_memory_total_mb", "infer_ms", "train_step_ms_min",
              "train_step_ms_max", "train_step_cpu_ms", "infer_cpu_ms", "ratio_step_cpu_vs_full", "device",
              "threads", "memory_kind", "rounds", "steps", "warmup", "seq_len", "timed_train_steps",
              "timed_infer_passes")
ROW_KEYS = REQUIRED_KEYS + EXTRA_KEYS

MEMORY_KINDS = {
    "cpu_peak_rss_growth": "cpu: growth of peak RSS in a fresh process per method (VmHWM reset after the model "
                           "is built; weights and the Python runtime excluded)",
    "cpu_peak_rss_growth_unreset": "cpu: growth of peak RSS in a fresh process per method (VmHWM could not be "
                                   "reset, so a build-time peak may hide part of the growth)",
    "cuda_peak_allocated_growth": "cuda: peak torch.cuda.max_memory_allocated during the training steps minus "
                                  "the memory allocated before them (weights, input batch)",
}

# Targets from the performance issue, stated for shape:clip-vit-base-patch16, batch 8, CPU.
# The CPU-time lines restate the step targets in process CPU time, which other load on a
# shared machine inflates less than wall time (a descheduled thread accrues none).
TARGETS = (
    ("mitp", "full_finetune", "train_step_ms", "step", 0.4),
    ("mitp", "full_finetune", "train_step_cpu_ms", "step CPU time", 0.4),
    ("mitp", "full_finetune", "peak_memory_mb", "peak memory", 0.3),
    ("mitp", "pmf", "train_step_ms", "step", 1.3),
    ("mitp", "pmf", "train_step_cpu_ms", "step CPU time", 1.3),
)


@dataclass
class BenchSettings:
    backbone: str = "shape:clip-vit-base-patch16"
    methods: tuple[str, ...] = DEFAULT_METHODS
    batch_size: int = 8
    steps: int = 3           # timed training steps (and inference passes) per method per round
    rounds: int = 3
    warmup: int = 2          # untimed training steps and inference passes per method, before round 1
    seq_len: int = 32
    device: str | None = None   # None: cuda if available, else cpu
    threads: int | None = None  # None: every core this process may use
    num_classes: int = 101
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0

    def resolved(self) -> BenchSettings:
        import torch

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        threads = self.threads or available_cores()
        return dataclasses.replace(self, methods=tuple(self.methods), device=device, threads=threads)


@dataclass
class BenchResult:
    settings: BenchSettings
    rows: list[dict]
    # (round, method) in the order the workers were asked; round 0 is the warm-up.
    schedule: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def memory_kind(self) -> str:
        return self.rows[0]["memory_kind"] if self.rows else ""

    def checks(self) -> list[str]:
        return target_checks(self.rows)


class BenchError(RuntimeError):
    """A worker failed; ``user`` is True when the cause is the input (unknown spec, bad config)."""

    def __init__(self, message: str, user: bool = False):
        super().__init__(message)
        self.user = user


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --- memory probes -------------------------------------------------------------------------------

def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def _rss_mb() -> float:
    value = _proc_status_mb("VmRSS")
    if value is None:  # no /proc: fall back to the process peak, the best stdlib measure there is
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return value


def _peak_rss_mb() -> float:
    value = _proc_status_mb("VmHWM")
    if value is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return value


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _proc_status_mb("VmHWM") is not None


# --- worker side ---------------------------------------------------------------------------------

class _Worker:
    """One method on one backbone, built once; runs timed steps on request."""

    def __init__(self, settings: BenchSettings, method: str):
        import torch

        from mitp.backbones import build_backbone
        from mitp.methods import build_model, make_config
        from .train.setup import make_optimizer

        torch.set_num_threads(settings.threads)
        self.torch = torch
        self.settings = settings
        self.method = method
        self.device = torch.device(settings.device)
        backbone = build_backbone(settings.backbone, device=self.device)
        torch.manual_seed(settings.seed)
        self.model = build_model(make_config(method, num_classes=settings.num_classes), backbone).to(self.device)
        generator = torch.Generator().manual_seed(settings.seed)
        batch = backbone.random_batch(settings.batch_size, settings.seq_len, generator=generator)
        labels = torch.randint(0, settings.num_classes, (settings.batch_size,), generator=generator)
        self.inputs = {key: value.to(self.device) for key, value in batch.items()}
        self.labels = labels.to(self.device)
        self.optimizer = make_optimizer(self.model, settings.lr, settings.weight_decay)  # as mitp train does
        self._baseline = None  # memory before the first training step, and whether the peak was reset
        self.memory = None     # peak growth, base, peak total and kind, after the latest training call
        self.cuda = self.device.type == "cuda"

    def info(self) -> dict:
        return {"trainable_params": self.model.num_parameters(True), "total_params": self.model.num_parameters(),
                "pid": os.getpid(), "threads": self.torch.get_num_threads()}

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def _train_step(self) -> tuple[float, float]:
        from .train.step import train_step

        self.model.train()
        self._sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = train_step(self.model, {**self.inputs, "labels": self.labels}, self.optimizer,
                          max_grad_norm=self.settings.max_grad_norm)  # clip_scope: mitp train's default
        loss.item()  # the training loop reads the loss every step
        self._sync()
        return time.perf_counter() - start, time.process_time() - cpu_start

    def _infer(self) -> tuple[float, float]:
        torch, model = self.torch, self.model
        model.eval()
        self._sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.no_grad():
            model(**self.inputs)
        self._sync()
        return time.perf_counter() - start, time.process_time() - cpu_start

    def train(self, n: int) -> list[tuple[float, float]]:
        if self._baseline is None:  # before the first training step ever
            self._baseline = self._memory_before()
        times = [self._train_step() for _ in range(n)]
        # The peak counter is never reset again, so this is the peak over every training step so far
        # (step 1 has no AdamW state yet while its graph is alive; later steps hold both). Inference
        # passes in between peak far lower than a training step.
        self.memory = self._memory_after(*self._baseline)
        return times

    def infer(self, n: int) -> list[tuple[float, float]]:
        return [self._infer() for _ in range(n)]

    def run(self, request: dict) -> dict:
        """Training steps first, then inference passes: ``{"train": n, "infer": n}`` -> (wall, CPU) seconds."""
        return {"train": self.train(request["train"]), "infer": self.infer(request["infer"]),
                "memory": self.memory}

    def _memory_before(self) -> tuple[float, bool]:
        if self.cuda:
            torch = self.torch
            self._sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device) / 2**20, True
        import gc

        gc.collect()
        reset = _reset_peak_rss()
        return _rss_mb(), reset

    def _memory_after(self, base: float, reset: bool) -> dict:
        if self.cuda:
            peak = self.torch.cuda.max_memory_allocated(self.device) / 2**20
            kind = "cuda_peak_allocated_growth"
        else:
            peak = _peak_rss_mb()
            kind = "cpu_peak_rss_growth" if reset else "cpu_peak_rss_growth_unreset"
        return {"peak_memory_mb": max(0.0, peak - base), "model_memory_mb": base, "peak_memory_total_mb": peak,
                "memory_kind": kind}


def _user_error(err: BaseException) -> bool:
    from mitp.backbones import BackboneError
    from mitp.configuration import ConfigError

    return isinstance(err, (BackboneError, ConfigError))


def _worker_main(conn, settings: BenchSettings, method: str) -> None:
    """Entry point of a worker process: build, report, then serve requests until ``close``."""
    try:
        worker = _Worker(settings, method)
        conn.send(("ok", worker.info()))
    except Exception as err:  # noqa: BLE001 - reported to the parent, which raises it there
        conn.send(("error", f"{type(err).__name__}: {err}", _user_error(err)))
        conn.close()
        return
    while True:
        try:
            command, payload = conn.recv()
        except EOFError:  # the parent went away
            break
        if command == "close":
            break
        try:
            conn.send(("ok", worker.run(payload)))
        except Exception as err:  # noqa: BLE001 - reported to the parent
            conn.send(("error", f"{type(err).__name__}: {err}", False))
    conn.close()


# --- parent side ---------------------------------------------------------------------------------

class _WorkerHandle:
    def __init__(self, context, settings: BenchSettings, method: str):
        self.method = method
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, settings, method),
                                       name=f"mitp-bench-{method}", daemon=True)
        self.process.start()
        child.close()

    def receive(self):
        try:
            reply = self.conn.recv()
        except (EOFError, ConnectionError):
            self.process.join(timeout=5)
            code = self.process.exitcode
            hint = " (killed: out of memory?)" if code in (-9, 137) else ""
            raise BenchError(f"the worker for method {self.method!r} died with exit code {code}{hint}") from None
        if reply[0] == "error":
            raise BenchError(f"method {self.method!r}: {reply[1]}", user=reply[2])
        return reply[1]

    def ask(self, payload: dict):
        self.conn.send(("run", payload))
        return self.receive()

    def close(self) -> None:
        try:
            self.conn.send(("close", None))
        except (OSError, ValueError):
            pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        self.conn.close()


def validate(settings: BenchSettings) -> None:
    """Errors that need no worker: unknown or repeated methods, unknown built-in specs, bad numbers."""
    from mitp.backbones import build_backbone, family_of
    from mitp.configuration import ConfigError
    from mitp.methods import get_method

    if not settings.methods:
        raise ConfigError("methods", "no method given")
    seen = set()
    for name in settings.methods:
        get_method(name)  # ConfigError naming the unknown method and the available ones
        if name in seen:
            raise ConfigError("methods", f"{name!r} is listed twice")
        seen.add(name)
    for key, low in (("batch_size", 1), ("steps", 1), ("rounds", 1), ("warmup", 0), ("seq_len", 2),
                     ("num_classes", 2)):
        if getattr(settings, key) < low:
            raise ConfigError(key, f"must be >= {low}, got {getattr(settings, key)}")
    if settings.threads is not None and settings.threads < 1:
        raise ConfigError("threads", f"must be >= 1, got {settings.threads}")
    if settings.device is not None:
        import torch

        try:
            device = torch.device(settings.device)
        except RuntimeError as err:
            raise ConfigError("device", str(err)) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device", "cuda requested but torch sees no CUDA device")
    if family_of(settings.backbone).builtin:  # an unknown shape: a BackboneError now, not in a worker
        build_backbone(settings.backbone, device="meta")


def _walls(times: list[tuple[float, float]]) -> list[float]:
    return [wall for wall, _ in times]


def _timings(reply: dict) -> str:
    return (f"train {_median_ms(_walls(reply['train'])):9.1f} ms/step  "
            f"infer {_median_ms(_walls(reply['infer'])):9.1f} ms/batch")


def _median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


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
        rows.append({
            "method": method, "backbone": settings.backbone, "batch_size": settings.batch_size,
            "trainable_params": infos[method]["trainable_params"],
            "peak_memory_mb": round(mem["peak_memory_mb"], 1),
            "train_step_ms": round(_median_ms(train), 2),
            "infer_samples_per_s": round(settings.batch_size / (infer_ms / 1000), 2),
            "ratio_step_vs_full": None, "ratio_memory_vs_full": None,
            "total_params": infos[method]["total_params"],
            "model_memory_mb": round(mem["model_memory_mb"], 1),
            "peak_memory_total_mb": round(mem["peak_memory_total_mb"], 1),
            "infer_ms": round(infer_ms, 2),
            "train_step_ms_min": round(min(train) * 1000, 2), "train_step_ms_max": round(max(train) * 1000, 2),
            # Process CPU time (all threads) says little on a GPU: only reported on the CPU.
            "train_step_cpu_ms": round(_median_ms(times[method]["train_cpu"]), 2) if on_cpu else None,
            "infer_cpu_ms": round(_median_ms(times[method]["infer_cpu"]), 2) if on_cpu else None,
            "ratio_step_cpu_vs_full": None,
            "device": settings.device, "threads": settings.threads, "memory_kind": mem["memory_kind"],
            "rounds": settings.rounds, "steps": settings.steps, "warmup": settings.warmup,
            "seq_len": settings.seq_len, "timed_train_steps": len(train), "timed_infer_passes": len(infer),
        })
    reference = next((row for row in rows if row["method"] == REFERENCE), None)
    if reference is not None:
        for row in rows:
            row["ratio_step_vs_full"] = _ratio(row["train_step_ms"], reference["train_step_ms"])
            row["ratio_step_cpu_vs_full"] = _ratio(row["train_step_cpu_ms"], reference["train_step_cpu_ms"])
            row["ratio_memory_vs_full"] = _ratio(row["peak_memory_mb"], reference["peak_memory_mb"])
    return rows


def target_checks(rows: list[dict]) -> list[str]:
    """The issue's targets as plain facts, for the pairs of methods that were measured."""
    by_method = {row["method"]: row for row in rows}
    lines = []
    for method, reference, key, what, target in TARGETS:
        if method in by_method and reference in by_method and by_method[reference].get(key):
            ratio = by_method[method][key] / by_method[reference][key]
            verdict = "met" if ratio <= target else "NOT met"
            lines.append(f"{method} {what} / {reference} {what} = {ratio:.2f} (target <= {target}: {verdict})")
    return lines


def run_benchmark(settings: BenchSettings, progress=None) -> BenchResult:
    """Measure every method in ``settings.methods``; ``progress(message)`` hears about each request.

    Workers are spawned, so a script calling this needs the usual ``if __name__ == "__main__":`` guard.
    """
    import multiprocessing

    validate(settings)
    settings = settings.resolved()
    say = progress or (lambda message: None)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    workers: dict[str, _WorkerHandle] = {}
    schedule: list[tuple[int, str]] = []
    times = {m: {"train": [], "infer": [], "train_cpu": [], "infer_cpu": []} for m in settings.methods}
    memory: dict[str, dict] = {}
    infos: dict[str, dict] = {}
    try:
        # Built one after another: every worker holds a whole backbone, so peaks never add up.
        for method in settings.methods:
            say(f"building {method} on {settings.backbone} ({settings.device}, {settings.threads} threads)")
            workers[method] = _WorkerHandle(context, settings, method)
            infos[method] = workers[method].receive()
        if settings.warmup:
            for method in settings.methods:
                reply = workers[method].ask({"train": settings.warmup, "infer": settings.warmup})
                schedule.append((0, method))
                memory[method] = reply["memory"]
                say(f"warm-up   {method:<14} {_timings(reply)}")
        for round_index in range(1, settings.rounds + 1):
            for method in settings.methods:
                reply = workers[method].ask({"train": settings.steps, "infer": settings.steps})
                schedule.append((round_index, method))
                memory[method] = reply["memory"]
                for phase in ("train", "infer"):
                    times[method][phase] += [wall for wall, _ in reply[phase]]
                    times[method][phase + "_cpu"] += [cpu for _, cpu in reply[phase]]
                say(f"round {round_index}/{settings.rounds} {method:<14} {_timings(reply)}")
    finally:
        for handle in workers.values():
            handle.close()
    rows = make_rows(settings, infos, times, memory)
    notes = [MEMORY_KINDS.get(rows[0]["memory_kind"], rows[0]["memory_kind"]),
             (f"{settings.device}, {settings.threads} torch threads per worker; one worker process per method, "
              f"asked in turn (never two at once); {settings.rounds} rounds x {settings.steps} timed steps after "
              f"{settings.warmup} warm-up steps; medians over all rounds")]
    if settings.device == "cpu":
        notes.append(f"train step CPU: process CPU time of a step summed over its threads; unloaded it is close "
                     f"to {settings.threads} x the wall time, and much less means the workers waited for cores "
                     "(other load on the machine), which inflates wall time more than CPU time")
    if REFERENCE not in settings.methods:
        notes.append(f"{REFERENCE} was not measured: the ratio columns are null")
    return BenchResult(settings, rows, schedule, notes, time.perf_counter() - started)


# --- reports -------------------------------------------------------------------------------------

def _fmt_ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _fmt_number(value) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _fmt_params(n: int) -> str:
    return f"{n:,}"


COLUMNS = ("method", "trainable params", "peak train memory (MB)", "train step (ms)", "train step CPU (ms)",
           "inference (samples/s)", "step vs full", "step CPU vs full", "memory vs full")


def _cells(row: dict) -> list[str]:
    return [row["method"], _fmt_params(row["trainable_params"]), f"{row['peak_memory_mb']:,.1f}",
            f"{row['train_step_ms']:,.1f}", _fmt_number(row["train_step_cpu_ms"]), f"{row['infer_samples_per_s']:,.2f}",
            _fmt_ratio(row["ratio_step_vs_full"]), _fmt_ratio(row["ratio_step_cpu_vs_full"]),
            _fmt_ratio(row["ratio_memory_vs_full"])]


# Short headers for the terminal table, in the order of COLUMNS.
SHORT_COLUMNS = ("method", "trainable", "peak MB", "step ms", "CPU ms", "infer/s", "step/full", "CPU/full",
                 "mem/full")


def render_table(result: BenchResult):
    from rich.table import Table

    s = result.settings
    table = Table(title=f"mitp bench: {s.backbone}, batch {s.batch_size}, text length {s.seq_len}, {s.device}",
                  caption="peak MB: peak training memory; step ms: median training step (wall); CPU ms: its "
                          "process CPU time, all threads; infer/s: inference samples per second; */full: ratio "
                          "to full_finetune")
    for i, name in enumerate(SHORT_COLUMNS):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in result.rows:
        table.add_row(*_cells(row))
    return table


def to_markdown(result: BenchResult, command: str | None = None, date: str | None = None) -> str:
    s = result.settings
    lines = [(f"Backbone `{s.backbone}`, batch {s.batch_size}, text length {s.seq_len}, device {s.device}, "
              f"{s.threads} threads."), ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(COLUMNS) - 1)) + "|")
    for row in result.rows:
        lines.append("| " + " | ".join(_cells(row)) + " |")
    lines.append("")
    for note in result.notes:
        lines.append(f"- {note}")
    for check in result.checks():
        lines.append(f"- {check}")
    if command or date:
        lines.append("")
        if command:
            lines += ["Reproduce with:", "", "```", command, "```", ""]
        if date:
            lines.append(f"Measured {date}; the whole run took {result.wall_seconds:.0f} s.")
    return "\n".join(lines) + "\n"
