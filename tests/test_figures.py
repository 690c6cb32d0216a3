"""The figures: intervals that are what their captions say, axes fitted to the data, and a missing matplotlib
that skips an accompanying figure with a note but stops a command whose output is the figure."""

import numpy as np
import pytest

from mitp.app import figures
from mitp.app.errors import UserError


def test_the_one_seed_interval_is_the_bootstrap_of_the_accuracy():
    rng = np.random.default_rng(0)
    hits = np.zeros(401)
    hits[:259] = 1
    boot = [rng.choice(hits, 401).mean() for _ in range(20000)]
    low, high = figures.accuracy_interval(259 / 401, 401)
    assert (low, high) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])), abs=1 / 401)
    assert figures.accuracy_interval(1.0, 50) == (1.0, 1.0)


def row(values, metric="accuracy", samples=300):
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"seeds": list(range(len(values))), "val": {metric: {"mean": mean, "std": std}}, "samples": {"val": samples}}


def test_the_spread_is_the_seeds_std_or_with_one_seed_the_bootstrap_interval():
    assert figures.spread(row([0.8, 0.9]), "val", "accuracy")[1:] == pytest.approx(
        (np.std([0.8, 0.9], ddof=1), np.std([0.8, 0.9], ddof=1), "± std over seeds"), abs=1e-12
    )
    mean, below, above, said = figures.spread(row([0.85]), "val", "accuracy")
    low, high = figures.accuracy_interval(0.85, 300)
    assert (mean - below, mean + above, said) == pytest.approx((low, high, "95% bootstrap interval over the split"))
    assert figures.spread(row([0.5], "f1_micro"), "val", "f1_micro")[1:] == (0.0, 0.0, "one seed, no interval")


def test_an_axis_is_fitted_to_the_data_not_to_zero_and_one():
    plt = figures.pyplot()
    fig, ax = plt.subplots()
    figures._fitted(ax, [0.82, 0.84], [0.85, 0.86])
    low, high = ax.get_xlim()
    assert 0.8 < low < 0.82 and 0.86 < high < 0.88
    plt.close(fig)


def test_a_missing_matplotlib_skips_an_accompanying_figure_and_stops_a_figure_command(monkeypatch, tmp_path):
    monkeypatch.setattr(figures, "missing", lambda extra: ["matplotlib"])
    said = []
    assert figures.draw_if_possible(figures.curves, [], "accuracy", tmp_path / "curves.png", note=said.append) is None
    assert said == ["note: curves.png not drawn: pip install 'mitp[plots]' for figures"]
    monkeypatch.setattr("mitp.app.extras.missing", lambda extra: ["matplotlib"])
    with pytest.raises(UserError, match=r"drawing figures needs matplotlib: pip install 'mitp\[plots\]'"):
        figures.pyplot()
    assert not (tmp_path / "curves.png").exists()
