"""Evaluation: metrics and loss over a split, gathered across processes without duplicates."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from mitp.data.dataset import SkipCounter, model_inputs
from mitp.data.errors import EmptySplit
from mitp.metrics import best_threshold, compute_metrics, selection_metric


def plain_feed(loader, labels: bool = False) -> Iterator[tuple[dict, dict | None]]:
    """``(batch, model inputs)`` for every batch of a loader, as the prefix cache's feed yields them when there
    is no cache; the inputs are None for a batch whose samples were all skipped."""
    for batch in loader:
        inputs = model_inputs(batch)
        if not labels:
            inputs.pop("labels", None)
        yield batch, inputs if len(batch["ids"]) else None


@torch.no_grad()
def evaluate(
    model,
    feed,
    accelerator: Accelerator,
    task: str,
    threshold: float | str = 0.5,
    skips: SkipCounter | None = None,
    split: str = "split",
    select: str | None = None,
) -> dict:
    """Metrics and mean loss over a split's ``(batch, model inputs)`` pairs (a prefix-cache feed, or
    :func:`plain_feed` of a loader); samples are gathered across processes without duplicates.

    A multi-label task is scored at ``threshold``; ``"auto"`` picks the threshold that maximises the
    ``select`` metric on this split (only ever asked of validation) and returns it as ``threshold``.
    ``skips`` and the gathering are :func:`collect_rows`'.
    """
    _, logits, labels = collect_rows(model, feed, accelerator, skips, split)
    out = {"loss": accelerator.unwrap_model(model).loss(logits, labels).item(), "samples": len(labels)}
    if task == "multi_label":
        if threshold == "auto":
            threshold = best_threshold(logits, labels, selection_metric(task, select))
        out["threshold"] = threshold
    return {"metrics": compute_metrics(logits, labels, task, out.get("threshold", 0.5)), **out}


@torch.no_grad()
def collect_rows(
    model, feed, accelerator: Accelerator, skips: SkipCounter | None = None, split: str = "split"
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Sample ids, logits (N, K) and labels of a split, in the feed's order.

    ``skips`` counts the samples skipped as bad. A split with no sample left is an EmptySplit error.
    With several processes, rows are gathered with their sample ids and de-duplicated by id: the
    processes' shares of a batch differ in size when bad samples are skipped (even to zero), and the
    padding that evens out the last batch repeats samples; every process joins every gather.
    """
    model.eval()
    rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for batch, inputs in feed:
        mine = [("skipped", entry) for entry in batch.get("skipped", [])]
        if inputs is not None:
            logits = model(**inputs).logits.float().cpu()
            mine += [("row", (i, logit, label)) for i, logit, label in zip(batch["ids"], logits, batch["labels"].cpu())]
        if accelerator.num_processes > 1:
            mine = gather_object(mine)
        if skips is not None:
            skips.update({"skipped": [entry for kind, entry in mine if kind == "skipped"]})
        for sample_id, logit, label in (entry for kind, entry in mine if kind == "row"):
            rows.setdefault(sample_id, (logit, label))
    if not rows:
        raise EmptySplit(
            None, None, f"{split}: every sample was skipped as bad (on_bad_sample: skip); nothing to evaluate"
        )
    return (
        list(rows),
        torch.stack([logit for logit, _ in rows.values()]),
        torch.stack([label for _, label in rows.values()]),
    )
