"""S3Destination against a real S3 server: thresholds, durability, errors, concurrency."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from rigatoni_s3 import ChangeEvent, Compression, KeyGenerationStrategy, S3Destination
from rigatoni_s3.errors import (
    BackpressureTimeout,
    BucketNotFoundError,
    DestinationClosedError,
    RejectedEventsError,
    RetriesExhaustedError,
    UndeliveredError,
)
from rigatoni_s3.testing import S3Endpoint
from tests.faultproxy import FaultProxy
from tests.helpers import (
    BASE_TIME,
    MakeConfig,
    ids_in,
    iter_jsonl,
    list_keys,
    raw_event,
    raw_events,
)


async def wait_for_objects(
    client: Any, bucket: str, count: int, timeout: float = 15.0
) -> list[str]:
    """Poll the bucket until it holds ``count`` objects (uploads happen in the background)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        keys = list_keys(client, bucket)
        if len(keys) >= count or loop.time() > deadline:
            return keys
        await asyncio.sleep(0.05)


async def test_events_are_durable_after_flush(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """flush() returns only once every event is readable, in the object of its partition."""
    config = make_config(prefix="mongodb/events")
    events = raw_events(300, collections=("users", "orders", "items"))
    async with S3Destination(config) as dest:
        await dest.write_batch(events)
        await dest.flush()
        records = list(iter_jsonl(s3_client, bucket))
        assert len(records) == 300
        for key, record in records:
            assert key.startswith(f"mongodb/events/{record['collection']}/2025/01/15/10/")
            assert key.endswith(".jsonl")
        assert sorted(r["document_key"]["_id"] for _, r in records) == list(range(300))
        assert dest.durable_resume_token == events[-1]["_id"]


async def test_records_match_their_input(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """Each line holds exactly the fields of the change event that went in."""
    event = raw_event(7, "users")
    async with S3Destination(make_config()) as dest:
        await dest.write_batch([event, ChangeEvent.from_change_stream(raw_event(8))])
    records = {r["document_key"]["_id"]: r for _, r in iter_jsonl(s3_client, bucket)}
    assert records[7] == {
        "operation": "insert",
        "database": "shop",
        "collection": "users",
        "cluster_time": (BASE_TIME + timedelta(seconds=7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "document_key": {"_id": 7},
        "full_document": event["fullDocument"],
        "update_description": None,
        "resume_token": event["_id"],
        "full_document_before_change": None,
        "wall_time": None,
        "cluster_time_increment": 1,
        "transaction": None,
        "extra": None,
    }
    assert records[8]["full_document"]["name"] == "user 8"


async def test_buffer_is_written_when_it_reaches_max_events(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """250 events with max_batch_events=100 give two full objects at once, the rest on flush."""
    async with S3Destination(make_config(max_batch_events=100)) as dest:
        await dest.write_batch(raw_events(250))
        keys = await wait_for_objects(s3_client, bucket, 2)
        assert len(keys) == 2
        assert [len(list(iter_jsonl(s3_client, bucket, k))) for k in keys] == [100, 100]
        await dest.flush()
    assert sorted(ids_in(s3_client, bucket)) == list(range(250))
    assert len(list_keys(s3_client, bucket)) == 3


async def test_buffer_is_written_when_it_reaches_max_bytes(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """No object holds more encoded bytes than max_batch_bytes."""
    line_size = len(json.dumps(raw_event(0)))  # a rough size of one encoded row
    limit = line_size * 10
    async with S3Destination(make_config(max_batch_bytes=limit)) as dest:
        await dest.write_batch(raw_events(100))
    keys = list_keys(s3_client, bucket)
    assert len(keys) >= 5
    for key in keys:
        size = s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        assert size <= limit
    assert sorted(ids_in(s3_client, bucket)) == list(range(100))


async def test_buffer_is_written_after_flush_interval(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """A quiet partition is written by its timer, without flush()."""
    async with S3Destination(make_config(flush_interval=0.2)) as dest:
        await dest.write_batch(raw_events(5))
        keys = await wait_for_objects(s3_client, bucket, 1)
        assert len(keys) == 1
        assert dest.durable_resume_token == raw_event(4)["_id"]
    assert sorted(ids_in(s3_client, bucket)) == [0, 1, 2, 3, 4]


async def test_close_drains_everything(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """Leaving the context writes every buffered event; close() is idempotent."""
    dest = S3Destination(make_config(key_strategy=KeyGenerationStrategy.HIVE_PARTITIONED))
    async with dest:
        for start in range(0, 1000, 100):
            await dest.write_batch(raw_events(100, collections=("a", "b"), start=start))
    await dest.close()
    assert sorted(ids_in(s3_client, bucket)) == list(range(1000))
    assert {k.split("/")[0] for k in list_keys(s3_client, bucket)} == {
        "collection=a",
        "collection=b",
    }


async def test_writing_after_close_raises(make_config: MakeConfig) -> None:
    """A closed destination refuses events with a clear error."""
    dest = S3Destination(make_config())
    async with dest:
        await dest.write_batch(raw_events(1))
    with pytest.raises(DestinationClosedError):
        await dest.write_batch(raw_events(1))


@pytest.mark.parametrize(
    ("compression", "extension", "encoding"),
    [(Compression.GZIP, ".jsonl.gz", "gzip"), (Compression.ZSTD, ".jsonl.zst", "zstd")],
)
async def test_compressed_objects_carry_their_encoding(
    make_config: MakeConfig,
    s3_client: Any,
    bucket: str,
    compression: Compression,
    extension: str,
    encoding: str,
) -> None:
    """Compressed objects get the codec's extension, Content-Type and Content-Encoding."""
    async with S3Destination(make_config(compression=compression)) as dest:
        await dest.write_batch(raw_events(50))
    [key] = list_keys(s3_client, bucket)
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert key.endswith(extension)
    assert head["ContentType"] == "application/x-ndjson"
    assert head["ContentEncoding"] == encoding
    assert sorted(ids_in(s3_client, bucket)) == list(range(50))


async def test_concurrent_writers_lose_and_duplicate_nothing(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """Ten tasks writing at once: every event lands exactly once."""
    async with S3Destination(make_config(max_batch_events=137)) as dest:

        async def writer(n: int) -> None:
            for chunk in range(5):
                start = n * 1000 + chunk * 100
                await dest.write_batch(raw_events(100, collections=("x", "y", "z"), start=start))

        await asyncio.gather(*(writer(n) for n in range(10)))
    counts = ids_in(s3_client, bucket)
    assert len(counts) == 5000
    assert set(counts.values()) == {1}
    keys = list_keys(s3_client, bucket)
    assert len(keys) == len(set(keys))


async def test_many_flushes_never_reuse_a_key(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """Objects sealed within the same millisecond still get distinct keys."""
    async with S3Destination(make_config()) as dest:
        for n in range(30):
            await dest.write_batch([raw_event(n)])
            await dest.flush()
    assert len(list_keys(s3_client, bucket)) == 30
    assert sorted(ids_in(s3_client, bucket)) == list(range(30))


async def test_two_destinations_never_share_a_key(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """Writers in different processes (here: instances) have different writer ids."""
    async with S3Destination(make_config()) as one, S3Destination(make_config()) as two:
        assert one.writer_id != two.writer_id
        await one.write_batch(raw_events(10))
        await two.write_batch(raw_events(10, start=10))
    assert sorted(ids_in(s3_client, bucket)) == list(range(20))


async def test_bad_events_are_rejected_alone(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """An unserializable event raises RejectedEventsError naming it; the others are written."""
    events = raw_events(10)
    events[3]["fullDocument"]["oops"] = object()
    events[6] = {"not": "a change event"}
    async with S3Destination(make_config()) as dest:
        with pytest.raises(RejectedEventsError) as info:
            await dest.write_batch(events)
    rejected = info.value.errors
    assert [e.index for e in rejected] == [3, 6]
    assert rejected[0].collection == "users"
    assert rejected[0].document_key == {"_id": 3}
    assert "full_document.oops" in str(rejected[0])
    assert "operationType" in str(rejected[1])
    assert info.value.accepted == 8
    assert sorted(ids_in(s3_client, bucket)) == [0, 1, 2, 4, 5, 7, 8, 9]


async def test_missing_bucket_fails_at_start(s3_endpoint: S3Endpoint) -> None:
    """A bucket that does not exist is reported when the destination starts."""
    config = s3_endpoint.config("no-such-bucket-rigatoni", create_bucket=False)
    with pytest.raises(BucketNotFoundError) as info:
        async with S3Destination(config):
            pass
    assert info.value.bucket == "no-such-bucket-rigatoni"
    assert "Create the bucket" in str(info.value)


async def test_missing_bucket_is_reported_by_flush_and_close(s3_endpoint: S3Endpoint) -> None:
    """Without the start-up check, the first upload raises BucketNotFoundError, without retries."""
    config = s3_endpoint.config(
        "no-such-bucket-rigatoni",
        create_bucket=False,
        check_conditional_writes=False,
        retry_base_delay=0.01,
        retry_max_delay=0.02,
    )
    dest = S3Destination(config)
    await dest.write_batch(raw_events(3))
    with pytest.raises(BucketNotFoundError) as info:
        await dest.flush()
    assert info.value.attempts == 1
    assert info.value.events == 3
    with pytest.raises(UndeliveredError) as closing:
        await dest.close()
    assert closing.value.events == 3


async def test_slowdown_responses_are_retried(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """A server answering 503 SlowDown for a while: every event still lands exactly once."""
    async with S3Destination(make_proxied_config(max_retries=5, max_batch_events=50)) as dest:
        fault_proxy.fail_next(["503", "503", "500", "503"])
        await dest.write_batch(raw_events(200))
    counts = ids_in(s3_client, bucket)
    assert sorted(counts) == list(range(200))
    assert set(counts.values()) == {1}
    assert fault_proxy.counts["503"] == 3
    assert fault_proxy.counts["500"] == 1


async def test_exhausted_retries_keep_the_events_for_the_next_flush(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """After retries run out flush() raises; once the server recovers the next flush delivers."""
    async with S3Destination(make_proxied_config(max_retries=2)) as dest:
        fault_proxy.fail_next(["503"] * 3)
        await dest.write_batch(raw_events(20))
        with pytest.raises(RetriesExhaustedError) as info:
            await dest.flush()
        assert info.value.attempts == 3
        assert list_keys(s3_client, bucket) == []
        assert dest.durable_resume_token is None
        await dest.flush()
        assert dest.durable_resume_token == raw_event(19)["_id"]
    assert sorted(ids_in(s3_client, bucket)) == list(range(20))


async def test_failure_is_raised_by_the_next_write(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """A background failure nobody waited for is raised by the next write_batch, once."""
    async with S3Destination(make_proxied_config(max_retries=1, max_batch_events=10)) as dest:
        fault_proxy.fail_next(["503"] * 2)
        await dest.write_batch(raw_events(10))  # sealed at once, fails in the background
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while fault_proxy.counts["503"] < 2 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        with pytest.raises(RetriesExhaustedError):
            await dest.write_batch(raw_events(5, start=100))
        await dest.write_batch(raw_events(5, start=100))  # reported once; now accepted
    assert sorted(ids_in(s3_client, bucket)) == [*range(10), *range(100, 105)]


async def test_writers_wait_when_the_buffer_is_full(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """With uploads stalled, write_batch blocks at max_buffer_bytes instead of growing."""
    config = make_proxied_config(max_buffer_bytes=20_000, max_batch_bytes=5_000)
    async with S3Destination(config) as dest:
        fault_proxy.hold()
        try:
            accepted_until = 0
            while accepted_until < 1000:  # about 2.7 KB per write: fill until one times out
                try:
                    await dest.write_batch(raw_events(10, start=accepted_until), timeout=0.3)
                except BackpressureTimeout:
                    break
                accepted_until += 10
        finally:
            fault_proxy.release()
        assert 20 <= accepted_until <= 80
        await dest.write_batch(raw_events(10, start=1000))
    assert sorted(ids_in(s3_client, bucket)) == [*range(accepted_until), *range(1000, 1010)]


async def test_cancelled_writer_leaves_no_trace(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """Cancelling a write blocked on backpressure accepts none of its events and harms none else."""
    config = make_proxied_config(max_buffer_bytes=15_000, max_batch_bytes=5_000)
    async with S3Destination(config) as dest:
        fault_proxy.hold()
        try:
            await dest.write_batch(raw_events(40))
            blocked = asyncio.create_task(dest.write_batch(raw_events(40, start=500)))
            await fault_proxy.until_held()
            await asyncio.sleep(0.05)
            assert not blocked.done()
            blocked.cancel()
            with pytest.raises(asyncio.CancelledError):
                await blocked
        finally:
            fault_proxy.release()
        await dest.write_batch(raw_events(10, start=900))
    assert sorted(ids_in(s3_client, bucket)) == [*range(40), *range(900, 910)]


async def test_a_later_hour_seals_the_earlier_one(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """Once a collection sends an event from 11:00, its 10:00 buffer is written without waiting."""
    ten = [raw_event(n, "users", BASE_TIME + timedelta(minutes=n)) for n in range(5)]
    eleven = [raw_event(100, "users", BASE_TIME + timedelta(hours=1))]
    other = [raw_event(200, "orders", BASE_TIME)]
    async with S3Destination(make_config()) as dest:
        await dest.write_batch(ten + other)
        await dest.write_batch(eleven)
        keys = await wait_for_objects(s3_client, bucket, 1)
        assert len(keys) == 1
        assert keys[0].startswith("users/2025/01/15/10/")
        assert sorted(ids_in(s3_client, bucket)) == [0, 1, 2, 3, 4]
    assert len(list_keys(s3_client, bucket)) == 3  # orders/10 and users/11 on close


async def test_a_given_executor_encodes_and_is_left_running(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """Encoding runs in the executor passed in, and close() does not shut it down."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="caller-pool") as pool:
        used: list[str] = []
        real_submit = pool.submit

        def submit(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            used.append(getattr(fn, "__name__", ""))
            return real_submit(fn, *args, **kwargs)

        pool.submit = submit  # type: ignore[method-assign]
        async with S3Destination(make_config(), executor=pool) as dest:
            await dest.write_batch(raw_events(5))
        assert {"_prepare", "encode"} <= set(used)
        assert real_submit(lambda: 42).result(timeout=5) == 42  # still running
    assert len(list_keys(s3_client, bucket)) == 1
