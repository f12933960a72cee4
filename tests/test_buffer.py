"""BufferSet: when buffers are sealed, and the memory bound with its backpressure (no server)."""

from __future__ import annotations

import asyncio
from itertools import accumulate

import pytest

from rigatoni_s3._buffer import BufferSet, PartitionBuffer
from rigatoni_s3._encoder import PartitionRows, PreparedEvents
from rigatoni_s3.errors import BackpressureTimeout, DeliveryError
from rigatoni_s3.keys import PartitionKey

USERS = PartitionKey("users", None)
HOUR = 3600


def prepared(partitions: dict[PartitionKey, list[int]]) -> PreparedEvents:
    """A prepared batch whose rows are their own sizes in bytes."""
    parts = {
        key: PartitionRows(list(sizes), list(accumulate(sizes)))
        for key, sizes in partitions.items()
    }
    total = sum(sum(sizes) for sizes in partitions.values())
    accepted = sum(len(sizes) for sizes in partitions.values())
    return PreparedEvents(parts, [], accepted, total, None)


def buffer_set(
    sealed: list[PartitionBuffer],
    *,
    max_batch_events: int = 1000,
    max_batch_bytes: int = 1000,
    max_buffer_bytes: int = 10_000,
    flush_interval: float = 3600.0,
) -> BufferSet:
    return BufferSet(
        max_batch_events=max_batch_events,
        max_batch_bytes=max_batch_bytes,
        max_buffer_bytes=max_buffer_bytes,
        flush_interval=flush_interval,
        on_sealed=sealed.append,
    )


async def spin() -> None:
    """Let every ready task run until it blocks (no wall-clock waiting)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_buffer_seals_at_max_events() -> None:
    """Seven rows with max_batch_events=3 give two sealed buffers of three; one row stays open."""
    sealed: list[PartitionBuffer] = []
    buffers = buffer_set(sealed, max_batch_events=3)
    buffers.add(1, prepared({USERS: [1] * 7}))
    assert [b.events for b in sealed] == [3, 3]
    assert buffers.open_bytes == 1
    assert sealed[0].tickets == {1: 3}


async def test_a_buffer_seals_before_it_would_pass_max_bytes() -> None:
    """Rows of 4 bytes with max_batch_bytes=10 go two to a buffer: none holds more than 10."""
    sealed: list[PartitionBuffer] = []
    buffers = buffer_set(sealed, max_batch_bytes=10)
    buffers.add(1, prepared({USERS: [4] * 5}))
    assert [(b.events, b.nbytes) for b in sealed] == [(2, 8), (2, 8)]
    assert buffers.open_bytes == 4


async def test_a_row_above_max_batch_bytes_goes_alone() -> None:
    """A 25-byte row with max_batch_bytes=10 seals the buffer before it and is sealed on its own."""
    sealed: list[PartitionBuffer] = []
    buffers = buffer_set(sealed, max_batch_bytes=10)
    buffers.add(1, prepared({USERS: [3, 25, 3]}))
    assert [b.rows for b in sealed] == [[3], [25]]
    assert buffers.open_bytes == 3


async def test_flush_interval_seals_a_quiet_buffer() -> None:
    """A buffer nobody fills is sealed by its own timer once flush_interval has passed."""
    done: asyncio.Future[PartitionBuffer] = asyncio.get_running_loop().create_future()
    buffers = BufferSet(
        max_batch_events=1000,
        max_batch_bytes=1000,
        max_buffer_bytes=10_000,
        flush_interval=0.001,
        on_sealed=done.set_result,
    )
    buffers.add(1, prepared({USERS: [5, 5]}))
    assert not done.done()
    buffer = await asyncio.wait_for(done, 10)
    assert buffer.rows == [5, 5]
    assert buffers.open_bytes == 0


async def test_a_later_period_seals_the_earlier_one_of_its_collection() -> None:
    """An event from the next hour seals that collection's earlier hour, not other collections'."""
    sealed: list[PartitionBuffer] = []
    buffers = buffer_set(sealed)
    buffers.add(1, prepared({PartitionKey("users", HOUR): [1], PartitionKey("orders", HOUR): [2]}))
    assert sealed == []
    buffers.add(2, prepared({PartitionKey("users", 2 * HOUR): [3]}))
    assert [b.partition for b in sealed] == [PartitionKey("users", HOUR)]
    assert buffers.open_bytes == 5


async def test_writers_wait_in_arrival_order_until_release() -> None:
    """A small writer that would fit still queues behind an earlier large one until release."""
    buffers = buffer_set([], max_buffer_bytes=10)
    await buffers.reserve(8, None, lambda: None)
    granted: list[str] = []

    async def writer(name: str, nbytes: int) -> None:
        await buffers.reserve(nbytes, None, lambda: None)
        granted.append(name)

    large = asyncio.create_task(writer("large", 5))
    await spin()
    small = asyncio.create_task(writer("small", 1))
    await spin()
    assert granted == []
    buffers.release(3)  # 5 held: room for the large writer, and then none for the small one
    await spin()
    assert granted == ["large"]
    assert buffers.held_bytes == 10
    buffers.release(5)
    await asyncio.wait_for(asyncio.gather(large, small), 10)
    assert granted == ["large", "small"]
    assert buffers.held_bytes == 6


async def test_backpressure_timeout_accepts_nothing() -> None:
    """A writer that times out holds no bytes and leaves no waiter behind."""
    buffers = buffer_set([], max_buffer_bytes=10)
    await buffers.reserve(8, None, lambda: None)
    with pytest.raises(BackpressureTimeout, match="nothing from this call was accepted"):
        await buffers.reserve(5, 0.001, lambda: None)
    assert buffers.held_bytes == 8
    await asyncio.wait_for(buffers.reserve(2, None, lambda: None), 10)  # not queued behind it
    assert buffers.held_bytes == 10


async def test_making_room_seals_the_largest_open_buffers() -> None:
    """A writer that must wait seals the fullest buffers, just enough to cover what it lacks."""
    sealed: list[PartitionBuffer] = []
    buffers = buffer_set(sealed, max_buffer_bytes=100)
    a, b, c = PartitionKey("a", None), PartitionKey("b", None), PartitionKey("c", None)
    await buffers.reserve(90, None, lambda: None)
    buffers.add(1, prepared({a: [30], b: [50], c: [10]}))
    waits: list[None] = []
    writer = asyncio.create_task(buffers.reserve(40, None, lambda: waits.append(None)))
    await spin()
    assert waits == [None]
    assert [buffer.partition for buffer in sealed] == [b]  # 30 bytes lacking: 50 cover it
    assert not writer.done()
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    assert buffers.held_bytes == 90


async def test_fail_waiters_wakes_every_waiting_writer_with_the_error() -> None:
    """fail_waiters raises the error in each blocked writer and says whether any was waiting."""
    buffers = buffer_set([], max_buffer_bytes=10)
    await buffers.reserve(10, None, lambda: None)
    writers = [asyncio.create_task(buffers.reserve(5, None, lambda: None)) for _ in range(2)]
    await spin()
    error = DeliveryError("bucket gone")
    assert buffers.fail_waiters(error) is True
    results = await asyncio.gather(*writers, return_exceptions=True)
    assert results == [error, error]
    assert buffers.fail_waiters(error) is False
    assert buffers.held_bytes == 10
