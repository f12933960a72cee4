"""Split change events through S3Destination against a real S3 server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import bson
import pytest
from bson.raw_bson import RawBSONDocument

from rigatoni_s3 import S3Destination, SerializationFormat, _fragments
from rigatoni_s3.errors import (
    BackpressureTimeout,
    IncompleteEventError,
    RejectedEventsError,
    UndeliveredError,
)
from rigatoni_s3.testing import S3Endpoint
from tests.faultproxy import FaultProxy
from tests.helpers import ALL_FORMATS, MakeConfig, list_keys, raw_events, read_body, read_records
from tests.test_fragments import START, change, merged, raw, split, token


def as_given(shape: str) -> Callable[[dict[str, Any]], Any]:
    """How a test hands events over: decoded dicts, or RawBSONDocuments."""
    return raw if shape == "raw" else dict


def tokens_in(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """The ``_data`` of every record's resume token, object by object."""
    return [
        record["resume_token"]["_data"]
        for key in list_keys(client, bucket, prefix)
        for record in read_records(client, bucket, key)
    ]


def plain(value: Any) -> Any:
    """A resume token as a dict, whether it came back raw or decoded."""
    return dict(value) if isinstance(value, RawBSONDocument) else value


@pytest.mark.parametrize("fmt", ALL_FORMATS)
async def test_a_split_event_across_two_calls_is_written_as_one(
    make_config: MakeConfig, s3_client: Any, bucket: str, fmt: SerializationFormat
) -> None:
    """Three fragments over two calls, decoded or raw, read back as the one whole event."""
    whole = change(7, size=5000)
    fragments = split(whole)
    for shape in ("decoded", "raw"):
        give = as_given(shape)
        async with S3Destination(make_config(format=fmt, prefix=shape)) as dest:
            await dest.write_batch([give(change(1)), give(fragments[0]), give(fragments[1])])
            await dest.write_batch([give(fragments[2]), give(change(2))])
    async with S3Destination(make_config(format=fmt, prefix="whole")) as dest:
        await dest.write_batch([change(1), merged(fragments), change(2)])
    [decoded_key] = list_keys(s3_client, bucket, "decoded/")
    [raw_key] = list_keys(s3_client, bucket, "raw/")
    [whole_key] = list_keys(s3_client, bucket, "whole/")
    body = read_body(s3_client, bucket, whole_key)
    assert read_body(s3_client, bucket, decoded_key) == body
    assert read_body(s3_client, bucket, raw_key) == body
    first, event, last = read_records(s3_client, bucket, raw_key)
    assert first["resume_token"] == token(1)
    assert last["resume_token"] == token(2)
    assert event == {
        "operation": "update",
        "database": "shop",
        "collection": "orders",
        "cluster_time": START + timedelta(seconds=7),
        "document_key": {"_id": str(whole["documentKey"]["_id"])},
        "full_document": {
            "_id": str(whole["documentKey"]["_id"]),
            "total": 2**40 + 7,
            "notes": "f" * 5000,
        },
        "update_description": {"updatedFields": {"notes": "u" * 5000}, "removedFields": []},
        "resume_token": token(102),
        "full_document_before_change": None,
        "wall_time": None,
        "cluster_time_increment": 3,
        "transaction": None,
        "extra": None,
    }


@pytest.mark.parametrize("shape", ["decoded", "raw"])
async def test_the_durable_token_never_points_inside_a_split_event(
    make_config: MakeConfig, shape: str
) -> None:
    """Held fragments are not accepted: the token stays on the event before them."""
    seen: list[Any] = []
    give = as_given(shape)
    fragments = [give(f) for f in split(change(7))]
    async with S3Destination(make_config(on_durable=seen.append)) as dest:
        await dest.write_batch([give(change(1)), fragments[0], fragments[1]])
        await dest.flush()
        assert plain(dest.durable_resume_token) == token(1)
        await dest.write_batch([fragments[2]])
        await dest.flush()
        assert plain(dest.durable_resume_token) == token(102)
    assert [plain(t) for t in seen] == [token(1), token(102)]


