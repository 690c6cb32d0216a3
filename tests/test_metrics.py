"""Metrics agree with scikit-learn on random inputs."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from mitp.metrics import compute_metrics


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    logits, labels = torch.randn(50, 7, generator=g), torch.randint(0, 7, (50,), generator=g)
    expected = accuracy_score(labels.numpy(), logits.argmax(-1).numpy())
    assert compute_metrics(logits, labels, "single_label")["accuracy"] == pytest.approx(expected, abs=1e-12)


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
