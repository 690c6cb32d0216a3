"""The one protocol between `mitp bench` and its worker processes, both ends of the pipe.

A worker builds what it measures and reports it, then answers the parent's requests until the parent
closes it or goes away. An exception in the worker reaches the parent as a message it raises there, and
a worker that dies is an error naming it, never a hang. Standard library only: the onnxruntime workers
of `mitp bench inference` import this module and must not load torch.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

from .errors import UserError


def serve_requests(conn, start: Callable[[], tuple], user_errors: tuple[type[Exception], ...] = ()) -> None:
    """Worker side: ``start()`` builds the worker and returns ``(info, answer)``; ``info`` goes to the parent
    first, then ``answer(payload)`` for each request. An error of ``user_errors`` while starting is the
    user's input (an unknown spec, a bad config): the parent raises it as a UserError. Any other error's
    traceback is printed here first (the worker's stderr is the parent's)."""
    try:
        info, answer = start()
        conn.send(("ok", info))
    except Exception as err:  # noqa: BLE001 - reported to the parent, which raises it there
        user = isinstance(err, user_errors)
        if not user:
            traceback.print_exc(file=sys.stderr)
        conn.send(("error", f"{type(err).__name__}: {err}", user))
        conn.close()
        return
    while True:
        try:
            command, payload = conn.recv()
        except EOFError:  # the parent went away
            break
        if command == "close":
            break
        try:
            conn.send(("ok", answer(payload)))
        except Exception as err:  # noqa: BLE001 - reported to the parent
            traceback.print_exc(file=sys.stderr)
            conn.send(("error", f"{type(err).__name__}: {err}", False))
    conn.close()


class WorkerHandle:
    """The parent's end of one worker: ``target(conn, *args)`` calls :func:`serve_requests`; ``what`` names
    the worker in errors, which are ``error`` (or UserError for the user's input)."""

    def __init__(self, context, target: Callable, args: tuple, what: str, error: type[Exception]):
        self.what, self.error = what, error
        self.conn, child = context.Pipe()
        self.process = context.Process(target=target, args=(child, *args), name=f"mitp-bench {what}", daemon=True)
        self.process.start()
        child.close()  # the worker's end: a worker that dies is then an EOFError here, not a hang

    def receive(self):
        try:
            reply = self.conn.recv()
        except (EOFError, ConnectionError):
            self.process.join(timeout=5)
            code = self.process.exitcode
            hint = " (killed: out of memory?)" if code in (-9, 137) else ""
            raise self.error(f"the worker for {self.what} died with exit code {code}{hint}") from None
        if reply[0] == "error":
            raise (UserError if reply[2] else self.error)(f"{self.what}: {reply[1]}")
        return reply[1]

    def ask(self, payload):
        self.conn.send(("run", payload))
        return self.receive()

    def close(self, wait: float = 30) -> None:
        """Ask the worker to stop, give it ``wait`` seconds, then SIGTERM, then SIGKILL."""
        try:
            self.conn.send(("close", None))
        except (OSError, ValueError):
            pass
        self.process.join(timeout=wait)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        if self.process.is_alive():  # deaf to SIGTERM: never left running
            self.process.kill()
            self.process.join()
        self.conn.close()


__all__ = ["WorkerHandle", "serve_requests"]
