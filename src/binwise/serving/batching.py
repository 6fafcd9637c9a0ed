"""Dynamic batching: many concurrent requests, one model call per batch.

Requests each submit one preprocessed image. A single asyncio task collects them into a batch of at
most ``max_batch`` images, waiting at most ``max_wait_ms`` after the first one arrives, and runs the
model on the batch in a worker thread so the event loop keeps accepting requests meanwhile. While a
batch runs, new arrivals queue up and form the next batch, so under load batches fill by themselves
and at low load a lone request waits at most ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import Counter
from typing import Callable

import numpy as np


class QueueFull(Exception):
    """More images are waiting than the queue holds; the caller should retry later (HTTP 503)."""


class DynamicBatcher:
    """Gathers single images into batches for ``run_batch(NCHW array) -> (N, ...) array``.

    ``run_batch`` runs on ``executor`` (one thread by default), never on the event loop.
    """

    def __init__(self, run_batch: Callable[[np.ndarray], np.ndarray], max_batch: int = 32,
                 max_wait_ms: float = 5.0, max_queue: int = 256,
                 executor: concurrent.futures.Executor | None = None):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be at least 1 and max_wait_ms not negative")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.executor = executor
        self.batch_sizes: Counter[int] = Counter()  # batch size -> how many batches had it
        # called with the seconds each photo waited from ``submit`` until its batch went to the model
        # thread: set by whoever watches (the service's metrics), so batching needs no metrics library
        self.on_queue_wait: Callable[[float], None] | None = None
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.max_queue)
        self._task = asyncio.create_task(self._run(), name="binwise-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._queue is not None and not self._queue.empty():
            _, future, _ = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the service is shutting down"))

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, array: np.ndarray) -> np.ndarray:
        """The model's output row for one CHW image; raises QueueFull when the queue is full."""
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self._queue.put_nowait((array, future, loop.time()))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.max_queue} images are already waiting") from None
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            # a client that hung up has cancelled its future: do not spend model time on it
            items = [(array, future, queued_at) for array, future, queued_at in items if not future.done()]
            if not items:
                continue
            if self.on_queue_wait is not None:
                now = loop.time()
                for _, _, queued_at in items:
                    self.on_queue_wait(now - queued_at)
            batch = np.stack([array for array, _, _ in items])
            try:
                outputs = await loop.run_in_executor(self.executor, self.run_batch, batch)
                if len(outputs) != len(items):
                    raise RuntimeError(f"the model returned {len(outputs)} rows for a batch of {len(items)}")
            except Exception as e:  # the model failed: every waiting request gets the error
                for _, future, _ in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.batch_sizes[len(items)] += 1
            for (_, future, _), row in zip(items, outputs):
                if not future.done():
                    future.set_result(row)
