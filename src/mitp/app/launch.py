"""Fresh processes for runs and benchmark workers, forked from a server that imported torch once.

A ``mitp train`` in a new interpreter spends about 8 s importing torch, transformers and
matplotlib before a small run's first step. Here a fork server (``multiprocessing``
"forkserver") imports them once per parent process, and every process forked from it starts in
milliseconds while sharing nothing else with the parent or its siblings: its memory peak is its
own and a crash stays its own. The server only imports (it never runs torch work or starts a
thread), so forking it is safe. Elsewhere (machines with CUDA, systems other than Linux), "spawn":
a new interpreter per process.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import sys
from collections.abc import Callable
from pathlib import Path

# What every worker would import anyway; a name that fails to import is skipped by the server.
PRELOAD = [
    "torch",
    "transformers.models.clip.modeling_clip",
    "matplotlib.pyplot",
    "mitp.app.train.runner",
    "mitp.app.cli",
]


def process_context() -> multiprocessing.context.BaseContext:
    """The fork server where :func:`fork_server_is_safe`, else "spawn" (a new interpreter per process)."""
    if fork_server_is_safe():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)  # takes effect when the server starts, once per parent
        return context
    return multiprocessing.get_context("spawn")


def fork_server_is_safe() -> bool:
    """Linux without CUDA. With CUDA, a run's device (``CUDA_VISIBLE_DEVICES``, set per run by ``compare
    --devices``) must reach a driver that no parent has initialised, and GPU runs are long enough that
    start-up does not matter; other systems' frameworks are not safe to fork."""
    if not sys.platform.startswith("linux") or "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    import torch  # the callers have it loaded by now; here so that importing this module stays cheap

    return not torch.cuda.is_available()


def _cli_child(argv: list[str], environ: dict[str, str], log: str) -> None:
    """``python -m mitp ARGV`` in this process, with the parent's environment and stdout and stderr
    appended to ``log``; its exit status is this process's."""
    os.environ.clear()
    os.environ.update(environ)  # the server's copy is from when it started; OMP_NUM_THREADS is read by the run
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.argv = ["mitp", *argv]
    try:
        runpy.run_module("mitp", run_name="__main__", alter_sys=True)  # raises SystemExit with main's code
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class CliProcess:
    """``mitp ARGV`` in a fresh process (see the module's docstring), its output appended to ``log``;
    ``env`` is added to this process's environment."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        self._offset = self.log.stat().st_size  # what this process writes comes after
        self.process = process_context().Process(
            target=_cli_child, name=f"mitp-{argv[0]}", args=(list(argv), {**os.environ, **(env or {})}, str(self.log))
        )
        self.process.start()

    def _read_new(self) -> str:
        with open(self.log, "rb") as reader:
            reader.seek(self._offset)
            data = reader.read()
        self._offset += len(data)
        return data.decode(errors="replace")

    def wait(self, follow: Callable[[str], object] | None = None, poll_s: float = 0.2) -> int:
        """The exit code once the process ends; ``follow(text)`` hears its output as it comes. Interrupted,
        the process is stopped before the interruption goes on."""

        def pass_on() -> None:
            text = self._read_new() if follow is not None else ""
            if text:
                follow(text)

        try:
            while self.process.is_alive():
                self.process.join(poll_s)
                pass_on()
        finally:
            if self.process.is_alive():
                self.process.terminate()
                self.process.join()
        pass_on()  # what came after the last poll
        return self.process.exitcode

    def tail(self, lines: int = 20) -> list[str]:
        """The last non-empty lines of the log."""
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return [line for line in text if line.strip()]


__all__ = ["CliProcess", "PRELOAD", "fork_server_is_safe", "process_context"]
