"""The field's metrics: accuracy and F1 (single-label), F1 variants (multi-label), and selection.

Single-label: accuracy, and macro / weighted F1 over every class of the label space (a class
that is neither predicted nor present scores 0 and still counts in the macro average).
Multi-label predictions are ``sigmoid(logit) > threshold`` over the fixed label order. F1
follows scikit-learn's definitions with ``zero_division=0`` (tested against it).
:func:`resampled_metrics` scores many bootstrap resamples of a split at once (one matrix product).
"""

from __future__ import annotations

import torch

METRICS = {
    "single_label": ("accuracy", "f1_macro", "f1_weighted"),
    "multi_label": ("f1_micro", "f1_macro", "f1_samples", "f1_weighted"),
}
SELECTION_METRIC = {"single_label": "accuracy", "multi_label": "f1_micro"}  # the default eval.select


def selection_metric(task: str, select: str | None) -> str:
    """The metric that chooses the best checkpoint: ``select`` if the task reports it, else the task's default."""
    if select is None:
        return SELECTION_METRIC[task]
    if select not in METRICS[task]:
        raise ValueError(f"{select!r} is not a {task} metric; choose one of {', '.join(METRICS[task])}")
    return select


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return 0.0
    return (logits.argmax(-1) == labels).double().mean().item()


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    denominator = 2 * tp + fp + fn
    return torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.zeros_like(tp))


def _macro_weighted(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, support: torch.Tensor) -> dict[str, float]:
    return {name: value.item() for name, value in _macro_weighted_tensors(tp, fp, fn, support).items()}


def _macro_weighted_tensors(tp, fp, fn, support) -> dict[str, torch.Tensor]:
    """Macro and support-weighted F1 over the last dimension (classes) of per-class counts."""
    per_class = _f1(tp, fp, fn)
    total = support.sum(-1)
    weighted = torch.where(total > 0, (per_class * support).sum(-1) / total.clamp_min(1), torch.zeros_like(total))
    return {"f1_macro": per_class.mean(-1), "f1_weighted": weighted}


def multilabel_f1(predicted: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """F1 micro / macro / samples / weighted of boolean (N, K) predictions against (N, K) targets."""
    predicted, target = predicted.bool(), target.bool()
    tp = (predicted & target).double()
    fp = (predicted & ~target).double()
    fn = (~predicted & target).double()
    return {
        "f1_micro": _f1(tp.sum(), fp.sum(), fn.sum()).item(),
        **_macro_weighted(tp.sum(0), fp.sum(0), fn.sum(0), target.double().sum(0)),
        "f1_samples": _f1(tp.sum(1), fp.sum(1), fn.sum(1)).mean().item(),
    }


def single_label_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, macro-F1 and weighted-F1 of the argmax over (N, K) logits against (N,) class indices."""
    f1 = multilabel_f1(*decisions(logits, labels, "single_label"))  # one-hot rows: per-class counts are the confusion's
    return {"accuracy": accuracy(logits, labels), "f1_macro": f1["f1_macro"], "f1_weighted": f1["f1_weighted"]}


def decisions(logits: torch.Tensor, labels: torch.Tensor, task: str, threshold: float = 0.5):
    """Boolean (N, K) predictions and targets: the argmax's one-hot row (single-label), or
    ``sigmoid(logit) > threshold`` (multi-label); what :func:`resampled_metrics` counts."""
    logits = logits.float()
    if task == "multi_label":
        return torch.sigmoid(logits) > threshold, labels > 0.5
    num_classes = logits.shape[-1]
    return (
        torch.nn.functional.one_hot(logits.argmax(-1), num_classes).bool(),
        torch.nn.functional.one_hot(labels.long(), num_classes).bool(),
    )


def resampled_metrics(
    predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, task: str
) -> dict[str, torch.Tensor]:
    """The task's metrics once per row of ``weights`` (R, N): sample i counted ``weights[r, i]`` times, as a
    bootstrap resample counts it; a row of ones gives :func:`compute_metrics`. ``predicted`` and
    ``target`` are :func:`decisions`. Returns a tensor of R values per metric."""
    predicted, target, weights = predicted.bool(), target.bool(), weights.double()

    def counted(per_sample: torch.Tensor) -> torch.Tensor:  # (N, ...) -> (R, ...)
        return weights @ per_sample.double()

    tp, fp, fn = counted(predicted & target), counted(predicted & ~target), counted(~predicted & target)
    samples = weights.sum(-1)
    by_class = _macro_weighted_tensors(tp, fp, fn, tp + fn)
    if task == "single_label":
        return {"accuracy": counted((predicted == target).all(-1)) / samples, **by_class}
    row = [(a & b).sum(-1).double() for a, b in ((predicted, target), (predicted, ~target), (~predicted, target))]
    return {"f1_micro": _f1(tp.sum(-1), fp.sum(-1), fn.sum(-1)), **by_class, "f1_samples": counted(_f1(*row)) / samples}


THRESHOLD_CANDIDATES = tuple(round(0.01 * i, 2) for i in range(1, 100))


def best_threshold(logits: torch.Tensor, labels: torch.Tensor, metric: str) -> float:
    """The multi-label decision threshold (0.01 to 0.99 in steps of 0.01) that maximises ``metric``.

    Ties go to the threshold nearest 0.5, so a flat metric keeps the usual default."""
    probabilities, target = torch.sigmoid(logits.float()), labels > 0.5
    scores = [(multilabel_f1(probabilities > t, target)[metric], -abs(t - 0.5), t) for t in THRESHOLD_CANDIDATES]
    return max(scores)[2]


def compute_metrics(logits: torch.Tensor, labels: torch.Tensor, task: str, threshold: float = 0.5) -> dict:
    logits = logits.float()
    if task == "multi_label":
        return multilabel_f1(torch.sigmoid(logits) > threshold, labels > 0.5)
    return single_label_metrics(logits, labels)
