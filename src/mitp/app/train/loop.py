"""The training algorithm, on Hugging Face Accelerate: one CPU, one GPU, or many processes.

    for every epoch:
        for every batch: one train_step (forward, backward, clip, optimizer and lr step)
        evaluate on val; keep the best checkpoint; save the last one (with the loop position)
    load the best checkpoint; evaluate val and test; return the results

The global batch is split across processes (``split_batches``), so a run gives the same
updates whatever the number of processes. Under ``on_bad_sample: skip`` the samples that cannot
be loaded are left out before the first epoch (``setup.leave_out_unloadable``): every batch the
loop sees is whole. Checkpoints hold trainable tensors only, plus
optimizer, scheduler, RNG and loop position, so ``--resume`` continues exactly. The loop stays
in one file (over 400 lines) so it reads as one piece; what a run builds first is in ``setup.py``,
one step in ``step.py``, evaluation in ``evaluation.py``, the frozen-prefix cache in
``mitp.app.prefix_cache``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field

from mitp.configuration import ConfigError, flatten
from mitp.data.dataset import invalid_line_counts, left_out_counts, left_out_report, make_dataloader
from mitp.files import WEIGHTS_FILE, CheckpointError
from mitp.metrics import selection_metric
from mitp.model_folder import load_trainable, non_finite_counts
from mitp.params import parameter_breakdown
from mitp.records import Schema, validated
from mitp.runs import STATE, Run

from ..prefix_cache import PrefixCache
from .config import RunConfig
from .evaluation import evaluate
from .progress import epoch_progress
from .rundir import MetricsLog, load_training_state, save_checkpoint_dir
from .setup import (
    build_run,
    compile_model,
    leave_out_unloadable,
    lr_lambda,
    make_accelerator,
    make_optimizer,
    peak_memory_mb,
    rng_state,
    set_rng_state,
)
from .step import gradient_norms, train_step


class TrainingDiverged(RuntimeError):
    """The training loss, a trainable weight or a validation metric became NaN or infinite; the run stops
    before saving anything of it, so its last checkpoint stays its last good one."""


@dataclass
class LoopPosition:
    """Where training is. Saved with every checkpoint, so ``--resume`` continues from exactly here."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches of the current epoch already trained
    step: int = 0  # optimizer steps
    loss_sum: float = 0.0  # the current epoch's training loss, summed over its samples
    samples: int = 0
    best: float | None = None  # best validation selection metric so far, and its epoch
    best_epoch: int | None = None
    train_seconds: float = 0.0
    # split -> ids left out before training because their image cannot be loaded (on_bad_sample: skip);
    # None where unknown
    left_out: dict | None = field(default_factory=dict)

    @classmethod
    def from_state(cls, state: dict, where: Path) -> LoopPosition:
        return cls(**validated(where, PositionRecord, state, where="position.").model_dump())


Count = Annotated[int, Field(ge=0)]


class PositionRecord(Schema):
    """A saved :class:`LoopPosition`, every key required."""

    epoch: Count
    batch: Count
    step: Count
    loss_sum: float
    samples: Count
    best: float | None
    best_epoch: int | None
    train_seconds: float
    left_out: dict[Literal["train", "val", "test"], list[str]] | None


