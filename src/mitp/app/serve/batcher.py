"""Group concurrent requests into one model batch: up to ``max_batch`` pairs, waiting at most ``max_wait``.

Each request is prepared (decoded, tokenised) in its own handler, so a bad input fails that
request alone; the batcher only stacks ready pairs, runs the model in a worker thread and hands
every request its own rows of the logits.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


class Overloaded(RuntimeError):
    """The batcher's queue is full: the request should be retried later."""


@dataclass
class _Request:
    pairs: list
    future: asyncio.Future


@dataclass
class BatchStats:
    requests: int = 0
    pairs: int = 0
    batches: int = 0
    largest: int = 0
    sizes: list = field(default_factory=list, repr=False)


class Batcher:
    def __init__(self, logits_fn, max_batch: int = 16, max_wait_ms: float = 10.0, max_queue: int = 256):
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be >= 1, got {max_batch}, {max_queue}")
        self.max_queue = max_queue
        self.logits_fn = logits_fn
        self.max_batch = max_batch
        self.max_wait = max(0.0, max_wait_ms) / 1000
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mitp-model")

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def logits(self, pairs: list):
        """The logits of ``pairs`` (prepared inputs), computed in a batch with whatever else is waiting."""
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Request(pairs, future))
        except asyncio.QueueFull:
            raise Overloaded(f"server busy: {self.max_queue} requests already wait for the model") from None
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = [await self._queue.get()]
            size = len(group[0].pairs)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                remaining = deadline - loop.time()
                try:
                    request = (
                        await asyncio.wait_for(self._queue.get(), remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                group.append(request)
                size += len(request.pairs)
            live = [r for r in group if not r.future.done()]  # a client may have gone away meanwhile
            if not live:
                continue
            pairs = [pair for request in live for pair in request.pairs]
            try:
                logits = await loop.run_in_executor(self._executor, self.logits_fn, pairs)
            except Exception as err:  # the model failed: every request of the batch gets the error
                for request in live:
                    if not request.future.done():
                        request.future.set_exception(err)
                continue
            self.stats.requests += len(live)
            self.stats.pairs += len(pairs)
            self.stats.batches += 1
            self.stats.largest = max(self.stats.largest, len(pairs))
            start = 0
            for request in live:
                rows = logits[start : start + len(request.pairs)]
                start += len(request.pairs)
                if not request.future.done():
                    request.future.set_result(rows)
