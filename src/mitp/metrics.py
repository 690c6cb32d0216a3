"""The field's metrics: accuracy (single-label) and multi-label F1 variants.

Multi-label predictions are ``sigmoid(logit) > threshold`` over the fixed label order.
F1 follows scikit-learn's definitions with ``zero_division=0`` (tested against it).
"""

from __future__ import annotations

import torch

SELECTION_METRIC = {"single_label": "accuracy", "multi_label": "f1_micro"}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return 0.0
    return (logits.argmax(-1) == labels).double().mean().item()


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    denominator = 2 * tp + fp + fn
    return torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.zeros_like(tp))


def multilabel_f1(predicted: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """F1 micro / macro / samples / weighted of boolean (N, K) predictions against (N, K) targets."""
    predicted, target = predicted.bool(), target.bool()
    tp = (predicted & target).double()
    fp = (predicted & ~target).double()
    fn = (~predicted & target).double()
    per_class = _f1(tp.sum(0), fp.sum(0), fn.sum(0))
    support = target.double().sum(0)
    weighted = (per_class * support).sum() / support.sum() if support.sum() > 0 else torch.tensor(0.0)
    return {
        "f1_micro": _f1(tp.sum(), fp.sum(), fn.sum()).item(),
        "f1_macro": per_class.mean().item(),
        "f1_samples": _f1(tp.sum(1), fp.sum(1), fn.sum(1)).mean().item(),
        "f1_weighted": weighted.item(),
    }


def compute_metrics(logits: torch.Tensor, labels: torch.Tensor, task: str, threshold: float = 0.5) -> dict:
    logits = logits.float()
    if task == "multi_label":
        return multilabel_f1(torch.sigmoid(logits) > threshold, labels > 0.5)
    return {"accuracy": accuracy(logits, labels)}
