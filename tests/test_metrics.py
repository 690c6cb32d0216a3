"""Metrics agree with scikit-learn on random inputs."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from mitp.metrics import THRESHOLD_CANDIDATES, best_threshold, compute_metrics, selection_metric


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    logits, labels = torch.randn(50, 7, generator=g), torch.randint(0, 7, (50,), generator=g)
    expected = accuracy_score(labels.numpy(), logits.argmax(-1).numpy())
    assert compute_metrics(logits, labels, "single_label")["accuracy"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_single_label_f1_matches_sklearn_over_every_class(seed):
    g = torch.Generator().manual_seed(seed)
    logits, labels = torch.randn(60, 5, generator=g), torch.randint(0, 4, (60,), generator=g)
    logits[:, 4] -= 10  # class 4: never true, never predicted; it still counts in the macro average
    ours = compute_metrics(logits, labels, "single_label")
    predicted = logits.argmax(-1).numpy()
    for average in ("macro", "weighted"):
        expected = f1_score(labels.numpy(), predicted, labels=list(range(5)), average=average, zero_division=0)
        assert ours[f"f1_{average}"] == pytest.approx(expected, abs=1e-12), average
    assert set(ours) == {"accuracy", "f1_macro", "f1_weighted"}


def test_selection_metric_defaults_and_refuses_another_tasks_metric():
    assert selection_metric("single_label", None) == "accuracy"
    assert selection_metric("multi_label", None) == "f1_micro"
    assert selection_metric("single_label", "f1_macro") == "f1_macro"
    with pytest.raises(ValueError, match="'f1_micro' is not a single_label metric"):
        selection_metric("single_label", "f1_micro")
    with pytest.raises(ValueError, match="'accuracy' is not a multi_label metric"):
        selection_metric("multi_label", "accuracy")


@pytest.mark.parametrize("seed", range(4))
def test_best_threshold_is_the_argmax_of_the_metric(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(80, 6, generator=g) - 1.5  # rare labels: 0.5 is rarely the best threshold
    labels = (torch.rand(80, 6, generator=g) < 0.15).float()
    for metric in ("f1_micro", "f1_macro"):
        chosen = best_threshold(logits, labels, metric)
        scores = {t: compute_metrics(logits, labels, "multi_label", t)[metric] for t in THRESHOLD_CANDIDATES}
        assert scores[chosen] == max(scores.values())
        assert scores[chosen] >= scores[0.5]


def test_best_threshold_ties_go_to_the_one_nearest_half():
    logits = torch.tensor([[8.0, -8.0]])  # probabilities ~1 and ~0: every candidate scores the same
    assert best_threshold(logits, torch.tensor([[1.0, 0.0]]), "f1_micro") == 0.5


@pytest.mark.parametrize("seed", range(8))
def test_multilabel_f1_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    n, k = 40, 6
    logits = torch.randn(n, k, generator=g) - 0.5
    labels = (torch.rand(n, k, generator=g) < 0.3).float()
    labels[:, 0] = 0  # a class that never occurs
    labels[3] = 0  # a sample with no labels
    logits[5] = -10  # a sample with no predictions
    ours = compute_metrics(logits, labels, "multi_label")
    predicted = (torch.sigmoid(logits) > 0.5).numpy().astype(int)
    for average in ("micro", "macro", "samples", "weighted"):
        expected = f1_score(labels.numpy().astype(int), predicted, average=average, zero_division=0)
        assert ours[f"f1_{average}"] == pytest.approx(expected, abs=1e-12), average


def test_threshold_is_applied_to_probabilities():
    logits = torch.tensor([[0.1, -0.1]])  # probabilities 0.525 and 0.475
    labels = torch.tensor([[1.0, 0.0]])
    assert compute_metrics(logits, labels, "multi_label")["f1_micro"] == 1.0
    assert compute_metrics(logits, labels, "multi_label", threshold=0.6)["f1_micro"] == 0.0
    assert np.isclose(compute_metrics(logits, labels, "multi_label", threshold=0.4)["f1_micro"], 2 / 3)
