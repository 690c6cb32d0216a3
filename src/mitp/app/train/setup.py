"""What a run builds before its first step: accelerator, model and data (without the samples that cannot be
loaded, under on_bad_sample: skip), optimizer, schedule, RNG state."""

from __future__ import annotations

import importlib.util
import math
import random
import resource
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, gather_object, set_seed

from mitp.backbones import build_backbone
from mitp.configuration import ConfigError
from mitp.data.dataset import ManifestDataset, build_datasets, check_splits, unloadable_samples
from mitp.data.errors import EmptySplit
from mitp.data.manifest import LABELS_FILE
from mitp.data.preprocess import Preprocessor
from mitp.methods import build_model
from mitp.runs import TRACKER_DIRS

from .config import RunConfig, resolve_method_config, resolved
from .progress import count_progress


def make_accelerator(config: RunConfig, run_dir: Path | None = None) -> Accelerator:
    precision = config.train.mixed_precision
    if precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.mixed_precision", "fp16 needs a CUDA device; use bf16 or no on CPU")
    # Accelerate only runs multi-process CPU training (gloo) when told it is on the CPU.
    on_cpu = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    kind = config.train.log_with
    package = {"mlflow": "mlflow-skinny", "tensorboard": "tensorboard"}.get(kind, kind)
    if kind != "none" and importlib.util.find_spec("mlflow" if kind == "mlflow" else kind) is None:
        raise ConfigError("train.log_with", f"{kind} needs the {package!r} package: pip install {package}")
    project = None
    if run_dir is not None and kind != "none":
        project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(Path(run_dir) / TRACKER_DIRS[kind]))
    return Accelerator(
        cpu=on_cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=config.train.grad_accum_steps,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        log_with=None if kind == "none" or run_dir is None else kind,
        project_config=project,
    )


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


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    # ru_maxrss is in KiB on Linux: the process's peak resident memory, backbone included. A process
    # forked from the fork server (app/launch.py) counts the library pages it touches, not every page
    # its imports loaded, so the same run reads lower there than in a new interpreter.
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

    config: RunConfig  # resolved: the method section is complete
    backbone: object
    datasets: dict
    model: torch.nn.Module


def run_preprocessor(config: RunConfig, backbone) -> Preprocessor:
    """The run's preprocessing: the backbone's own, with the text length and image size of ``train``."""
    try:
        return Preprocessor.for_backbone(backbone, config.train.max_text_length, config.train.image_size)
    except ConfigError as err:  # the text length beyond this backbone's tower
        raise err.rekeyed({"max_length": "train.max_text_length"}.get(err.key, f"train.{err.key}")) from None
    except ValueError as err:
        raise ConfigError("train", str(err)) from err


def build_run(config: RunConfig, splits=("train", "val", "test")) -> RunParts:
    data_dir = Path(config.data)
    if not (data_dir / LABELS_FILE).is_file():
        raise ConfigError("data", f"{data_dir}: not a prepared dataset (no {LABELS_FILE}); see `mitp prepare`")
    backbone = build_backbone(config.backbone)
    datasets = build_datasets(
        data_dir,
        preprocessor=run_preprocessor(config, backbone),
        on_bad_sample=config.train.on_bad_sample,
        splits=splits,
        allow_external_paths=config.allow_external_paths,
        allow_missing=config.allow_missing,
        missing=config.missing_by_split(),
    )
    check_splits(datasets)  # before anything trains: no empty split, no id in two splits
    any_split = next(iter(datasets.values()))
    method_config = resolve_method_config(config, any_split.num_classes, any_split.task)
    set_seed(config.seed)  # model init is part of the seeded run
    model = build_model(method_config, backbone)
    return RunParts(resolved(config, method_config), backbone, datasets, model)


def leave_out_unloadable(
    datasets: dict[str, ManifestDataset], accelerator: Accelerator, num_workers: int = 0, console=None
) -> None:
    """``on_bad_sample: skip``, before anything trains: leave out of every split the samples whose image cannot
    be loaded. Each process checks its share of a split and all leave out the union, so every process sees the
    same samples (and as many batches). A split this empties is an EmptySplit error naming its manifest."""
    n, main = accelerator.num_processes, accelerator.is_main_process
    for split, dataset in datasets.items():
        share = range(accelerator.process_index, len(dataset), n)
        description = f"checking {split} images" + (f" (process 1 of {n})" if n > 1 else "")
        with count_progress(len(share), description, enabled=main and console is not None, console=console) as done:
            bad = unloadable_samples(dataset, share, num_workers, on_checked=done)
        dataset.leave_out(gather_object(bad) if n > 1 else bad)
        if not len(dataset):
            raise EmptySplit(
                Path(dataset.data_dir) / f"{split}.jsonl",
                None,
                f"no samples after leaving out {len(dataset.left_out)} whose image cannot be loaded "
                "(on_bad_sample: skip); every split needs at least one",
            )


def compile_model(model, backend: str = "inductor"):
    """``torch.compile`` the model in place; returns it. Shapes are left to dynamo's automatic
    dynamism (static first, dynamic after a shape changes): ``dynamic=True`` from the start made
    inductor fail on ViT-B/16 shapes (a sympy ValueRangeError in torch 2.13)."""
    model.compile(backend=backend)
    return model
