"""The background task that turns sealed buffers into uploads.

Sealed buffers wait in a queue; the flusher starts one delivery task per buffer,
at most ``max_concurrent_uploads`` at a time. A delivery handles its own failures;
if one escapes anyway (a bug), ``on_crash`` runs so that no caller waits forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from rigatoni_s3._buffer import PartitionBuffer

log = logging.getLogger(__name__)


class Flusher:
    """Queue of sealed buffers and the task that delivers them concurrently."""

    def __init__(
        self,
        deliver: Callable[[PartitionBuffer], Coroutine[Any, Any, None]],
        max_concurrent: int,
        on_crash: Callable[[BaseException], None],
    ) -> None:
        self._deliver = deliver
        self._slots = asyncio.Semaphore(max_concurrent)
        self._queue: asyncio.Queue[PartitionBuffer] = asyncio.Queue()
        self._on_crash = on_crash
        self._deliveries: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rigatoni-s3-flusher")
        self._task.add_done_callback(self._check_crash)

    def submit(self, buffer: PartitionBuffer) -> None:
        """Queue a sealed buffer for delivery."""
        self._queue.put_nowait(buffer)

    async def stop(self) -> None:
        """Stop taking work and wait for deliveries already started."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            buffer = await self._queue.get()
            await self._slots.acquire()
            task = asyncio.create_task(self._deliver(buffer))
            self._deliveries.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._slots.release()
        self._check_crash(task)

    def _check_crash(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background delivery crashed", exc_info=exc)
            self._on_crash(exc)
