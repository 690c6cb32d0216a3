"""Processes that train together the way torchrun starts them (its environment variables, a
rendezvous on a free local port), forked from the fork server instead of started as new
interpreters. tests/test_train.py runs the real torchrun once."""

import time
from pathlib import Path

from mitp.app.launch import CliProcess
from mitp.app.serve.local import free_port


def train_together(argv: list[str], logs: Path, processes: int = 2, timeout_s: float = 240) -> None:
    """``mitp ARGV`` in ``processes`` ranks; fails with their logs' ends unless every rank exits 0 in time."""
    port = str(free_port())
    ranks = [
        CliProcess(
            argv,
            logs / f"rank-{rank}.log",
            env={
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(processes),
                "LOCAL_WORLD_SIZE": str(processes),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "OMP_NUM_THREADS": "1",
            },
        )
        for rank in range(processes)
    ]
    deadline = time.monotonic() + timeout_s
    for rank in ranks:
        rank.process.join(max(0.0, deadline - time.monotonic()))
    hung = [rank for rank in ranks if rank.process.is_alive()]
    for rank in hung:  # one rank waiting for ever on another is the failure being tested against
        rank.process.kill()
        rank.process.join()
    codes = [rank.process.exitcode for rank in ranks]
    assert not hung and codes == [0] * processes, (codes, [rank.tail()[-5:] for rank in ranks])
