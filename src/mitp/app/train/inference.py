"""Loading a finished run for evaluation: its resolved config and the best checkpoint.

The checkpoint is loaded by the library's :class:`~mitp.classifier.Classifier` (the one path that
rebuilds a method from a run or an export); this adds the run's resolved config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mitp.configuration import ConfigError

from .config import RunConfig, load_run_config


@dataclass
class LoadedRun:
    config: RunConfig
    backbone: object
    model: torch.nn.Module
    labels: object  # LabelSpace


def load_run(run_dir: str | Path, data: str | None = None) -> LoadedRun:
    """The run's resolved config (``data`` replaced if given) and its best checkpoint on a fresh backbone."""
    from mitp.checkpoint import CheckpointError
    from mitp.classifier import Classifier

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError("RUN_DIR", f"{run_dir}: not a run directory (no config.yaml)")
    config = load_run_config(run_dir / "config.yaml")
    if data is not None:
        config = replace(config, data=str(data))
    try:
        classifier = Classifier.from_pretrained(run_dir)
    except CheckpointError as err:
        if "no best checkpoint" in str(err):
            raise ConfigError("RUN_DIR", str(err)) from err
        raise
    return LoadedRun(config, classifier.model.backbone, classifier.model, classifier.labels)
