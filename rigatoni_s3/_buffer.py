"""Per-partition buffers and the global memory bound.

Rows wait in one :class:`PartitionBuffer` per partition until the buffer reaches
``max_batch_events`` or ``max_batch_bytes``, or ``flush_interval`` passes since its
first row (a timer per buffer, not a polling loop). Then it is *sealed*: handed
over for upload as one object.

A change stream is ordered, so when a collection sends an event from a later hour
(or day), its buffers of earlier periods are complete and are sealed at once
rather than waiting for their timer; a late event simply opens a new buffer.

Memory is counted from the moment rows are accepted until their object is written.
A writer that would push the total past ``max_buffer_bytes`` waits, in arrival
order, until uploads release enough (backpressure). A batch larger than the whole
bound is admitted alone so it cannot wait forever.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from rigatoni_s3._encoder import PreparedEvents
from rigatoni_s3.errors import BackpressureTimeout
from rigatoni_s3.keys import PartitionKey


@attrs.define(eq=False)
class PartitionBuffer:
    """The rows of one partition that will become one object."""

    partition: PartitionKey
    rows: list[Any] = attrs.Factory(list)
    nbytes: int = 0
    tickets: dict[int, int] = attrs.Factory(dict)
    """Rows per ``write_batch`` ticket, to settle delivery progress once written."""
    timer: asyncio.TimerHandle | None = None
    key: str = ""
    """Object key, fixed when the buffer is sealed so every retry writes the same key."""
    attempts: int = 0
    """Upload requests made for this object so far."""

    @property
    def events(self) -> int:
        return len(self.rows)


@attrs.define(eq=False)
class _Waiter:
    nbytes: int
    future: asyncio.Future[None]


class BufferSet:
    """All open buffers of a destination, and the bytes it holds."""

    def __init__(
        self,
        *,
        max_batch_events: int,
        max_batch_bytes: int,
        max_buffer_bytes: int,
        flush_interval: float,
        on_sealed: Callable[[PartitionBuffer], None],
    ) -> None:
        self._max_events = max_batch_events
        self._max_bytes = max_batch_bytes
        self._max_held = max_buffer_bytes
        self._interval = flush_interval
        self._on_sealed = on_sealed
        self._open: dict[PartitionKey, PartitionBuffer] = {}
        self._newest_period: dict[str | None, int] = {}
        """Latest time bucket seen per collection, to seal the buckets it supersedes."""
        self._waiters: deque[_Waiter] = deque()
        self.held_bytes = 0
        """Bytes accepted and not yet written (open buffers, sealed and failed batches)."""
        self.open_bytes = 0
        """Bytes in open buffers only."""

    # -- backpressure ---------------------------------------------------------------

    async def reserve(
        self, nbytes: int, timeout: float | None, on_wait: Callable[[], None]
    ) -> None:
        """Count ``nbytes`` against the bound, waiting for room first if needed.

        Before waiting, ``on_wait`` runs once (the caller sends failed objects again)
        and enough open buffers are sealed that their uploads will free the room.
        """
        if not self._waiters and self._fits(nbytes):
            self.held_bytes += nbytes
            return
        waiter = _Waiter(nbytes, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        on_wait()
        self._make_room(nbytes)
        try:
            async with asyncio.timeout(timeout):
                await waiter.future
        except BaseException as exc:
            if (
                waiter.future.done()
                and not waiter.future.cancelled()
                and waiter.future.exception() is None
            ):
                self.release(nbytes)  # room was granted just as we gave up: hand it back
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
                self._grant()
            if isinstance(exc, TimeoutError):
                raise BackpressureTimeout(
                    f"no buffer room for {nbytes} bytes within {timeout}s "
                    f"({self.held_bytes} of max_buffer_bytes={self._max_held} held); "
                    "nothing from this call was accepted"
                ) from None
            raise

    def release(self, nbytes: int) -> None:
        """Give back the bytes of a written (or abandoned) batch and admit waiting writers."""
        self.held_bytes -= nbytes
        self._grant()

    def fail_waiters(self, error: BaseException) -> bool:
        """Wake every waiting writer with ``error``; True if any was waiting."""
        told = False
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)
                told = True
        return told

    def _make_room(self, nbytes: int) -> None:
        """Seal buffers so that what is on its way out covers what ``nbytes`` lacks."""
        in_flight = self.held_bytes - self.open_bytes
        deficit = self.held_bytes + nbytes - self._max_held
        if deficit > in_flight:
            self.seal_largest(deficit - in_flight)

    def _fits(self, nbytes: int) -> bool:
        return self.held_bytes + nbytes <= self._max_held or self.held_bytes == 0

    def _grant(self) -> None:
        while self._waiters and self._fits(self._waiters[0].nbytes):
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                self.held_bytes += waiter.nbytes
                waiter.future.set_result(None)

    # -- buffering ------------------------------------------------------------------

    def add(self, ticket: int, prepared: PreparedEvents) -> None:
        """Append prepared rows to their buffers (bytes already reserved), sealing full ones."""
        for partition, part in prepared.partitions.items():
            rows, cumulative = part.rows, part.cumulative_bytes
            start, total = 0, len(rows)
            while start < total:
                buffer = self._open.get(partition) or self._open_buffer(partition)
                before = cumulative[start - 1] if start else 0
                by_bytes = bisect_right(
                    cumulative, before + self._max_bytes - buffer.nbytes, lo=start
                )
                end = min(total, start + self._max_events - buffer.events, by_bytes)
                if end == start:
                    if buffer.rows:  # the next row does not fit: this buffer is done
                        self.seal(buffer)
                        continue
                    end = start + 1  # a single row above max_batch_bytes goes alone
                added = cumulative[end - 1] - before
                buffer.rows.extend(rows[start:end] if start or end < total else rows)
                buffer.nbytes += added
                self.open_bytes += added
                buffer.tickets[ticket] = buffer.tickets.get(ticket, 0) + (end - start)
                start = end
                if buffer.events >= self._max_events or buffer.nbytes >= self._max_bytes:
                    self.seal(buffer)
        self._seal_superseded(prepared.partitions)  # after adding: a batch may span an hour

    def _seal_superseded(self, partitions: Iterable[PartitionKey]) -> None:
        """Seal open buffers whose collection has moved on to a later period."""
        moved = False
        for partition in partitions:
            period = partition.period_start
            if period is not None and period > self._newest_period.get(
                partition.collection, period - 1
            ):
                self._newest_period[partition.collection] = period
                moved = True
        if not moved:
            return
        for buffer in list(self._open.values()):
            key = buffer.partition
            if (
                key.period_start is not None
                and key.period_start < self._newest_period[key.collection]
            ):
                self.seal(buffer)

    def seal(self, buffer: PartitionBuffer) -> None:
        """Close ``buffer`` to new rows and hand it over for upload."""
        if self._open.get(buffer.partition) is not buffer:
            return
        del self._open[buffer.partition]
        if buffer.timer is not None:
            buffer.timer.cancel()
            buffer.timer = None
        self.open_bytes -= buffer.nbytes
        self._on_sealed(buffer)

    def seal_all(self) -> None:
        for buffer in list(self._open.values()):
            self.seal(buffer)

    def seal_largest(self, nbytes: int) -> None:
        """Seal the fullest buffers until at least ``nbytes`` are on their way out."""
        for buffer in sorted(self._open.values(), key=lambda b: b.nbytes, reverse=True):
            if nbytes <= 0:
                break
            nbytes -= buffer.nbytes
            self.seal(buffer)

    def _open_buffer(self, partition: PartitionKey) -> PartitionBuffer:
        buffer = PartitionBuffer(partition)
        buffer.timer = asyncio.get_running_loop().call_later(self._interval, self.seal, buffer)
        self._open[partition] = buffer
        return buffer
