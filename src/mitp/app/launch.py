"""The one way to start a command in a fresh process: every compare run, sweep worker and bench run.

A ``mitp train`` in a new interpreter spends seconds importing torch and transformers before a small
run's first step (transformers' CLIP module alone imports torch._dynamo, torch.distributed.tensor, sympy
and scipy; docs/performance.md, "Start-up", has the figures). Here a fork server (``multiprocessing``
"forkserver") imports them once per parent process, and every process forked from it starts in
milliseconds while sharing nothing else with the parent or its siblings: a crash stays its own. The
server only imports (it never runs torch work or starts a thread), so forking it is safe. What that
costs: a process's peak RSS counts the library pages it touches, not every page its imports loaded;
the server's environment is the one from when it started, so each process is handed the caller's
current one; and its output is redirected inside the process. Elsewhere (machines with CUDA, systems
other than Linux), "spawn": a new interpreter per process.

A process started here dies with the process that started it (a ``kill -9`` included), so an
interrupted or killed ``compare`` or ``sweep`` leaves no run training behind; the next one resumes it.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import runpy
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait as wait_for
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


def _die_with_parent() -> None:
    """End this process as a kill would once the process that started it is gone (its sentinel closes)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait_for([parent.sentinel])
        os.kill(os.getpid(), signal.SIGKILL)  # what a crash does: checkpoints are written to survive it

    threading.Thread(target=watch, name="mitp-parent-watch", daemon=True).start()


def _cli_child(argv: list[str], environ: dict[str, str], log: str) -> None:
    """``python -m mitp ARGV`` in this process, with the parent's environment and stdout and stderr
    appended to ``log``; its exit status is this process's."""
    _die_with_parent()
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


# The one-line errors the CLI prints (mitp.app.cli.main: a command's, a usage error), and a traceback's start.
_CLI_ERROR = re.compile(r"^(mitp( \S+)?: (error|interrupted)\b|error: mitp\b)")
_TRACEBACK = "Traceback (most recent call last):"


class CliProcess:
    """``mitp ARGV`` in a fresh process (see the module's docstring), its output appended to ``log``;
    ``env`` is added to this process's environment. ``new_interpreter``: "spawn" even where the fork server
    runs, for a process whose memory figures must count every page it loads (`mitp bench serve --load`)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None, new_interpreter: bool = False):
        self.argv = list(argv)
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        self._start = self._offset = self.log.stat().st_size  # what this process writes comes after
        context = multiprocessing.get_context("spawn") if new_interpreter else process_context()
        self.process = context.Process(
            target=_cli_child, name=f"mitp-{argv[0]}", args=(self.argv, {**os.environ, **(env or {})}, str(self.log))
        )
        self.process.start()

    def read_new(self) -> str:
        """What the process wrote since the last call."""
        with open(self.log, "rb") as reader:
            reader.seek(self._offset)
            data = reader.read()
        self._offset += len(data)
        return data.decode(errors="replace")

    def wait(self, follow: Callable[[str], object] | None = None, poll_s: float = 0.2) -> int:
        """The exit code once the process ends; ``follow(text)`` hears its output as it comes. Interrupted,
        the process is stopped before the interruption goes on."""
        (code,) = run_at_most(1, [lambda slot: self], follow=follow, poll_s=poll_s)
        return code

    def stop(self, wait: float = 30) -> None:
        """End the process (SIGTERM, then SIGKILL after ``wait`` seconds) if it still runs, and wait for it."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(wait)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()

    def output(self) -> str:
        """Everything this process wrote to the log."""
        with open(self.log, "rb") as reader:
            reader.seek(self._start)
            return reader.read().decode(errors="replace")

    def tail(self, lines: int = 20) -> list[str]:
        """The last non-empty lines of the log."""
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return [line for line in text if line.strip()]

    def failure(self) -> str:
        """Why the command failed, from its output (:func:`why_failed`)."""
        return why_failed(self.output(), self.process.exitcode)


def why_failed(output: str, exitcode: int | None) -> str:
    """Why a command failed, from its output: its one-line error (``mitp train: error: ...``), else the
    exception its last traceback ends with, else how it ended and its last line (progress bars' text comes
    last in a run's output, so the last line alone is seldom the reason)."""
    lines = [line.rstrip() for line in output.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if _CLI_ERROR.match(line)]
    if errors:
        return errors[-1]
    starts = [i for i, line in enumerate(lines) if line == _TRACEBACK]
    if starts:  # the exception is the first unindented line after the traceback's frames
        exception = next((line for line in lines[starts[-1] + 1 :] if not line[:1].isspace()), None)
        if exception:
            return exception
    ending = f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit status {exitcode}"
    return f"{ending}; its last output: {lines[-1][:200]}" if lines else f"{ending}, no output"


def run_at_most(
    jobs: int,
    starts: Sequence[Callable[[int], CliProcess | None]],
    on_end: Callable[[int, CliProcess], object] | None = None,
    follow: Callable[[str], object] | None = None,
    poll_s: float = 0.2,
) -> list[int | None]:
    """Call ``starts[i](slot)`` in order as soon as fewer than ``jobs`` processes run (``slot`` in
    ``range(jobs)``, free again when its process ends; a start may return None: nothing to run) and
    ``on_end(i, process)`` when process ``i`` ends; returns the exit codes in order (None where nothing
    ran). ``follow(text)`` hears the running processes' output as it comes. Whatever stops this early (an
    interruption, an error in a callback) stops the running processes first and starts no new one."""
    codes: list[int | None] = [None] * len(starts)
    running: dict[int, tuple[int, CliProcess]] = {}  # slot -> (index, process)
    waiting = iter(range(len(starts)))
    try:
        index = next(waiting, None)
        while index is not None or running:
            while index is not None and len(running) < jobs:
                slot = min(set(range(jobs)) - set(running))
                process = starts[index](slot)
                if process is not None:
                    running[slot] = (index, process)
                index = next(waiting, None)
            if not running:
                continue
            wait_for([p.process.sentinel for _, p in running.values()], timeout=poll_s)
            for slot, (i, process) in list(running.items()):
                ended = not process.process.is_alive()
                if follow is not None:
                    text = process.read_new()
                    if text:
                        follow(text)
                if ended:
                    process.process.join()
                    del running[slot]
                    codes[i] = process.process.exitcode
                    if on_end is not None:
                        on_end(i, process)
    finally:
        for _, process in running.values():
            process.stop()
    return codes


__all__ = ["CliProcess", "PRELOAD", "fork_server_is_safe", "process_context", "run_at_most", "why_failed"]
