"""Threads are explicit: a run sets and records its own, honours OMP_NUM_THREADS, and says when the
machine is already busy."""

import json

import torch

from mitp.app.cli import main
from mitp.app.threads import available_cores, default_threads, oversubscribed, use_threads


def test_default_threads_honour_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert default_threads() == available_cores()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads() == available_cores()


def test_use_threads_sets_torch_and_the_environment(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert use_threads(2) == 2 and torch.get_num_threads() == 2
        import os

        assert os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        torch.set_num_threads(before)


def test_oversubscription_is_said_from_the_load_average():
    assert oversubscribed(1, load=1.0, cores=2) is None  # two one-thread runs on two cores: fine
    assert oversubscribed(2, load=0.1, cores=2) is None  # an idle machine
    note = oversubscribed(2, load=2.0, cores=2)  # two two-thread runs on two cores
    assert note and "2 thread(s) on 2 core(s)" in note and "--jobs" in note and "num_threads" in note


def test_a_run_records_the_threads_it_used(toy_dataset, tmp_path, capsys):
    from pathlib import Path

    config = Path(__file__).parents[1] / "configs" / "tiny.yaml"
    before = torch.get_num_threads()
    try:
        assert (
            main(
                [
                    "train",
                    "--config",
                    str(config),
                    "--set",
                    f"data={toy_dataset}",
                    "--set",
                    "train.epochs=1",
                    "--set",
                    "train.num_threads=1",
                    "--out",
                    str(tmp_path / "run"),
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(before)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["num_threads"] == 1
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--set",
                f"data={toy_dataset}",
                "--set",
                "train.num_threads=0",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "train.num_threads: must be >= 1" in capsys.readouterr().err
