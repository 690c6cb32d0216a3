"""Fresh processes from the fork server (``mitp.app.launch``): exit codes, output, environment."""

import json
import os
from pathlib import Path

import pytest

from mitp import __version__
from mitp.app.launch import CliProcess

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"


@pytest.mark.slow
def test_a_command_runs_elsewhere_with_its_exit_code_and_its_output_appended_to_the_log(tmp_path):
    log = tmp_path / "logs" / "out.log"
    heard = []
    assert CliProcess(["--version"], log).wait(follow=heard.append) == 0
    assert "".join(heard) == f"mitp {__version__}\n"
    process = CliProcess(["no-such-command"], log)
    assert process.wait() == 2 and process.process.pid != os.getpid()
    text = log.read_text()
    assert text.startswith(f"mitp {__version__}\n") and "invalid choice: 'no-such-command'" in text
    assert "invalid choice" in process.tail()[-1]


@pytest.mark.slow
def test_the_environment_is_the_callers_at_start_plus_what_is_given(toy_dataset, tmp_path, monkeypatch):
    """The server's environment is from when it started; a run sees the caller's as it is now."""
    CliProcess(["--version"], tmp_path / "start.log").wait()  # the server is up before the change below
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    out = tmp_path / "run"
    argv = [
        "train",
        "--config",
        str(CONFIG),
        "--set",
        f"data={toy_dataset}",
        "--set",
        "train.epochs=1",
        "--out",
        str(out),
    ]
    assert CliProcess(argv, tmp_path / "run.log").wait() == 0
    assert json.loads((out / "results.json").read_text())["num_threads"] == 3  # read from OMP_NUM_THREADS
    assert (
        CliProcess([*argv[:-1], str(tmp_path / "run2")], tmp_path / "run2.log", env={"OMP_NUM_THREADS": "2"}).wait()
        == 0
    )
    assert json.loads((tmp_path / "run2" / "results.json").read_text())["num_threads"] == 2


def test_the_fork_server_is_used_on_linux_without_cuda_only(monkeypatch):
    import sys

    import torch

    from mitp.app.launch import fork_server_is_safe, process_context

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fork_server_is_safe() and process_context().get_start_method() == "forkserver"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a device must reach an uninitialised driver
    assert not fork_server_is_safe() and process_context().get_start_method() == "spawn"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert process_context().get_start_method() == "spawn"
