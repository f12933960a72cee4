"""Flusher: bounded concurrent deliveries, crash reporting, and stop (no server)."""

from __future__ import annotations

import asyncio

from rigatoni_s3._buffer import PartitionBuffer
from rigatoni_s3._flusher import Flusher
from rigatoni_s3.keys import PartitionKey


def buffer(n: int) -> PartitionBuffer:
    return PartitionBuffer(PartitionKey(f"c{n}", None))


def never_crashes(exc: BaseException) -> None:
    raise AssertionError(f"unexpected crash: {exc!r}")


async def spin() -> None:
    """Let every ready task run until it blocks (no wall-clock waiting)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_at_most_max_concurrent_deliveries_run_at_once() -> None:
    """Five buffers with max_concurrent=2: two deliveries start, the rest wait for a slot."""
    gate = asyncio.Event()
    active, peak, delivered = 0, 0, []

    async def deliver(buf: PartitionBuffer) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await gate.wait()
        active -= 1
        delivered.append(buf)

    flusher = Flusher(deliver, 2, never_crashes)
    flusher.start()
    buffers = [buffer(n) for n in range(5)]
    for buf in buffers:
        flusher.submit(buf)
    await spin()
    assert active == 2
    gate.set()
    while len(delivered) < 5:
        await asyncio.sleep(0)
    assert peak == 2
    assert sorted(b.partition.collection or "" for b in delivered) == ["c0", "c1", "c2", "c3", "c4"]
    await flusher.stop()


async def test_a_delivery_that_raises_calls_on_crash() -> None:
    """An exception escaping a delivery reaches on_crash, the same object."""
    crashed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    boom = RuntimeError("bug in delivery")

    async def deliver(buf: PartitionBuffer) -> None:
        raise boom

    flusher = Flusher(deliver, 1, crashed.set_result)
    flusher.start()
    flusher.submit(buffer(0))
    assert await asyncio.wait_for(crashed, 10) is boom
    await flusher.stop()


async def test_stop_waits_for_started_deliveries() -> None:
    """stop() returns only after a delivery already under way has finished."""
    started, gate = asyncio.Event(), asyncio.Event()
    finished: list[PartitionBuffer] = []

    async def deliver(buf: PartitionBuffer) -> None:
        started.set()
        await gate.wait()
        finished.append(buf)

    flusher = Flusher(deliver, 1, never_crashes)
    flusher.start()
    buf = buffer(0)
    flusher.submit(buf)
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(flusher.stop())
    await spin()
    assert not stopping.done()
    gate.set()
    await asyncio.wait_for(stopping, 10)
    assert finished == [buf]
