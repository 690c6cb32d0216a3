"""Loading a finished run's best checkpoint for evaluation and prediction."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mitp.backbones import build_backbone
from mitp.checkpoint import load_checkpoint
from mitp.configuration import ConfigError
from .config import RunConfig, load_run_config
from .rundir import checkpoint_dir


@dataclass
class LoadedRun:
    config: RunConfig
    backbone: object
    model: torch.nn.Module
    labels: object  # LabelSpace


def load_run(run_dir: str | Path, data: str | None = None) -> LoadedRun:
    """The run's resolved config and its best checkpoint on a freshly built backbone."""
    from mitp.data.manifest import read_labels

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError("RUN_DIR", f"{run_dir}: not a run directory (no config.yaml)")
    config = load_run_config(run_dir / "config.yaml")
    trained_on = config.data  # the run's own labels come from here when it has no labels.json copy
    if data is not None:
        config = replace(config, data=str(data))
    best = checkpoint_dir(run_dir, "best")
    if not (best / "trainable.safetensors").is_file():
        raise ConfigError("RUN_DIR", f"{run_dir}: no best checkpoint yet (training has not evaluated)")
    backbone = build_backbone(config.backbone)
    model = load_checkpoint(best, backbone).eval()
    labels = read_labels(run_dir if (run_dir / "labels.json").is_file() else trained_on)
    if labels.task != model.config.task:
        raise ConfigError("data", f"the run's labels.json says {labels.task} but the model was trained for "
                                  f"{model.config.task}")
    if labels.num_classes != model.config.num_classes:
        raise ConfigError("data", f"labels.json has {labels.num_classes} labels but the model has "
                                  f"{model.config.num_classes} outputs")
    return LoadedRun(config, backbone, model, labels)
