"""A rich progress bar as a ``track(iterable, description=..., total=...)`` callable."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@contextlib.contextmanager
def rich_tracker(console: Console | None = None, enabled: bool = True):
    """Context manager yielding a ``track`` function; bars (on stderr) disappear when done.

    Disabled, or when the console is not a terminal (logs, pipes), ``track`` passes items through.
    """
    console = console or Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda iterable, description="", total=None: iterable
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )

    def track(iterable, description: str = "", total: int | None = None):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)
        progress.remove_task(task)

    with progress:
        yield track


__all__ = ["rich_tracker"]