def tracker_config(config: RunConfig) -> dict:
    """The resolved run config as flat scalars (``train.lr``), what every tracker can store."""
    return {
        key: value if isinstance(value, (int, float, str, bool)) else str(value)
        for key, value in flatten(config.to_dict()).items()
    }


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        resume: bool = False,
        console=None,
        on_validation=None,
        test: bool = True,
    ):
        """``on_validation(epoch, score)`` hears each validation's selection metric once the epoch is saved
        (a sweep's pruner; it may raise to stop the run); ``test=False`` leaves the test split unread."""
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.console = console
        self.on_validation = on_validation
        self.test = test
        config = config.for_method(config.method)  # its methods.<name> keys (model and train) merged in
        self.accelerator = make_accelerator(config, self.run_dir)
        self.main = self.accelerator.is_main_process
        self.parts = build_run(config)
        self.config = self.parts.config
        self.task = self.parts.model.config.task
        t, fixed = self.config.train, self.config.eval.threshold
        self.model_folder = {  # what every checkpoint's config.json records besides the model (mitp.files)
            "labels": self.parts.datasets["train"].label_space,
            "preprocessing": {"max_text_length": t.max_text_length, "image_size": t.image_size},
            "threshold": fixed if self.task == "multi_label" and fixed != "auto" else None,
            "data": self.config.data,
            "source": str(self.run_dir),
        }
        try:
            self.selection = selection_metric(self.task, self.config.eval.select)
        except ValueError as err:
            raise ConfigError("eval.select", str(err)) from err
        n = self.accelerator.num_processes
        for key, size in (
            ("train.batch_size", self.config.train.batch_size),
            ("eval.batch_size", self.config.eval_batch_size()),
        ):
            if size % n:
                raise ConfigError(key, f"{size} is not divisible by the {n} processes")
        dropped = invalid_line_counts(self.parts.datasets)
        if dropped:
            self._log(
                "left out invalid manifest lines (on_bad_sample: skip): "
                + "; ".join(
                    f"{split}: " + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
                    for split, kinds in dropped.items()
                )
            )
        if self.config.train.on_bad_sample == "skip":
            checked = {split: ds for split, ds in self.parts.datasets.items() if split != "test" or test}
            leave_out_unloadable(checked, self.accelerator, self.config.train.num_workers, self.console)
            report = left_out_report(self.parts.datasets)
            if report:
                self._log(report)
        batch_sizes = {
            "train": self.config.train.batch_size,
            "val": self.config.eval_batch_size(),
            "test": self.config.eval_batch_size(),
        }
        self.cache = PrefixCache.open(self.config, self.parts, self.accelerator, batch_sizes, log=self._log)

    # --- the algorithm -------------------------------------------------------------------------
    def fit(self) -> dict:
        acc, t = self.accelerator, self.config.train
        loaders = self._prepare()
        position = self._resume() if self.resume else LoopPosition()
        acc.wait_for_everyone()
        log = MetricsLog(Run(self.run_dir).metrics_path)
        self._start_tracking()
        started = time.perf_counter() - position.train_seconds
        for epoch in range(position.epoch, t.epochs):
            epoch_started, cpu_started = time.perf_counter(), time.process_time()
            self._train_epoch(epoch, position, loaders["train"], log, started)
            self._end_epoch(
                epoch,
                position,
                loaders["val"],
                log,
                started,
                epoch_seconds=(time.perf_counter() - epoch_started, time.process_time() - cpu_started),
                final=epoch == t.epochs - 1,
            )
        results = self._final(loaders, position, time.perf_counter() - started)
        acc.end_training()
        return results

    def _prepare(self) -> dict:
        """Optimizer, schedule and loaders, wrapped by Accelerate."""
        acc, t, ds = self.accelerator, self.config.train, self.parts.datasets
        if t.compile:
            compile_model(self.parts.model)
        optimizer = make_optimizer(self.parts.model, t.lr, t.weight_decay, t.method_lr_scale)
        loaders = {
            split: make_dataloader(
                ds[split], size, shuffle=split == "train", seed=self.config.seed, num_workers=t.num_workers
            )
            for split, size in self.cache.batch_sizes.items()
        }
        total_steps = math.ceil(len(loaders["train"]) / t.grad_accum_steps) * t.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(total_steps, t.warmup_ratio, t.min_lr_ratio, t.scheduler)
        )
        self.model, self.optimizer, train, val, test, self.scheduler = acc.prepare(
            self.parts.model, optimizer, loaders["train"], loaders["val"], loaders["test"], scheduler
        )
        self.unwrapped = acc.unwrap_model(self.model)
        return {"train": train, "val": val, "test": test}

    def _resume(self) -> LoopPosition:
        directory, state = load_training_state(self.run_dir)
        load_trainable(self.unwrapped, directory / WEIGHTS_FILE)
        position = LoopPosition.from_state(state["position"], directory / f"{STATE}.json")
        try:  # what torch and the RNGs accept is checked by loading it
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
            raise CheckpointError(
                f"{directory / f'{STATE}.json'}: the optimizer, scheduler or RNG state does "
                f"not fit this run ({type(err).__name__}: {str(err)[:200]})"
            ) from err
        if position.left_out is not None and position.left_out != self._left_out():
            raise CheckpointError(
                f"{directory / f'{STATE}.json'}: before training the run left out samples whose image could not "
                f"be loaded ({_ids(position.left_out)}), but now it would leave out {_ids(self._left_out())}: "
                "the data changed, and the batches would differ from those it trained on. Restore the data, or "
                "train it again with --overwrite"
            )
        if self.main:
            MetricsLog(Run(self.run_dir).metrics_path).truncate_after(position.epoch, position.step)
        self._log(
            f"resumed from {directory} at epoch {position.epoch + 1}, batch {position.batch}, step {position.step}"
        )
        return position

    def _train_epoch(self, epoch: int, position: LoopPosition, train_loader, log, started: float) -> None:
        acc, t = self.accelerator, self.config.train
        self.model.train()
        feed = self.cache.feed("train", train_loader, self.unwrapped)
        feed.set_epoch(epoch)
        with self._progress(len(feed), position.batch, epoch) as advance:
            for batch, inputs in feed.iterate(start=position.batch):
                position.batch += 1
                grad_norms = {}
                diagnose = self.main and (position.step + 1) % t.log_every_steps == 0
                with acc.accumulate(self.model):
                    loss = train_step(
                        self.model,
                        inputs,
                        self.optimizer,
                        self.scheduler,
                        max_grad_norm=t.max_grad_norm,
                        clip_scope=t.clip_scope,
                        sync=acc.sync_gradients,
                        backward=acc.backward,
                        clip=acc.clip_grad_norm_,
                        before_clip=(lambda norms=grad_norms: norms.update(gradient_norms(self.unwrapped)))
                        if diagnose
                        else None,
                    )
                self._check_finite(loss, epoch, position.batch, weights=acc.sync_gradients)
                position.loss_sum += loss.item() * len(batch["ids"])
                position.samples += len(batch["ids"])
                advance(loss.item(), len(batch["ids"]) * acc.num_processes)
                if acc.sync_gradients:
                    position.step += 1
                    if grad_norms:
                        self._log_diagnostics(
                            log, epoch, position.step, loss.item(), {**grad_norms, **self.unwrapped.diagnostics()}
                        )
                    if t.checkpoint_every_steps and position.step % t.checkpoint_every_steps == 0:
                        position.train_seconds = time.perf_counter() - started
                        self._save_last(position)

    def _end_epoch(
        self,
        epoch: int,
        position: LoopPosition,
        val_loader,
        log,
        started: float,
        epoch_seconds: tuple[float, float],
        final: bool,
    ) -> None:
        """Log the epoch, evaluate on val when due, keep the best checkpoint, save the last one."""
        acc, t = self.accelerator, self.config.train
        totals = acc.reduce(torch.tensor([position.loss_sum, float(position.samples)]), reduction="sum")
        train_loss = (totals[0] / totals[1].clamp_min(1)).item()
        lr = self.scheduler.get_last_lr()[0]
        # epoch_seconds (wall) and epoch_cpu_seconds (this process, all threads): the training pass alone
        # (a resumed epoch counts from the resume)
        records = [
            {
                "epoch": epoch + 1,
                "step": position.step,
                "split": "train",
                "metrics": {},
                "loss": train_loss,
                "lr": lr,
                "epoch_seconds": round(epoch_seconds[0], 3),
                "epoch_cpu_seconds": round(epoch_seconds[1], 3),
            }
        ]
        improved, score = False, None
        if (epoch + 1) % self.config.eval.every_epochs == 0 or final:
            val = self._evaluate("val", val_loader)
            records.append(
                {
                    "epoch": epoch + 1,
                    "step": position.step,
                    "split": "val",
                    "metrics": val["metrics"],
                    "loss": val["loss"],
                    "lr": lr,
                    **({"threshold": val["threshold"]} if "threshold" in val else {}),
                }
            )
            bad = {name: v for name, v in {"loss": val["loss"], **val["metrics"]}.items() if not math.isfinite(v)}
            if bad:  # never logged, never best, never saved
                what = f"the validation {', '.join(bad)} became {', '.join(map(str, bad.values()))}"
                raise self._diverged(what, f"at epoch {epoch + 1}")
            score = val["metrics"][self.selection]
            improved = position.best is None or score > position.best
            if improved:
                position.best, position.best_epoch = score, epoch + 1
            self._log(
                f"epoch {epoch + 1}/{t.epochs}: train loss {train_loss:.4f}, val loss {val['loss']:.4f}, "
                f"val {self.selection} {score:.4f}" + ("  (best)" if improved else "")
            )
        if self.main:
            for record in records:
                log.append(record)
        for record in records:  # the experiment tracker (TensorBoard by default); per epoch
            self.accelerator.log(
                {
                    **{f"{record['split']}/{name}": value for name, value in record["metrics"].items()},
                    f"{record['split']}/epoch_loss": record["loss"],
                },
                step=epoch + 1,
            )
        if improved:
            self._save("best")
        position.epoch, position.batch, position.loss_sum, position.samples = epoch + 1, 0, 0.0, 0
        position.train_seconds = time.perf_counter() - started
        self._save_last(position)
        if score is not None and self.on_validation is not None:
            self.on_validation(epoch + 1, score)

    def _final(self, loaders: dict, position: LoopPosition, train_seconds: float) -> dict:
        """The best checkpoint on val and test, and what the run cost."""
        load_trainable(self.unwrapped, Run(self.run_dir).best_checkpoint() / WEIGHTS_FILE)
        val = self._evaluate("val", loaders["val"])
        test_started = time.perf_counter()
        test = (
            self._evaluate("test", loaders["test"], threshold=val.get("threshold"))
            if self.test
            else {"metrics": None, "loss": None, "samples": 0}
        )  # never chosen on test; a sweep's trial never reads it
        test_seconds = time.perf_counter() - test_started
        breakdown = parameter_breakdown(self.unwrapped)
        memory, memory_kind = peak_memory_mb(self.accelerator.device)
        return {
            "method": self.config.method,
            "backbone": self.config.backbone,
            "data": self.config.data,
            "task": self.task,
            "selection_metric": self.selection,
            "trainable_params": breakdown["trainable_params"],
            "total_params": breakdown["total_params"],
            "best_epoch": position.best_epoch,
            "val": val["metrics"],
            "test": test["metrics"],
            **({"threshold": val["threshold"]} if "threshold" in val else {}),  # multi-label: the one used
            "val_loss": val["loss"],
            "test_loss": test["loss"],
            "val_samples": val["samples"],
            "test_samples": test["samples"],
            "test_seconds": round(test_seconds, 3),  # inference over the test split, its prefix included
            "peak_memory_mb": round(memory, 1),
            "peak_memory_kind": memory_kind,
            "train_seconds": round(train_seconds, 2),
            "epochs": self.config.train.epochs,
            "seed": self.config.seed,
            "num_processes": self.accelerator.num_processes,
            # what on_bad_sample: skip left out: invalid manifest lines, and samples whose image could
            # not be loaded, per split and kind
            "skipped": {
                "manifest_lines": invalid_line_counts(self.parts.datasets),
                "images": left_out_counts(self.parts.datasets),
            },
        }

    # --- helpers -----------------------------------------------------------------------------
    def _evaluate(self, split: str, loader, threshold: float | None = None) -> dict:
        """Evaluation runs the bare model: the distributed wrapper's forward synchronises buffers across
        processes. ``threshold`` overrides eval.threshold (test takes the one validation chose)."""
        feed = self.cache.feed(split, loader, self.unwrapped, labels=False)
        threshold = self.config.eval.threshold if threshold is None else threshold
        return evaluate(
            self.unwrapped,
            feed,
            self.accelerator,
            self.task,
            threshold,
            select=self.selection,
            split=split,
        )

    def _check_finite(self, loss: torch.Tensor, epoch: int, batch: int, weights: bool) -> None:
        """Stop before anything is saved once the loss, or (``weights``: after an optimizer step) a trainable
        weight, is NaN or infinite. Every process stops together: the flags are summed across processes."""
        counts = non_finite_counts(self.unwrapped.trainable_state_dict()) if weights else {}
        flags = torch.tensor([float(not torch.isfinite(loss).item()), float(bool(counts))], device=loss.device)
        if self.accelerator.num_processes > 1:
            flags = self.accelerator.reduce(flags, reduction="sum")
        bad_loss, bad_weights = flags.tolist()
        when = f"at epoch {epoch + 1}, batch {batch}"
        if bad_loss:
            value = loss.item()
            raise self._diverged(
                f"the training loss became {value if not math.isfinite(value) else 'non-finite'}", when
            )
        if bad_weights:
            raise self._diverged(f"the trainable weights became non-finite{self._describe(counts)}", when)

    def _describe(self, counts: dict[str, int]) -> str:
        """`` (N of M values, in a, b, c and K more tensors)`` for :func:`non_finite_counts`' answer."""
        if not counts:
            return " (on another process)"
        total = sum(p.numel() for p in self.unwrapped.trainable_state_dict().values())
        names = list(counts)
        more = f" and {len(names) - 3} more tensors" if len(names) > 3 else ""
        return f" ({sum(counts.values())} of {total} values NaN or infinite, in {', '.join(names[:3])}{more})"

    def _diverged(self, what: str, when: str) -> TrainingDiverged:
        run = Run(self.run_dir)
        where = str(run.checkpoint("last")) if run.has_checkpoint("last") else "none yet"
        return TrainingDiverged(
            f"{what} {when}; training stopped and nothing was saved after it. The last "
            f"good checkpoint: {where}. Lower train.lr, or check the data"
        )

    def _left_out(self) -> dict[str, list[str]]:
        """The ids left out before training because their image cannot be loaded, per split that has any."""
        return {split: [b.id for b in ds.left_out] for split, ds in self.parts.datasets.items() if ds.left_out}

    def _log(self, message: str) -> None:
        if self.main and self.console is not None:
            self.console.print(message, markup=False, highlight=False)

    def _log_diagnostics(self, log, epoch: int, step: int, loss: float, values: dict) -> None:
        """Per-part gradient norms and the method's own scalars, to metrics.jsonl and the tracker."""
        lr = self.scheduler.get_last_lr()[0]
        log.append(
            {"epoch": epoch + 1, "step": step, "split": "diagnostics", "metrics": values, "loss": loss, "lr": lr}
        )
        self.accelerator.log(
            {"train/loss": loss, "train/lr": lr, **{f"diagnostics/{name}": value for name, value in values.items()}},
            step=step,
        )

    def _save(self, name: str, state: dict | None = None) -> None:
        self.cache.flush()
        self.accelerator.wait_for_everyone()
        if self.main:
            save_checkpoint_dir(self.run_dir, name, self.unwrapped, self.model_folder, state)
        self.accelerator.wait_for_everyone()

    def _save_last(self, position: LoopPosition) -> None:
        position.left_out = self._left_out()
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "position": dataclasses.asdict(position),
        }
        self._save("last", state)

    def _start_tracking(self) -> None:
        """The experiment tracker of ``train.log_with`` through Accelerate (its files in the run directory)."""
        kind = self.config.train.log_with
        if kind == "none":
            return
        init_kwargs = {}
        if kind == "wandb":  # offline with WANDB_MODE=offline; files next to the run's
            init_kwargs["wandb"] = {"dir": str(self.run_dir), "name": self.run_dir.name}
        if kind == "mlflow" and "MLFLOW_TRACKING_URI" not in os.environ:  # a local store inside the run
            import mlflow

            (self.run_dir / "mlruns").mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 asks before a file store
            mlflow.set_tracking_uri((self.run_dir / "mlruns").resolve().as_uri())
        if kind == "mlflow":
            init_kwargs["mlflow"] = {"run_name": self.run_dir.name}
        self.accelerator.init_trackers("mitp", config=tracker_config(self.config), init_kwargs=init_kwargs)

    def _progress(self, total: int, done: int, epoch: int):
        return epoch_progress(
            total,
            done,
            f"epoch {epoch + 1}/{self.config.train.epochs}",
            enabled=self.main and self.console is not None,
            console=self.console,
        )


def _ids(left_out: dict[str, list[str]]) -> str:
    """``val: a, b; test: c`` (at most 5 ids per split), or ``nothing``."""
    if not left_out:
        return "nothing"
    return "; ".join(
        f"{split}: {', '.join(ids[:5])}" + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        for split, ids in left_out.items()
    )
