"""mitp bench --epochs: epoch time with and without the frozen-prefix cache."""

import pytest

from mitp.app.bench.epochs import cache_epoch_benchmark, render
from mitp.app.cli import main


def test_cache_epoch_benchmark_reports_both_runs():
    result = cache_epoch_benchmark("tiny-clip", "mitp", samples=16, batch_size=8, epochs=2, model={"num_steps": 3})
    assert result["prefix_depths"] == [3, 4]  # text 3-5 interact; vision layers at the same relative depth
    assert len(result["epoch_seconds_uncached"]) == len(result["epoch_seconds_cached"]) == 2
    cached, uncached = result["epoch_seconds_cached"], result["epoch_seconds_uncached"]
    assert result["ratio_cached_vs_uncached"] == pytest.approx(cached[-1] / uncached[-1])
    assert result["cache_disk_mb"] > 0, "the cached run stored its prefix states"
    assert "cached / uncached" in render(result)


def test_epochs_must_allow_a_cached_pass(capsys):
    assert main(["bench", "--epochs", "1", "--backbone", "tiny-clip", "--methods", "mitp"]) == 2
    assert "--epochs must be >= 2" in capsys.readouterr().err
