"""Delivery: the outcome of each upload (Deliveries, without a server), and the guarantees
end to end: nothing lost, nothing duplicated, durable positions in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import pytest

from rigatoni_s3 import S3Destination
from rigatoni_s3._buffer import BufferSet, PartitionBuffer
from rigatoni_s3._delivery import Deliveries
from rigatoni_s3._encoder import EncodedObject
from rigatoni_s3._flusher import Flusher
from rigatoni_s3._progress import DeliveryProgress
from rigatoni_s3.errors import (
    DeliveryError,
    RetriesExhaustedError,
    UploadError,
)
from rigatoni_s3.keys import PartitionKey
from rigatoni_s3.stats import Counters
from tests.faultproxy import FaultProxy
from tests.helpers import MakeConfig, ids_in, list_keys, raw_event, raw_events


@pytest.mark.parametrize("compression", ["none", "zstd", "gzip"])
async def test_retry_after_lost_response_is_not_a_duplicate(
    make_proxied_config: MakeConfig,
    fault_proxy: FaultProxy,
    s3_client: Any,
    bucket: str,
    compression: str,
) -> None:
    """The server stored the object but the reply was lost: the retry's 412 counts as done."""
    async with S3Destination(make_proxied_config(max_retries=3, compression=compression)) as dest:
        fault_proxy.fail_next(["reset_after"])
        await dest.write_batch(raw_events(50))
        await dest.flush()
    assert fault_proxy.counts["reset_after"] == 1
    assert len(list_keys(s3_client, bucket)) == 1
    counts = ids_in(s3_client, bucket)
    assert sorted(counts) == list(range(50))
    assert set(counts.values()) == {1}


async def test_crashed_flusher_fails_waiters_instead_of_hanging(make_config: MakeConfig) -> None:
    """If delivery itself breaks, flush() and later writes raise instead of waiting forever."""
    dest = S3Destination(make_config())
    await dest.start()

    async def broken(buffer: Any) -> None:
        raise RuntimeError("bug in delivery")

    dest._flusher._deliver = broken
    await dest.write_batch(raw_events(5))
    with pytest.raises(DeliveryError, match="bug in delivery"):
        await asyncio.wait_for(dest.flush(), 10)
    with pytest.raises(DeliveryError):
        await dest.write_batch(raw_events(1))
    with pytest.raises(DeliveryError):
        await dest.close()


async def test_on_durable_reports_positions_in_order(make_config: MakeConfig) -> None:
    """The callback sees each new durable token, never one whose events are not yet written."""
    seen: list[Any] = []
    async with S3Destination(make_config(on_durable=seen.append, max_batch_events=10)) as dest:
        for start in range(0, 50, 10):
            await dest.write_batch(raw_events(10, start=start))
            await dest.flush()
            assert seen[-1] == raw_event(start + 9)["_id"]
    assert seen == [raw_event(n)["_id"] for n in (9, 19, 29, 39, 49)]


