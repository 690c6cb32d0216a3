"""mitp bench epochs: every method side by side in its best mode, ratios to full fine-tuning."""

import json

import pytest

from mitp.app.bench.epochs import render
from mitp.app.cli import main


@pytest.mark.slow
def test_epoch_benchmark_puts_methods_side_by_side_in_their_best_mode(tmp_path):
    out = tmp_path / "epochs.json"
    assert (
        main(
            [
                "bench",
                "epochs",
                "--epochs",
                "2",
                "--backbone",
                "tiny-clip",
                "--methods",
                "late_fusion,full_finetune",
                "--samples",
                "8",
                "--batch-size",
                "4",
                "--rounds",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    late, full = rows
    assert late["mode"] == "prefix cache" and full["mode"].startswith("no cache")
    assert late["epoch_s_min"] <= late["epoch_s"] <= late["epoch_s_max"]
    assert late["step_ms"] == pytest.approx(1000 * late["epoch_s"] / 2)  # 8 samples / batch 4
    assert late["ratio_epoch_vs_full"] == pytest.approx(round(late["epoch_s"] / full["epoch_s"], 3))
    assert late["ratio_memory_vs_full"] == pytest.approx(round(late["peak_memory_mb"] / full["peak_memory_mb"], 3))
    assert full["trainable_params"] > late["trainable_params"] and full["ratio_epoch_vs_full"] == 1
    assert "| late_fusion | prefix cache |" in render(rows)


def test_epochs_must_allow_a_cached_pass(capsys):
    assert main(["bench", "epochs", "--epochs", "1", "--backbone", "tiny-clip", "--methods", "mitp"]) == 2
    assert "--epochs must be >= 2" in capsys.readouterr().err
