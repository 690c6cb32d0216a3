"""Progress bars (rich): per epoch with loss and throughput, and for work counted in items."""

from __future__ import annotations

import contextlib
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def epoch_progress(total: int, done: int, description: str, enabled: bool = True, console=None):
    """Yield ``advance(loss, samples)``; draws nothing when ``enabled`` is False (other ranks, tests)."""
    if not enabled:
        yield lambda loss, samples: None
        return
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]} samples/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=done, loss="-", rate="-")
        started, seen = time.perf_counter(), 0

        def advance(loss: float, samples: int) -> None:
            nonlocal seen
            seen += samples
            rate = seen / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, loss=f"{loss:.4f}", rate=f"{rate:.1f}")

        yield advance


@contextlib.contextmanager
def count_progress(total: int, description: str, enabled: bool = True, console=None):
    """Yield ``advance(n)`` for work counted in items (``n`` more done); draws nothing when ``enabled`` is False."""
    if not enabled:
        yield lambda n: None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.update(task, advance=n)
