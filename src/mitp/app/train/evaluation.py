"""Evaluation: metrics and loss over a split, gathered across processes."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from accelerate import Accelerator

from mitp.data.dataset import model_inputs
from mitp.data.errors import EmptySplit
from mitp.metrics import best_threshold, compute_metrics, selection_metric


def plain_feed(loader, labels: bool = False) -> Iterator[tuple[dict, dict]]:
    """``(batch, model inputs)`` for every batch of a loader, as the prefix cache's feed yields them when there
    is no cache."""
    for batch in loader:
        inputs = model_inputs(batch)
        if not labels:
            inputs.pop("labels", None)
        yield batch, inputs


@torch.no_grad()
def evaluate(
    model,
    feed,
    accelerator: Accelerator,
    task: str,
    threshold: float | str = 0.5,
    split: str = "split",
    select: str | None = None,
) -> dict:
    """Metrics and mean loss over a split's ``(batch, model inputs)`` pairs (a prefix-cache feed, or
    :func:`plain_feed` of a loader), gathered across processes as :func:`collect_rows` does.

    A multi-label task is scored at ``threshold``; ``"auto"`` picks the threshold that maximises the
    ``select`` metric on this split (only ever asked of validation) and returns it as ``threshold``.
    """
    _, logits, labels = collect_rows(model, feed, accelerator, split)
    out = {"loss": accelerator.unwrap_model(model).loss(logits, labels).item(), "samples": len(labels)}
    if task == "multi_label":
        if threshold == "auto":
            threshold = best_threshold(logits, labels, selection_metric(task, select))
        out["threshold"] = threshold
    return {"metrics": compute_metrics(logits, labels, task, out.get("threshold", 0.5)), **out}


@torch.no_grad()
def collect_rows(
    model, feed, accelerator: Accelerator, split: str = "split"
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Sample ids, logits (N, K) and labels of a split, in the feed's order; a split without samples is an
    EmptySplit error. With several processes each batch's rows are gathered, less the samples Accelerate
    repeats to even out the last batch (``gather_for_metrics``)."""
    model.eval()
    rows: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for batch, inputs in feed:
        logits = model(**inputs).logits.float().cpu()
        mine = list(zip(batch["ids"], logits, batch["labels"].cpu()))
        rows += accelerator.gather_for_metrics(mine, use_gather_object=True) if accelerator.num_processes > 1 else mine
    if not rows:
        raise EmptySplit(None, None, f"{split}: no samples to evaluate")
    return (
        [sample_id for sample_id, _, _ in rows],
        torch.stack([logit for _, logit, _ in rows]),
        torch.stack([label for _, _, label in rows]),
    )
