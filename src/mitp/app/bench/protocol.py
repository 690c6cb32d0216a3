"""The worker side of `mitp bench`: one fresh process per method, asked for timed steps over a pipe.

Memory is read in the worker's own process: CPU, the growth of the peak resident set (VmHWM,
reset through ``/proc/self/clear_refs``); CUDA, ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import gc
import os
import time

import torch

from mitp.backbones import BackboneError, build_backbone
from mitp.configuration import ConfigError
from mitp.methods import build_model, make_config

from ..procmem import peak_rss_mb, reset_peak_rss, rss_mb
from ..train.setup import make_optimizer
from ..train.step import train_step
from ..workers import WorkerHandle, serve_requests
from .settings import BenchError, BenchSettings, parse_method_spec


class _Worker:
    """One method on one backbone, built once; runs timed steps on request."""

    def __init__(self, settings: BenchSettings, method: str):
        torch.set_num_threads(settings.threads)
        self.settings = settings
        self.device = torch.device(settings.device)
        self.cuda = self.device.type == "cuda"
        backbone = build_backbone(settings.backbone, device=self.device)
        torch.manual_seed(settings.seed)
        name, overrides = parse_method_spec(method)
        config = make_config(name, num_classes=settings.num_classes, **overrides)
        self.model = build_model(config, backbone).to(self.device)
        generator = torch.Generator().manual_seed(settings.seed)
        batch = backbone.random_batch(settings.batch_size, settings.seq_len, generator=generator)
        labels = torch.randint(0, settings.num_classes, (settings.batch_size,), generator=generator)
        self.inputs = {key: value.to(self.device) for key, value in batch.items()}
        self.labels = labels.to(self.device)
        self.optimizer = make_optimizer(self.model, settings.lr, settings.weight_decay)  # as mitp train does
        self._baseline = None  # memory before the first training step, and whether the peak was reset

    def info(self) -> dict:
        return {
            "trainable_params": self.model.num_parameters(True),
            "total_params": self.model.num_parameters(),
            "pid": os.getpid(),
            "threads": torch.get_num_threads(),
        }

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _timed(self, work) -> tuple[float, float]:
        """Wall and process CPU seconds of ``work()``, the device synchronised before and after."""
        self._sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        work()
        self._sync()
        return time.perf_counter() - start, time.process_time() - cpu_start

    def _train_step(self) -> None:
        inputs = {**self.inputs, "labels": self.labels}
        # clip_scope left at mitp train's default
        loss = train_step(self.model, inputs, self.optimizer, max_grad_norm=self.settings.max_grad_norm)
        loss.item()  # the training loop reads the loss every step

    def _infer(self) -> None:
        with torch.no_grad():
            self.model(**self.inputs)

    def run(self, request: dict) -> dict:
        """Training steps first, then inference passes: ``{"train": n, "infer": n}`` -> (wall, CPU) seconds each,
        and the training memory."""
        if self._baseline is None:  # before the first training step ever
            self._baseline = self._memory_before()
        self.model.train()
        train = [self._timed(self._train_step) for _ in range(request["train"])]
        # The peak counter is never reset again, so this is the peak over every training step so far
        # (step 1 has no AdamW state yet while its graph is alive; later steps hold both). Inference
        # passes in between peak far lower than a training step.
        memory = self._memory_after(*self._baseline)
        self.model.eval()
        return {"train": train, "infer": [self._timed(self._infer) for _ in range(request["infer"])], "memory": memory}

    def _memory_before(self) -> tuple[float, bool]:
        if self.cuda:
            self._sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device) / 2**20, True
        gc.collect()
        reset = reset_peak_rss()
        return rss_mb(), reset

    def _memory_after(self, base: float, reset: bool) -> dict:
        if self.cuda:
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            kind = "cuda_peak_allocated_growth"
        else:
            peak = peak_rss_mb()
            kind = "cpu_peak_rss_growth" if reset else "cpu_peak_rss_growth_unreset"
        return {
            "peak_memory_mb": max(0.0, peak - base),
            "model_memory_mb": base,
            "peak_memory_total_mb": peak,
            "memory_kind": kind,
        }


def _worker_main(conn, settings: BenchSettings, method: str) -> None:
    """Entry point of a worker process: build, report, then serve requests until ``close``."""

    def start():
        worker = _Worker(settings, method)
        return worker.info(), worker.run

    serve_requests(conn, start, user_errors=(BackboneError, ConfigError))


def start_worker(context, settings: BenchSettings, method: str) -> WorkerHandle:
    """A fresh process building ``method``; the handle asks it for timed steps."""
    return WorkerHandle(context, _worker_main, (settings, method), f"method {method!r}", BenchError)