async def test_server_down_bounds_memory_and_recovers(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """With S3 unreachable writers block at the memory bound; when it returns, all is written."""
    limit = 30_000
    config = make_proxied_config(
        max_buffer_bytes=limit, max_batch_bytes=5_000, max_retries=1, retry_max_delay=0.05
    )
    async with S3Destination(config) as dest:
        fault_proxy.down = True
        accepted = 0
        peak = 0
        while accepted < 2000:
            try:
                await dest.write_batch(raw_events(10, start=accepted), timeout=0.5)
            except RetriesExhaustedError:
                continue  # reported once; the events of that call were not accepted
            except TimeoutError:
                break
            accepted += 10
            peak = max(peak, dest._buffers.held_bytes)
        assert 0 < accepted < 2000
        assert peak <= limit
        fault_proxy.down = False
        await dest.flush()  # the kept objects go out; the failures reported before are moot
        await dest.write_batch(raw_events(10, start=5000), timeout=30)
    counts = ids_in(s3_client, bucket)
    assert sorted(counts) == [*range(accepted), *range(5000, 5010)]
    assert set(counts.values()) == {1}


async def test_flush_after_recovery_retries_what_failed_before_it(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """An attempt whose failure was decided before flush() was called does not fail it."""
    config = make_proxied_config(max_batch_events=10, max_retries=0)
    async with S3Destination(config) as dest:
        fault_proxy.fail_next(["503"])
        fault_proxy.hold()
        await dest.write_batch(raw_events(10))  # a full batch: sealed and sent at once
        await fault_proxy.until_held()  # the request is in, its 503 already chosen
        flushing = asyncio.create_task(dest.flush())
        await asyncio.sleep(0.05)
        fault_proxy.release()
        await flushing
        assert dest.durable_resume_token == raw_event(9)["_id"]
    assert fault_proxy.counts["503"] == 1
    assert sorted(ids_in(s3_client, bucket)) == list(range(10))


async def test_random_faults_lose_and_duplicate_nothing(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """Seeded 503s, 500s, resets before and after the server stored the body: exactly once."""
    config = make_proxied_config(max_retries=8, max_batch_events=200)
    async with S3Destination(config) as dest:
        fault_proxy.fail_randomly(0.15, ("503", "500", "reset", "reset_after", "delay"))
        for start in range(0, 10_000, 500):
            await dest.write_batch(raw_events(500, collections=("a", "b", "c"), start=start))
        await dest.flush()
        assert dest.durable_resume_token == raw_event(9_999)["_id"]
    assert fault_proxy.faults_injected > 5
    counts = ids_in(s3_client, bucket)
    assert len(counts) == 10_000
    assert set(counts.values()) == {1}


async def test_durable_token_never_runs_ahead_of_s3(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """At every step, every event up to the durable position is readable in S3."""
    config = make_proxied_config(max_retries=0, max_batch_events=30)
    async with S3Destination(config) as dest:
        fault_proxy.fail_randomly(0.3, ("503", "reset", "reset_after"))
        written = 0
        for step in range(12):
            await asyncio.sleep(0)
            try:
                await dest.write_batch(raw_events(45, collections=("x", "y"), start=written))
                written += 45
                if step % 3 == 2:
                    await dest.flush()
            except RetriesExhaustedError:
                pass
            token = dest.durable_resume_token
            if token is not None:
                durable_until = int(token["_data"][4:])
                present = set(ids_in(s3_client, bucket))
                assert set(range(durable_until + 1)) <= present
        fault_proxy.fail_randomly(0.0, ())
        for _ in range(3):  # an upload already in flight may still fail once
            try:
                await dest.flush()
                break
            except RetriesExhaustedError:
                continue
    assert sorted(ids_in(s3_client, bucket)) == list(range(written))


async def test_logs_and_errors_hold_no_secrets_or_payloads(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing logged, at any level, nor any error message, contains credentials or document data."""
    secret = "SECRETKEY-do-not-log"
    marker = "PAYLOAD-do-not-log"
    config = attrs.evolve(make_proxied_config(max_retries=1), aws_secret_access_key=secret)
    events = raw_events(20)
    for event in events:
        event["fullDocument"]["secret"] = marker
    events[3]["fullDocument"]["bad"] = object()
    messages: list[str] = []
    caplog.set_level(logging.DEBUG)
    async with S3Destination(config) as dest:
        fault_proxy.fail_next(["503", "503", "503"])
        try:
            await dest.write_batch(events)
        except Exception as exc:
            messages.append(str(exc))
        try:
            await dest.flush()
        except Exception as exc:
            messages.append(str(exc))
        await dest.flush()
    assert messages, "the rejected event and the failed upload should both have raised"
    for record in caplog.records:
        text = record.getMessage() + " " + " ".join(map(str, record.__dict__.values()))
        assert secret not in text
        assert marker not in text
    for message in messages:
        assert secret not in message
        assert marker not in message


# -- Deliveries: the outcome of each upload, without a server -------------------------------


class RecordingFlusher(Flusher):
    """A flusher that delivers nothing and records what is submitted to it."""

    def __init__(self) -> None:
        super().__init__(self._never, 1, lambda exc: None)
        self.submitted: list[PartitionBuffer] = []

    async def _never(self, buffer: PartitionBuffer) -> None:
        raise AssertionError("nothing is delivered in these tests")

    def submit(self, buffer: PartitionBuffer) -> None:
        self.submitted.append(buffer)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def deliveries_with(flusher: RecordingFlusher, executor: ThreadPoolExecutor) -> Deliveries:
    buffers = BufferSet(
        max_batch_events=100,
        max_batch_bytes=1000,
        max_buffer_bytes=10_000,
        flush_interval=3600.0,
        on_sealed=flusher.submit,
    )
    return Deliveries(
        buffers=buffers,
        progress=DeliveryProgress(),
        flusher=flusher,
        counters=Counters(),
        bucket="bucket",
        dead_letter_dir=None,
        retry_pause=3600.0,
        running=lambda: True,
        executor=executor,
    )


def failed_buffer(name: str = "users") -> PartitionBuffer:
    buffer = PartitionBuffer(PartitionKey(name, None), rows=[b"row"], nbytes=3, tickets={1: 1})
    buffer.key = f"{name}/object.jsonl"
    return buffer


OBJ = EncodedObject(b"row", "application/x-ndjson", None, 1, 3)


async def test_a_failed_upload_is_kept_and_resubmitted_later(executor: ThreadPoolExecutor) -> None:
    """A failed buffer stays in undelivered until resubmit_failed sends it to the flusher again."""
    flusher = RecordingFlusher()
    deliveries = deliveries_with(flusher, executor)
    buffer = failed_buffer()
    error = UploadError("bucket", buffer.key, 1, 1, "denied")
    await deliveries.upload_failed(buffer, OBJ, error, started=0.0)
    assert flusher.submitted == []
    assert deliveries.undelivered == [buffer]
    deliveries.resubmit_failed()
    assert flusher.submitted == [buffer]
    assert deliveries.undelivered == []


async def test_an_error_nobody_waits_for_is_raised_once(executor: ThreadPoolExecutor) -> None:
    """raise_unreported raises a failure no caller has heard of, then never again."""
    deliveries = deliveries_with(RecordingFlusher(), executor)
    buffer = failed_buffer()
    error = UploadError("bucket", buffer.key, 1, 1, "denied")
    await deliveries.upload_failed(buffer, OBJ, error, started=0.0)
    with pytest.raises(UploadError) as info:
        deliveries.raise_unreported()
    assert info.value is error
    deliveries.raise_unreported()  # told once: nothing more to raise


async def test_a_crash_is_raised_as_a_fresh_copy_each_time(executor: ThreadPoolExecutor) -> None:
    """Two raises of a crash give two exception objects with the same message and cause."""
    deliveries = deliveries_with(RecordingFlusher(), executor)
    bug = RuntimeError("bug in delivery")
    deliveries.crashed(bug)
    raised: list[DeliveryError] = []
    for _ in range(2):
        with pytest.raises(DeliveryError) as info:
            deliveries.raise_unreported()
        raised.append(info.value)
    first, second = raised
    assert first is not second
    assert str(first) == str(second)
    assert "bug in delivery" in str(first)
    assert first.__cause__ is bug
    assert second.__cause__ is bug


async def test_retries_exhausted_before_a_flush_are_resubmitted(
    executor: ThreadPoolExecutor,
) -> None:
    """An upload that gave up after starting before flush_requested goes straight back to the
    flusher; one started after the flush is kept for retry instead."""
    flusher = RecordingFlusher()
    deliveries = deliveries_with(flusher, executor)
    deliveries.flush_requested(at=10.0)
    stale, fresh = failed_buffer("stale"), failed_buffer("fresh")
    await deliveries.upload_failed(
        stale, OBJ, RetriesExhaustedError("bucket", stale.key, 3, 1, "503"), started=5.0
    )
    assert flusher.submitted == [stale]
    assert deliveries.undelivered == []
    deliveries.raise_unreported()  # a resubmitted buffer is no error yet
    await deliveries.upload_failed(
        fresh, OBJ, RetriesExhaustedError("bucket", fresh.key, 3, 1, "503"), started=15.0
    )
    assert flusher.submitted == [stale]
    assert deliveries.undelivered == [fresh]
    deliveries.stop()
