"""A finished run, loaded for evaluation: its resolved config and its best checkpoint, and a split of its data
(or of another dataset with the same labels) to evaluate on.

The checkpoint is a model folder, loaded by the library's one loader (:mod:`mitp.torch_runtime`); this adds
the run's resolved config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator

from mitp.configuration import ConfigError
from mitp.data.dataset import ManifestDataset, make_dataloader
from mitp.files import NoCheckpoint
from mitp.runs import MARKER, Run
from mitp.torch_runtime import TorchClassifier

from .config import RunConfig, load_run_config
from .evaluation import collect_rows, evaluate, plain_feed
from .setup import run_preprocessor


@dataclass
class FinishedRun:
    config: RunConfig
    classifier: TorchClassifier

    @property
    def model(self) -> torch.nn.Module:
        return self.classifier.model

    @property
    def backbone(self):
        return self.classifier.model.backbone

    @property
    def labels(self):  # LabelSpace: the model's, whatever the data's labels.json says now
        return self.classifier.labels

    @property
    def threshold(self) -> float:
        """The multi-label decision threshold the run was tested with (chosen on validation for ``auto``)."""
        return self.classifier.threshold


def load_run(run_dir: str | Path, data: str | None = None) -> FinishedRun:
    """The run's resolved config (``data`` replaced if given) and its best checkpoint on a fresh backbone."""
    run = Run(run_dir)
    if not run.is_run():
        raise ConfigError("RUN_DIR", f"{run_dir}: not a run directory (no {MARKER} marker)")
    config = load_run_config(run.config_path)
    if data is not None:
        config = replace(config, data=str(data))
    try:
        return FinishedRun(config, TorchClassifier.from_pretrained(run_dir))
    except NoCheckpoint as err:
        raise ConfigError("RUN_DIR", str(err)) from err


def split_dataset(loaded: FinishedRun, split: str, missing=None):
    """``split`` of the run's data with the run's preprocessing (under ``on_bad_sample: skip``, without the
    samples whose image cannot be loaded); ``missing`` (a MissingConfig) defaults to the run's
    ``eval.missing``. Labels that differ from the run's (task, names, order) are a ConfigError."""
    config = loaded.config
    dataset = ManifestDataset(
        config.data,
        split,
        run_preprocessor(config, loaded.backbone),
        on_bad_sample=config.train.on_bad_sample,
        allow_external_paths=config.allow_external_paths,
        allow_missing=config.allow_missing,
        missing=config.eval.missing if missing is None else missing,
    )
    ours, theirs = loaded.labels, dataset.label_space
    if (theirs.task, theirs.labels) != (ours.task, ours.labels):
        if theirs.task != ours.task:
            what = f"task {theirs.task} but the run was trained for {ours.task}"
        elif set(theirs.labels) == set(ours.labels):
            what = "the same labels in another order (class indices would be scrambled)"
        else:
            absent = sorted(set(ours.labels) - set(theirs.labels))
            extra = sorted(set(theirs.labels) - set(ours.labels))
            what = f"other labels (missing {absent}, extra {extra})"
        raise ConfigError("data", f"{config.data}/labels.json: {what}; cannot evaluate this run on it")
    if config.train.on_bad_sample == "skip":  # what cannot be loaded is left out, as training left it out
        dataset.leave_out_unloadable(config.train.num_workers)
    return dataset


def evaluate_dataset(loaded: FinishedRun, dataset, batch_size: int | None = None) -> dict:
    """Metrics, loss and sample count of the run's model on ``dataset`` (one process, its best device)."""
    model, feed, accelerator = _prepared(loaded, dataset, batch_size)
    return evaluate(model, feed, accelerator, dataset.task, loaded.threshold)


def dataset_logits(loaded: FinishedRun, dataset, batch_size: int | None = None):
    """Sample ids, logits (N, K) and labels of the run's model on ``dataset``, in the dataset's order."""
    return collect_rows(*_prepared(loaded, dataset, batch_size), split=dataset.split)


def _prepared(loaded: FinishedRun, dataset, batch_size: int | None):
    accelerator = Accelerator(cpu=False)
    loader = make_dataloader(dataset, batch_size or loaded.config.eval_batch_size(), shuffle=False)
    model, loader = accelerator.prepare(loaded.model, loader)
    return model, plain_feed(loader), accelerator