async def test_a_broken_run_is_rejected_and_every_whole_event_written(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """Fragments an earlier call left are rejected with index None; the rest keep their index."""
    one, two = split(change(7), first_token=10), split(change(8), first_token=20)
    async with S3Destination(make_config()) as dest:
        await dest.write_batch([change(1), one[0], one[1]])
        with pytest.raises(RejectedEventsError) as info:
            await dest.write_batch([change(2), *two, {"not": "an event"}, change(3)])
    rejected = info.value
    assert [e.index for e in rejected.errors] == [None, 4]
    assert str(rejected.errors[0]).startswith(
        "split event broken: fragment 1 of 3 (from an earlier call, resume token "
        "{'_data': '8267C5A1B20000000010"
    )
    assert "fragment 2 of 3 (from an earlier call" in str(rejected.errors[0])
    assert "operationType" in str(rejected.errors[1])
    assert rejected.accepted == 3
    assert tokens_in(s3_client, bucket) == [
        token(n)["_data"] for n in (1, 2, 22, 3)
    ]  # the second event's last fragment is its token


async def test_close_reports_a_split_event_still_missing_fragments(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """flush() leaves held fragments alone; close() writes the rest, then names them."""
    fragments = split(change(7))
    dest = S3Destination(make_config())
    await dest.write_batch([change(1)])
    await dest.flush()
    await dest.write_batch([change(2), fragments[0], fragments[1]])
    await dest.write_batch([])  # an empty call changes nothing
    await dest.flush()
    assert plain(dest.durable_resume_token) == token(2)
    with pytest.raises(IncompleteEventError) as info:
        await dest.close()
    error = info.value
    assert error.resume_tokens == (token(100), token(101))
    assert error.fragments == (fragments[0], fragments[1])
    assert "fragment 1 of 3 (resume token {'_data': '8267C5A1B20000000100" in str(error)
    assert "fragment 2 of 3 (resume token {'_data': '8267C5A1B20000000101" in str(error)
    assert plain(dest.durable_resume_token) == token(2)
    assert tokens_in(s3_client, bucket) == [token(1)["_data"], token(2)["_data"]]


async def test_a_failed_close_notes_the_incomplete_event(s3_endpoint: S3Endpoint) -> None:
    """When close() raises for undelivered events, the incomplete event is a note on it."""
    config = s3_endpoint.config(
        "no-such-bucket-rigatoni",
        create_bucket=False,
        check_conditional_writes=False,
        retry_base_delay=0.01,
        retry_max_delay=0.02,
    )
    dest = S3Destination(config)
    await dest.write_batch([change(1), split(change(7))[0]])
    with pytest.raises(UndeliveredError) as info:
        await dest.close()
    assert info.value.events == 1
    [note] = info.value.__notes__
    assert note.startswith("Also: a split event never got its last fragments: fragment 1 of 3")


def blocking(config_maker: MakeConfig) -> Any:
    """A config whose buffer, once 40 events wait for their upload, has no room for a
    large event (:func:`change` of ``size=3000``)."""
    return config_maker(max_buffer_bytes=15_000, max_batch_bytes=5_000)


async def test_a_timed_out_or_cancelled_call_leaves_the_held_fragments(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """A call that would complete the event but accepts nothing leaves its fragments held."""
    fragments = split(change(7, size=3000))
    async with S3Destination(blocking(make_proxied_config)) as dest:
        fault_proxy.hold()
        try:
            await dest.write_batch(raw_events(40))
            await fault_proxy.until_held()
            await dest.write_batch(fragments[:2])  # nothing to buffer: accepted at once
            with pytest.raises(BackpressureTimeout):
                await dest.write_batch([fragments[2]], timeout=0.1)
            cancelled = asyncio.create_task(dest.write_batch([fragments[2]]))
            await asyncio.sleep(0.1)
            assert not cancelled.done()
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        finally:
            fault_proxy.release()
        await dest.write_batch([fragments[2]])  # fragments 1 and 2 were still held
    tokens = tokens_in(s3_client, bucket)
    assert tokens.count(token(102)["_data"]) == 1
    assert len(tokens) == 41


class GatedPool(ThreadPoolExecutor):
    """An executor whose ``_prepare`` jobs wait for ``gate`` once they have begun."""

    def __init__(self) -> None:
        super().__init__(2)
        self.begun = threading.Event()
        self.gate = threading.Event()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if getattr(fn, "__name__", "") != "_prepare" or self.gate.is_set():
            return super().submit(fn, *args, **kwargs)

        def gated() -> Any:
            self.begun.set()
            self.gate.wait(10)
            return fn(*args, **kwargs)

        return super().submit(gated)


async def test_a_call_cancelled_while_encoding_leaves_the_held_fragments(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """Cancelled in the thread pool, a call that would complete the event changes nothing."""
    fragments = split(change(7))
    with GatedPool() as pool:
        async with S3Destination(make_config(), executor=pool) as dest:
            pool.gate.set()
            await dest.write_batch(fragments[:1])
            pool.gate.clear()
            call = asyncio.create_task(dest.write_batch(fragments[1:]))
            assert await asyncio.to_thread(pool.begun.wait, 10)
            call.cancel()
            pool.gate.set()
            with pytest.raises(asyncio.CancelledError):
                await call
            await dest.write_batch(fragments[1:])  # fragment 1 was still held
    assert tokens_in(s3_client, bucket) == [token(102)["_data"]]


async def test_concurrent_calls_are_put_together_in_the_order_they_accept(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """A call that waited for room while another one held a fragment sees that fragment."""
    async with S3Destination(blocking(make_proxied_config)) as dest:
        fault_proxy.hold()
        try:
            await dest.write_batch(raw_events(40))
            await fault_proxy.until_held()
            waiting = asyncio.create_task(dest.write_batch([change(1, size=3000)]))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            await dest.write_batch([split(change(7))[0]])  # nothing to buffer: accepted at once
        finally:
            fault_proxy.release()
        with pytest.raises(RejectedEventsError) as info:
            await waiting
    [error] = info.value.errors
    assert error.index is None
    assert "fragment 1 of 3 (from an earlier call" in str(error)
    assert "then event #0, which is not one of them" in str(error)
    assert info.value.accepted == 1
    assert token(1)["_data"] in tokens_in(s3_client, bucket)


async def test_a_split_event_larger_than_16_mib_is_written(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """Fragments under MongoDB's limit make an event above it, written whole."""
    text = "x" * (6 * 2**20)
    event = change(1)
    event["updateDescription"] = {"updatedFields": {"notes": text}, "removedFields": []}
    event["fullDocument"]["notes"] = text
    event["fullDocument"]["more"] = text
    fragments = [bson.encode(f) for f in split(event)]
    assert max(map(len, fragments)) < 16 * 2**20
    async with S3Destination(make_config(compression="zstd")) as dest:
        await dest.write_batch(fragments)
    [key] = list_keys(s3_client, bucket)
    [record] = read_records(s3_client, bucket, key)
    assert record["full_document"]["notes"] == record["full_document"]["more"] == text
    assert record["update_description"]["updatedFields"]["notes"] == text
    assert record["resume_token"] == token(102)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
async def test_a_raw_call_is_put_together_only_when_it_may_hold_fragments(
    make_config: MakeConfig,
    s3_client: Any,
    bucket: str,
    fmt: SerializationFormat,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A raw call without the bytes ``splitEvent`` skips the reassembly pass: the walk
    looked for them. A raw call where they are only a nested field's name goes through
    it and is written as it came, as the same events decoded are."""
    passes: list[int] = []
    real = _fragments.reassemble

    def recording(events: Any, held: Any) -> Any:
        passes.append(len(events))
        return real(events, held)

    monkeypatch.setattr("rigatoni_s3.destination.reassemble", recording)
    nested = change(3)
    nested["fullDocument"]["splitEvent"] = {"fragment": 1, "of": 2}  # not at the top
    calls = [[change(1), change(2)], [nested, change(4)]]
    async with S3Destination(make_config(format=fmt, prefix="raw")) as dest:
        await dest.write_batch([raw(event) for event in calls[0]])
        assert passes == []
        await dest.write_batch([raw(event) for event in calls[1]])
        assert passes == [2]
    async with S3Destination(make_config(format=fmt, prefix="decoded")) as dest:
        for call in calls:
            await dest.write_batch(call)
    [raw_key] = list_keys(s3_client, bucket, "raw/")
    [decoded_key] = list_keys(s3_client, bucket, "decoded/")
    assert read_body(s3_client, bucket, raw_key) == read_body(s3_client, bucket, decoded_key)
    records = read_records(s3_client, bucket, raw_key)
    assert [record["resume_token"] for record in records] == [token(n) for n in (1, 2, 3, 4)]
    assert records[2]["full_document"]["splitEvent"] == {"fragment": 1, "of": 2}
