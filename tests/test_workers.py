"""The protocol between a benchmark and its worker processes (mitp.app.workers): answers, errors, deaths."""

import multiprocessing
import os

import pytest

from mitp.app.errors import UserError
from mitp.app.workers import WorkerHandle, serve_requests

CONTEXT = multiprocessing.get_context("spawn")  # as `mitp bench inference`: the targets travel by name


class MeasureError(RuntimeError):
    pass


def doubling(conn, offset: int) -> None:
    serve_requests(conn, lambda: ({"pid": os.getpid()}, lambda n: 2 * n + offset))


def failing_start(conn, user: bool) -> None:
    def start():
        raise (ValueError if user else KeyError)("no such spec")

    serve_requests(conn, start, user_errors=(ValueError,))


def failing_answer(conn) -> None:
    serve_requests(conn, lambda: ({}, lambda payload: 1 / payload))


def dying(conn) -> None:
    serve_requests(conn, lambda: ({}, lambda payload: os._exit(3)))


def deaf(conn) -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve_requests(conn, lambda: ({}, lambda payload: None))


def handle(target, *args) -> WorkerHandle:
    return WorkerHandle(CONTEXT, target, args, "the test worker", MeasureError)


def test_a_worker_reports_its_start_then_answers_each_request_in_its_own_process():
    worker = handle(doubling, 1)
    try:
        assert worker.receive()["pid"] not in (os.getpid(), None)
        assert [worker.ask(n) for n in (0, 5, 20)] == [1, 11, 41]
    finally:
        worker.close()
    assert not worker.process.is_alive() and worker.process.exitcode == 0


@pytest.mark.parametrize("user, raised", [(True, UserError), (False, MeasureError)])
def test_an_error_while_starting_is_raised_in_the_parent_naming_the_worker(user, raised):
    worker = handle(failing_start, user)
    with pytest.raises(raised, match=r"^the test worker: (ValueError|KeyError): .*no such spec"):
        worker.receive()
    worker.close()


def test_an_error_in_a_request_is_raised_in_the_parent_and_the_worker_goes_on(capfd):
    worker = handle(failing_answer)
    try:
        worker.receive()
        with pytest.raises(MeasureError, match="the test worker: ZeroDivisionError"):
            worker.ask(0)
        assert worker.ask(4) == 0.25
    finally:
        worker.close()
    assert "Traceback" in capfd.readouterr().err  # the worker printed where it failed


def test_a_worker_that_dies_is_an_error_with_its_exit_code_not_a_hang():
    worker = handle(dying)
    worker.receive()
    with pytest.raises(MeasureError, match="the worker for the test worker died with exit code 3"):
        worker.ask(None)
    worker.close()


def test_a_worker_deaf_to_close_and_sigterm_is_killed_never_left_running():
    worker = handle(deaf)
    worker.receive()
    worker.conn.send = lambda message: None  # the close request never arrives
    worker.close(wait=0.5)
    assert not worker.process.is_alive() and worker.process.exitcode == -9
