"""Training on Hugging Face Accelerate: one CPU, one GPU, or many processes.

The global batch is split across processes (``split_batches``), so a run gives the same
updates whatever the number of processes. Checkpoints hold trainable tensors only, plus
optimizer, scheduler, RNG and loop position, so ``--resume`` continues exactly.
"""

from __future__ import annotations

import math
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, gather_object, set_seed

from mitp.backbones import build_backbone
from mitp.checkpoint import load_trainable
from mitp.configuration import ConfigError
from mitp.data.dataset import (SkipCounter, build_datasets, check_splits, invalid_line_counts, make_dataloader,
                            model_inputs)
from mitp.data.errors import EmptySplit
from mitp.methods import build_model
from mitp.metrics import SELECTION_METRIC, compute_metrics
from mitp.params import component_of, parameter_breakdown
from .config import RunConfig, resolve_method_config, resolved
from .rundir import MetricsLog, checkpoint_dir, load_training_state, save_checkpoint_dir


def make_accelerator(config: RunConfig) -> Accelerator:
    precision = config.train.mixed_precision
    if precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.mixed_precision", "fp16 needs a CUDA device; use bf16 or no on CPU")
    # Accelerate only runs multi-process CPU training (gloo) when told it is on the CPU.
    on_cpu = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    return Accelerator(cpu=on_cpu, mixed_precision=precision, gradient_accumulation_steps=config.train.grad_accum_steps,
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def lr_lambda(total_steps: int, warmup_ratio: float, min_ratio: float, kind: str):
    warmup = int(round(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model, lr: float, weight_decay: float, method_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """AdamW over the method's parameter groups; the fused kernel where torch has one (much faster)."""
    groups = model.param_groups(lr, method_lr_scale)
    params = [p for group in groups for p in group["params"]]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


def clip_gradients(accelerator: Accelerator, optimizer, max_norm: float, scope: str) -> None:
    """Clip to ``max_norm`` over all trainable tensors (global) or per optimizer group (per_group)."""
    groups = [group["params"] for group in optimizer.param_groups]
    for params in ([p for group in groups for p in group],) if scope == "global" else groups:
        accelerator.clip_grad_norm_(params, max_norm)


def gradient_norms(model) -> dict[str, float]:
    """L2 norm of the gradient per component (``text_prompt``, ``hub.vision_proj``, ``head.classifier``, ...)."""
    squares: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        if param.grad is not None:
            key = f"grad_norm/{component_of(name)}"
            squares[key] = squares.get(key, 0.0) + param.grad.detach().float().pow(2).sum()
    return {key: value.sqrt().item() for key, value in squares.items()}


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    # ru_maxrss is in KiB on Linux: the process's peak resident memory, backbone included.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_peak_rss"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class RunParts:
    """Everything a run builds from its config (shared by train, evaluate and predict)."""

    config: RunConfig          # resolved: the method section is complete
    backbone: object
    datasets: dict
    model: torch.nn.Module


def build_run(config: RunConfig, splits=("train", "val", "test")) -> RunParts:
    data_dir = Path(config.data)
    if not (data_dir / "labels.json").is_file():
        raise ConfigError("data", f"{data_dir}: not a prepared dataset (no labels.json); see `mitp prepare`")
    backbone = build_backbone(config.backbone)
    datasets = build_datasets(data_dir, preprocessor=config.preprocessor(backbone),
                              on_bad_sample=config.train.on_bad_sample, splits=splits,
                              allow_external_paths=config.allow_external_paths)
    check_splits(datasets)  # before anything trains: no empty split, no id in two splits
    any_split = next(iter(datasets.values()))
    method_config = resolve_method_config(config, any_split.num_classes, any_split.task)
    set_seed(config.seed)  # model init is part of the seeded run
    model = build_model(method_config, backbone)
    return RunParts(resolved(config, method_config), backbone, datasets, model)


def plain_forward(model, batch: dict, labels: bool = True):
    inputs = model_inputs(batch)
    if not labels:
        inputs.pop("labels", None)
    return model(**inputs)


@torch.no_grad()
def evaluate(model, loader, accelerator: Accelerator, task: str, threshold: float = 0.5, forward=None,
             skips: SkipCounter | None = None, split: str = "split") -> dict:
    """Metrics and mean loss over a loader; samples are gathered across processes without duplicates.

    ``forward(batch)`` returns the model output for a batch (default: the model on the raw inputs);
    ``skips`` counts the samples skipped as bad. A split with no sample left is an EmptySplit error.
    With several processes, rows are gathered with their sample ids and de-duplicated by id: the
    processes' shares of a batch differ in size when bad samples are skipped (even to zero), and the
    padding that evens out the last batch repeats samples; every process joins every gather.
    """
    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    forward = forward or (lambda batch: plain_forward(model, batch, labels=False))
    rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for batch in loader:
        mine = [("skipped", entry) for entry in batch.get("skipped", [])]
        if len(batch["ids"]):
            logits = forward(batch).logits.float().cpu()
            mine += [("row", (i, logit, label)) for i, logit, label in zip(batch["ids"], logits, batch["labels"].cpu())]
        if accelerator.num_processes > 1:
            mine = gather_object(mine)
        if skips is not None:
            skips.update({"skipped": [entry for kind, entry in mine if kind == "skipped"]})
        for sample_id, logit, label in (entry for kind, entry in mine if kind == "row"):
            rows.setdefault(sample_id, (logit, label))
    if not rows:
        raise EmptySplit(None, None, f"{split}: every sample was skipped as bad (on_bad_sample: skip); "
                                     "nothing to evaluate")
    logits = torch.stack([logit for logit, _ in rows.values()])
    labels = torch.stack([label for _, label in rows.values()])
    metrics = compute_metrics(logits, labels, task, threshold)
    return {"metrics": metrics, "loss": unwrapped.loss(logits, labels).item(), "samples": len(labels)}


class Trainer:
    def __init__(self, config: RunConfig, run_dir: Path, resume: bool = False, console=None):
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.accelerator = make_accelerator(config)
        self.parts = build_run(config)
        self.config = self.parts.config
        self.console = console
        self.main = self.accelerator.is_main_process
        self.task = self.parts.model.config.task
        self.selection = SELECTION_METRIC[self.task]
        n = self.accelerator.num_processes
        dropped = invalid_line_counts(self.parts.datasets)
        if dropped:
            self._log("left out invalid manifest lines (on_bad_sample: skip): " + "; ".join(
                f"{split}: " + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
                for split, kinds in dropped.items()))
        self.skips = {split: SkipCounter() for split in self.parts.datasets}  # bad images, per split
        self._filler_batch = None
        self.stores = self._open_stores(n)
        self.cached_loaders = {}
        for key, size in (("train.batch_size", self.config.train.batch_size),
                          ("eval.batch_size", self.config.eval_batch_size())):
            if size % n:
                raise ConfigError(key, f"{size} is not divisible by the {n} processes")

    # --- setup -------------------------------------------------------------------------------
    def _open_stores(self, num_processes: int) -> dict:
        """Prefix caches per split when ``train.cache_prefix`` is on and the method has a frozen prefix."""
        if not self.config.train.cache_prefix:
            return {}
        model = self.parts.model
        depths = model.frozen_prefix()
        if depths is None:
            self._log(f"train.cache_prefix: {self.config.method} trains its whole backbone; nothing to cache")
            return {}
        from ..prefix_cache import default_root, open_store

        root = Path(self.config.train.cache_dir) if self.config.train.cache_dir else default_root()
        # Several processes share one store per split: each fills the rows of its own batches and reads
        # them all once the store is complete. The first process creates the files, the others open them.
        with self.accelerator.main_process_first():
            stores = {split: open_store(root, ds, self.parts.backbone, depths)
                      for split, ds in self.parts.datasets.items()}
        size = sum(store.disk_bytes() for store in stores.values()) / 2**20
        self._log(f"prefix cache (text layers < {depths[0]}, vision layers < {depths[1]}): {size:.1f} MB "
                  f"when full, under {root}; safe to delete at any time")
        return stores

    def _loaders(self):
        t, seed = self.config.train, self.config.seed
        ds = self.parts.datasets
        train = make_dataloader(ds["train"], t.batch_size, shuffle=True, seed=seed, num_workers=t.num_workers)
        val = make_dataloader(ds["val"], self.config.eval_batch_size(), shuffle=False, num_workers=t.num_workers)
        test = make_dataloader(ds["test"], self.config.eval_batch_size(), shuffle=False, num_workers=t.num_workers)
        return train, val, test

    def _cached_loader(self, split: str, loader):
        """Once a split's prefix cache is full, a loader of ids and labels only (same order), built once."""
        store = self.stores.get(split)
        if store is None or not self._complete(store):
            return loader
        if split not in self.cached_loaders:
            from ..prefix_cache import CachedSplit

            size = self.config.train.batch_size if split == "train" else self.config.eval_batch_size()
            cached = make_dataloader(CachedSplit(self.parts.datasets[split], store), size,
                                     shuffle=split == "train", seed=self.config.seed)
            self.cached_loaders[split] = self.accelerator.prepare(cached)
        return self.cached_loaders[split]

    def _filler(self) -> dict:
        """A one-sample batch of the first training sample that loads (built once)."""
        if self._filler_batch is None:
            dataset = self.parts.datasets["train"]
            for i in range(len(dataset)):
                item = dataset[i]
                if isinstance(item, dict):
                    self._filler_batch = dataset.collate([item])
                    break
            else:
                raise EmptySplit(None, None, "train: every sample was skipped as bad; nothing to train on")
        return self._filler_batch

    def _complete(self, store) -> bool:
        """Whether every process sees the store complete (they fill disjoint rows; all must agree)."""
        store.flush()
        self.accelerator.wait_for_everyone()
        done = torch.tensor(float(store.complete), device=self.accelerator.device)
        return bool(self.accelerator.reduce(done, reduction="sum").item() == self.accelerator.num_processes)

    def _batches(self, split: str, loader):
        """The loader's batches; samples skipped as bad are marked done in the split's prefix cache,
        so the cache completes and later epochs never decode them again."""
        store = self.stores.get(split)
        for batch in loader:
            if store is not None and batch.get("skipped"):
                store.mark_skipped([x["id"] for x in batch["skipped"]])
            yield batch

    def _forward(self, batch: dict, split: str, labels: bool = True):
        """The model on a batch, through the split's prefix cache when there is one.

        Training goes through the distributed wrapper; evaluation through the bare model, since
        the wrapper's forward synchronises buffers across processes, and a process whose share of
        a batch was all skipped does not run a forward."""
        model = self.model if split == "train" else self.accelerator.unwrap_model(self.model)
        store = self.stores.get(split)
        if store is None:
            return plain_forward(model, batch, labels)
        ids = batch["ids"]
        if not store.has(ids):  # only batches that still miss rows run the frozen prefix
            inputs = model_inputs(batch)
            inputs.pop("labels", None)
            prefix = self.accelerator.unwrap_model(self.model).encode_prefix(**inputs)
            store.put(ids, *prefix)
        prefix = store.get(ids, device=self.accelerator.device)  # fp16-rounded, as every later epoch sees it
        return model(prefix=prefix, labels=batch["labels"] if labels else None)

    def _log(self, message: str) -> None:
        if self.main and self.console is not None:
            self.console.print(message)

    def fit(self) -> dict:
        acc, t = self.accelerator, self.config.train
        model = self.parts.model
        optimizer = make_optimizer(model, t.lr, t.weight_decay, t.method_lr_scale)
        train_loader, val_loader, test_loader = self._loaders()
        steps_per_epoch = math.ceil(len(train_loader) / t.grad_accum_steps)
        total_steps = steps_per_epoch * t.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(total_steps, t.warmup_ratio, t.min_lr_ratio, t.scheduler))
        model, optimizer, train_loader, val_loader, test_loader, scheduler = acc.prepare(
            model, optimizer, train_loader, val_loader, test_loader, scheduler)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        unwrapped = acc.unwrap_model(model)

        log = MetricsLog(self.run_dir / "metrics.jsonl")
        pos = {"epoch": 0, "batch": 0, "step": 0, "loss_sum": 0.0, "samples": 0, "skipped": 0,
               "best": None, "best_epoch": None, "train_seconds": 0.0, "skipped_ids": {}}
        if self.resume:
            directory, state = load_training_state(self.run_dir)
            load_trainable(unwrapped, directory / "trainable.safetensors")
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            pos.update(state["position"])
            for split, kinds in pos["skipped_ids"].items():
                self.skips[split].ids = {kind: set(ids) for kind, ids in kinds.items()}
            if self.main:
                log.truncate_after(pos["epoch"], pos["step"])
            self._log(f"resumed from {directory} at epoch {pos['epoch'] + 1}, batch {pos['batch']}, "
                      f"step {pos['step']}")
        acc.wait_for_everyone()

        writer = self._tensorboard()
        skips = self.skips["train"]
        started = time.perf_counter() - pos["train_seconds"]
        for epoch in range(pos["epoch"], t.epochs):
            epoch_started = time.perf_counter()
            model.train()
            epoch_loader = self._cached_loader("train", train_loader)
            epoch_loader.set_epoch(epoch)
            loader = acc.skip_first_batches(epoch_loader, pos["batch"]) if pos["batch"] else epoch_loader
            with self._progress(len(epoch_loader), pos["batch"], epoch) as advance:
                for batch in self._batches("train", loader):
                    pos["batch"] += 1
                    skipped = batch.get("skipped", [])
                    if acc.num_processes > 1 and self.config.train.on_bad_sample == "skip":
                        skipped = gather_object(list(skipped))  # every process counts all of them
                    pos["skipped"] += skips.update({"skipped": skipped})
                    empty = len(batch["ids"]) == 0  # every sample of this process's share was bad
                    if empty and acc.num_processes == 1:
                        continue
                    with acc.accumulate(model):
                        if empty:  # a zero-weight step on a good sample keeps this process in the all-reduce
                            loss = self._forward(self._filler(), "train").loss * 0.0
                        else:
                            loss = self._forward(batch, "train").loss
                        acc.backward(loss)
                        diagnose = self.main and acc.sync_gradients and (pos["step"] + 1) % t.log_every_steps == 0
                        grad_norms = gradient_norms(unwrapped) if diagnose else {}  # before clipping
                        if acc.sync_gradients and t.max_grad_norm is not None:
                            clip_gradients(acc, optimizer, t.max_grad_norm, t.clip_scope)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad()
                    if not empty:
                        pos["loss_sum"] += loss.item() * len(batch["ids"])
                        pos["samples"] += len(batch["ids"])
                        advance(loss.item(), len(batch["ids"]) * acc.num_processes)
                    if acc.sync_gradients:
                        pos["step"] += 1
                        if diagnose:
                            self._log_diagnostics(log, writer, epoch, pos["step"], loss.item(),
                                                  {**grad_norms, **unwrapped.diagnostics()})
                        if t.checkpoint_every_steps and pos["step"] % t.checkpoint_every_steps == 0:
                            pos["train_seconds"] = time.perf_counter() - started
                            self._save_last(unwrapped, pos)
            if pos["skipped"]:
                self._log(skips.report())
            if not acc.reduce(torch.tensor(float(pos["samples"])), reduction="sum").item() and not pos["step"]:
                raise EmptySplit(None, None, "train: every sample of the first epoch was skipped as bad "
                                             "(on_bad_sample: skip); nothing to train on")
            pos["epoch_seconds"] = time.perf_counter() - epoch_started
            self._end_epoch(epoch, pos, val_loader, log, writer, unwrapped, started, final=epoch == t.epochs - 1)
            skips.reset()

        results = self._final(unwrapped, val_loader, test_loader, pos, time.perf_counter() - started)
        if writer:
            writer.close()
        return results

    def _end_epoch(self, epoch, pos, val_loader, log, writer, unwrapped, started, final: bool) -> None:
        acc, t = self.accelerator, self.config.train
        totals = acc.reduce(torch.tensor([pos["loss_sum"], float(pos["samples"])]), reduction="sum")
        train_loss = (totals[0] / totals[1].clamp_min(1)).item()
        lr = self.scheduler.get_last_lr()[0]
        # epoch_seconds: the training pass alone (a resumed epoch counts from the resume)
        records = [{"epoch": epoch + 1, "step": pos["step"], "split": "train", "metrics": {}, "loss": train_loss,
                    "lr": lr, "epoch_seconds": round(pos.pop("epoch_seconds", 0.0), 3)}]
        improved = False
        if (epoch + 1) % self.config.eval.every_epochs == 0 or final:
            val = self._evaluate("val", val_loader)
            records.append({"epoch": epoch + 1, "step": pos["step"], "split": "val", "metrics": val["metrics"],
                            "loss": val["loss"], "lr": lr})
            score = val["metrics"][self.selection]
            improved = pos["best"] is None or score > pos["best"]
            if improved:
                pos["best"], pos["best_epoch"] = score, epoch + 1
            self._log(f"epoch {epoch + 1}/{t.epochs}: train loss {train_loss:.4f}, val loss {val['loss']:.4f}, "
                      f"val {self.selection} {score:.4f}" + ("  (best)" if improved else ""))
        if self.main:
            for record in records:
                log.append(record)
                if writer:
                    for name, value in record["metrics"].items():
                        writer.add_scalar(f"{record['split']}/{name}", value, epoch + 1)
                    writer.add_scalar(f"{record['split']}/epoch_loss", record["loss"], epoch + 1)
        if improved:
            self._save(unwrapped, "best")
        pos.update(epoch=epoch + 1, batch=0, loss_sum=0.0, samples=0, skipped=0,
                   train_seconds=time.perf_counter() - started)
        self._save_last(unwrapped, pos)

    def _log_diagnostics(self, log, writer, epoch: int, step: int, loss: float, values: dict) -> None:
        """Per-part gradient norms and the method's own scalars, to metrics.jsonl and TensorBoard."""
        lr = self.scheduler.get_last_lr()[0]
        log.append({"epoch": epoch + 1, "step": step, "split": "diagnostics", "metrics": values, "loss": loss,
                    "lr": lr})
        if writer:
            writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("train/lr", lr, step)
            for name, value in values.items():
                writer.add_scalar(f"diagnostics/{name}", value, step)

    def _evaluate(self, split: str, loader) -> dict:
        batches = self._batches(split, self._cached_loader(split, loader))
        return evaluate(self.model, batches, self.accelerator, self.task, self.config.eval.threshold,
                        forward=lambda batch: self._forward(batch, split, labels=False),
                        skips=self.skips[split], split=split)

    def _save(self, unwrapped, name: str, state: dict | None = None) -> None:
        for store in self.stores.values():
            store.flush()
        self.accelerator.wait_for_everyone()
        if self.main:
            save_checkpoint_dir(self.run_dir, name, unwrapped, state)
        self.accelerator.wait_for_everyone()

    def _save_last(self, unwrapped, pos) -> None:
        pos["skipped_ids"] = {split: {kind: sorted(ids) for kind, ids in counter.ids.items()}
                              for split, counter in self.skips.items() if counter.ids}
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": rng_state(), "position": dict(pos)}
        self._save(unwrapped, "last", state)

    def _final(self, unwrapped, val_loader, test_loader, pos, train_seconds) -> dict:
        acc = self.accelerator
        best_dir = checkpoint_dir(self.run_dir, "best")
        load_trainable(unwrapped, best_dir / "trainable.safetensors")
        val = self._evaluate("val", val_loader)
        test = self._evaluate("test", test_loader)
        breakdown = parameter_breakdown(unwrapped)
        memory, memory_kind = peak_memory_mb(acc.device)
        return {
            "method": self.config.method, "backbone": self.config.backbone, "data": self.config.data,
            "task": self.task, "selection_metric": self.selection,
            "trainable_params": breakdown["trainable_params"], "total_params": breakdown["total_params"],
            "best_epoch": pos["best_epoch"], "val": val["metrics"], "test": test["metrics"],
            "val_loss": val["loss"], "test_loss": test["loss"], "test_samples": test["samples"],
            "peak_memory_mb": round(memory, 1), "peak_memory_kind": memory_kind,
            "train_seconds": round(train_seconds, 2), "epochs": self.config.train.epochs,
            "seed": self.config.seed, "num_processes": acc.num_processes,
            # what on_bad_sample: skip left out: invalid manifest lines, and distinct samples whose
            # image could not be loaded, per split and kind
            "skipped": {"manifest_lines": invalid_line_counts(self.parts.datasets),
                        "images": {split: c.totals() for split, c in self.skips.items() if c.ids}},
        }

    def _tensorboard(self):
        if not self.main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
            self._log("tensorboard not importable: no TensorBoard logs for this run")
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    def _progress(self, total: int, done: int, epoch: int):
        from .progress import epoch_progress

        return epoch_progress(total, done, f"epoch {epoch + 1}/{self.config.train.epochs}",
                              enabled=self.main and self.console is not None, console=self.console)
