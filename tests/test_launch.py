"""The launcher (``mitp.app.launch``): fresh processes from the fork server with their exit codes, output and
environment; at most N at a time; stopped when the caller is interrupted or dies; the reason a command failed."""

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from mitp import __version__
from mitp.app.launch import CliProcess, run_at_most, why_failed

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


def test_a_new_interpreter_when_asked_with_the_same_exit_code_and_log(tmp_path):
    log = tmp_path / "out.log"
    process = CliProcess(["--version"], log, new_interpreter=True)
    assert type(process.process).__name__ == "SpawnProcess"  # not forked: its memory is all its own
    assert process.wait() == 0 and log.read_text() == f"mitp {__version__}\n"


def _deaf_to_sigterm(ready) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(60)


def test_stop_kills_a_process_deaf_to_sigterm(tmp_path):
    process = CliProcess(["--version"], tmp_path / "out.log")
    process.wait()
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    process.process = context.Process(target=_deaf_to_sigterm, args=(ready,))
    process.process.start()
    assert ready.wait(30)  # its handler is in place
    process.stop(wait=0.5)
    assert process.process.exitcode == -signal.SIGKILL


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


def train_argv(toy_dataset, out, epochs: int) -> list[str]:
    return [
        "train",
        "--config",
        str(CONFIG),
        "--set",
        f"data={toy_dataset}",
        "--set",
        f"train.epochs={epochs}",
        "--set",
        "train.log_with=none",
        "--out",
        str(out),
    ]


def test_why_a_command_failed_is_its_error_not_the_progress_bar_that_came_last():
    bar = "epoch 1/3 ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 4/4 0:00:01"
    assert why_failed(f"{bar}\rmitp train: error: model.num_steps: too many\n{bar}\n", 2) == (
        "mitp train: error: model.num_steps: too many"
    )
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "    boom()\n"
        "RuntimeError: out of memory\n"
    )
    assert why_failed(f"{bar}\n{traceback}{bar}\n", 1) == "RuntimeError: out of memory"
    assert why_failed(f"{bar}\n", -9) == f"killed by signal 9; its last output: {bar}"
    assert why_failed("usage: mitp train [-h]\nerror: mitp train: unrecognized arguments: --x\n", 2) == (
        "error: mitp train: unrecognized arguments: --x"
    )
    assert why_failed("", 1) == "exit status 1, no output"


@pytest.mark.slow
def test_at_most_n_run_at_once_each_in_a_free_slot_and_the_codes_come_back_in_order(tmp_path):
    slots, ended = [], []

    def start(argv):
        def begin(slot):
            slots.append(slot)
            return CliProcess(argv, tmp_path / f"{len(slots)}.log")

        return begin

    codes = run_at_most(
        2,
        [start(["--version"]), lambda slot: None, start(["no-such-command"]), start(["--version"])],
        on_end=lambda i, process: ended.append(i),
    )
    assert codes == [0, None, 2, 0] and sorted(ended) == [0, 2, 3]
    assert slots[:2] == [0, 1] and slots[2] in (0, 1)  # the third waited for a free slot


@pytest.mark.slow
def test_an_interruption_stops_the_running_processes_and_starts_no_more(toy_dataset, tmp_path):
    started = []

    def start(argv):
        def begin(slot):
            started.append(CliProcess(argv, tmp_path / f"{len(started)}.log"))
            return started[-1]

        return begin

    def interrupt(i, process):
        raise KeyboardInterrupt

    long_run = train_argv(toy_dataset, tmp_path / "run", epochs=1000)
    with pytest.raises(KeyboardInterrupt):
        run_at_most(2, [start(long_run), start(["--version"]), start(["--version"])], on_end=interrupt)
    assert len(started) == 2 and not started[0].process.is_alive()  # stopped, and the third never started


@pytest.mark.slow
def test_a_killed_command_takes_the_processes_it_started_with_it(toy_dataset, tmp_path):
    """kill -9 of a compare: its run stops too (its lock is free), nothing is left training."""
    out = tmp_path / "cmp"
    argv = ["compare", *train_argv(toy_dataset, out, epochs=1000)[1:], "--methods", "late_fusion"]
    compare = CliProcess(argv, tmp_path / "compare.log", env={"OMP_NUM_THREADS": "1"})
    lock = out / "late_fusion" / "seed-0" / ".lock"
    deadline = time.monotonic() + 240
    while not (out / "late_fusion" / "seed-0" / "metrics.jsonl").is_file():  # the run trains
        assert compare.process.is_alive() and time.monotonic() < deadline, compare.tail()
        time.sleep(0.2)
    with pytest.raises(Timeout):
        FileLock(str(lock), timeout=0).acquire()  # held by the run
    compare.process.kill()
    compare.process.join()
    deadline = time.monotonic() + 30
    while True:
        try:
            FileLock(str(lock), timeout=0).acquire()
            break  # the run's process is gone: an OS lock dies with its process
        except Timeout:
            assert time.monotonic() < deadline, "the run went on training after its compare was killed"
            time.sleep(0.2)
    size = (out / "logs" / "late_fusion-seed-0.log").stat().st_size
    time.sleep(2)
    assert (out / "logs" / "late_fusion-seed-0.log").stat().st_size == size
