"""CPU threads: how many this process may use, how many a run takes, and whether the machine is oversubscribed.

Two trainings on two cores that each spin two threads slow each other down several times over; one
thread each runs both at full speed. So a run's thread count is explicit (``train.num_threads``), set
before any torch work, and a run that starts on a machine already busy says so once.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on (its affinity mask), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when the environment sets it, else every core this process may use."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else available_cores()


def use_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (and OpenMP's, for child processes) to ``threads`` (None:
    :func:`default_threads`); returns the number set."""
    import torch  # the CLI's start-up path imports this module; torch only once a run starts

    threads = threads or default_threads()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def oversubscribed(threads: int, load: float | None = None, cores: int | None = None) -> str | None:
    """A one-line warning when ``threads`` more busy threads would exceed the cores, from the 1-minute load
    average (other processes' threads), else None."""
    load = os.getloadavg()[0] if load is None else load
    cores = available_cores() if cores is None else cores
    if load + threads <= cores + 0.5:
        return None
    return (
        f"note: this run takes {threads} thread(s) on {cores} core(s) while other processes keep about "
        f"{load:.1f} busy: runs that share the cores slow each other down several times over. Give each "
        "run its share (train.num_threads, or OMP_NUM_THREADS=1 for two runs on two cores), or let "
        "`mitp compare --jobs N` split the cores"
    )


__all__ = ["available_cores", "default_threads", "oversubscribed", "use_threads"]
