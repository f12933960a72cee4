"""The encode stage: events grouped into partitions, rows and object bodies; encoding a
batch all at once agrees with one by one, and falls back to it for bad events."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from bson import Timestamp
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rigatoni_s3 import ChangeEvent, Compression, KeyGenerationStrategy, SerializationFormat
from rigatoni_s3._encoder import Encoder
from rigatoni_s3.compression import codec_for
from rigatoni_s3.errors import SerializationError
from rigatoni_s3.events import EventFields, fields_of
from rigatoni_s3.formats import serializer_for
from rigatoni_s3.formats._json import DUMPS_CHUNK
from rigatoni_s3.keys import PartitionKey, partition_of
from tests.helpers import (
    ALL_FORMATS,
    ANY_EVENT,
    BASE_TIME,
    DOCUMENTS_ST,
    LONE_SURROGATE,
    Unmappable,
    decode_records,
    event,
    raw_event,
)

NOW = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)


def encoder(strategy: KeyGenerationStrategy) -> Encoder:
    return Encoder(
        serializer_for(SerializationFormat.JSON, Compression.NONE),
        codec_for(Compression.NONE),
        strategy,
    )


@pytest.mark.parametrize("strategy", list(KeyGenerationStrategy))
@pytest.mark.parametrize(
    "when",
    [
        datetime(2025, 1, 15, 9, 59, 59, 999000, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),  # just before the epoch
        datetime(1969, 12, 31, 0, 0, 0, tzinfo=UTC),
        None,  # no cluster_time: the time of the write decides
    ],
)
def test_prepare_partitions_with_keys_partition_of(
    strategy: KeyGenerationStrategy, when: datetime | None
) -> None:
    """The encoder puts each event in the partition keys.partition_of gives it."""
    event = ChangeEvent("insert", "shop", "users", {"_id": 1}, cluster_time=when)
    prepared = encoder(strategy).prepare([event], NOW)
    assert list(prepared.partitions) == [partition_of(strategy, "users", when, NOW)]


def test_an_instant_before_the_epoch_belongs_to_its_own_hour() -> None:
    """Half a second before 1970 is in the last hour of 1969, not the first of 1970."""
    when = datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)
    event = ChangeEvent("insert", "shop", "users", {"_id": 1}, cluster_time=when)
    prepared = encoder(KeyGenerationStrategy.HIVE_PARTITIONED).prepare([event], NOW)
    hour_start = int((when - timedelta(minutes=59, seconds=59.5)).timestamp())
    assert list(prepared.partitions) == [PartitionKey("users", hour_start)]


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(ANY_EVENT | st.builds(event, full_document=DOCUMENTS_ST), max_size=6))
def test_encoding_all_at_once_equals_one_by_one(
    fmt: SerializationFormat, events: list[EventFields]
) -> None:
    """encode_events gives exactly encode_event's rows and sizes, or raises if it cannot."""
    serializer = serializer_for(fmt, Compression.NONE)
    one_by_one: list[tuple[Any, int] | None] = []
    for e in events:
        try:
            one_by_one.append(serializer.encode_event(e))
        except SerializationError:
            one_by_one.append(None)
    try:
        rows, sizes = serializer.encode_events(events)
    except Exception:
        return  # the encoder then goes one by one; other tests check that path
    assert list(zip(rows, sizes, strict=True)) == one_by_one


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_all_at_once_finds_nan_among_nulls(fmt: SerializationFormat) -> None:
    """Non-finite floats, which orjson writes as null, are caught among real nulls and 'null' text."""
    documents = [
        {"a": None, "note": "nullable"},
        {"x": math.nan, "y": None},
        {"deep": [{"z": -math.inf}]},
        {"plain": 1.5},
    ]
    events = [event(n, full_document=doc) for n, doc in enumerate(documents)]
    serializer = serializer_for(fmt, Compression.NONE)
    rows, sizes = serializer.encode_events(events)
    assert list(zip(rows, sizes, strict=True)) == [serializer.encode_event(e) for e in events]
    records = decode_records(f"x.{serializer.extension}", serializer.serialize(rows))
    assert [r["full_document"] for r in records] == [
        {"a": None, "note": "nullable"},
        {"x": {"$numberDouble": "NaN"}, "y": None},
        {"deep": [{"z": {"$numberDouble": "-Infinity"}}]},
        {"plain": 1.5},
    ]


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_all_at_once_spans_several_orjson_calls(fmt: SerializationFormat) -> None:
    """Batches longer than one orjson call keep order, and NaN is found on either side of a cut."""
    nan_at = {0, DUMPS_CHUNK - 1, DUMPS_CHUNK, 2 * DUMPS_CHUNK + 3}
    events = [
        event(n, full_document={"n": n, "v": math.nan if n in nan_at else None})
        for n in range(2 * DUMPS_CHUNK + 10)
    ]
    serializer = serializer_for(fmt, Compression.NONE)
    rows, sizes = serializer.encode_events(events)
    assert list(zip(rows, sizes, strict=True)) == [serializer.encode_event(e) for e in events]
    records = decode_records(f"x.{serializer.extension}", serializer.serialize(rows))
    nan = {"$numberDouble": "NaN"}
    assert [r["full_document"] for r in records] == [
        {"n": n, "v": nan if n in nan_at else None} for n in range(len(events))
    ]


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_one_bad_event_sends_the_batch_one_by_one(fmt: SerializationFormat) -> None:
    """A batch with unwritable events: those are rejected at their index, the rest kept in order."""
    batch = [
        ChangeEvent("insert", "shop", "users", {"_id": n}, {"_id": n, "v": value}, None, BASE_TIME)
        for n, value in enumerate([1, Unmappable(), 2**70, "x", LONE_SURROGATE, 3])
    ]
    encoder = Encoder(
        serializer_for(fmt, Compression.NONE),
        codec_for(Compression.NONE),
        KeyGenerationStrategy.FLAT,
    )
    prepared = encoder.prepare([*batch[:2], {"operationType": 5}, *batch[2:]], BASE_TIME)
    assert [(e.index, e.field) for e in prepared.rejected] == [
        (1, "full_document.v"),
        (2, None),
        (5, "full_document"),
    ]
    (part,) = prepared.partitions.values()
    records = decode_records(
        f"x.{encoder.serializer.extension}", encoder.serializer.serialize(part.rows)
    )
    assert [r["full_document"]["v"] for r in records] == [1, 2**70, "x", 3]
    assert prepared.accepted == 4


@pytest.mark.parametrize("fmt", [SerializationFormat.JSON, SerializationFormat.PARQUET])
@pytest.mark.parametrize("strategy", list(KeyGenerationStrategy))
@pytest.mark.parametrize(
    "cluster_time",
    [
        Timestamp(1736935199, 3),
        datetime(1969, 12, 31, 23, 59, 59, 500000),  # a BSON date, naive UTC
        None,
    ],
)
def test_raw_events_partition_with_keys_partition_of(
    fmt: SerializationFormat, strategy: KeyGenerationStrategy, cluster_time: Any
) -> None:
    """Raw BSON events land in the partition keys.partition_of gives their decoded form,
    whether their rows come whole from the reader (JSON Lines) or as envelopes."""
    change: dict[str, Any] = {"operationType": "insert", "ns": {"db": "shop", "coll": "users"}}
    if cluster_time is not None:
        change["clusterTime"] = cluster_time
    raw = bson.encode(change)
    decoded = fields_of(bson.decode(raw))
    enc = Encoder(serializer_for(fmt, Compression.NONE), codec_for(Compression.NONE), strategy)
    prepared = enc.prepare([raw], NOW)
    assert list(prepared.partitions) == [partition_of(strategy, "users", decoded.cluster_time, NOW)]


@pytest.mark.parametrize("fmt", [SerializationFormat.JSON, SerializationFormat.PARQUET])
def test_a_raw_call_without_fragments_is_prepared_whole(fmt: SerializationFormat) -> None:
    """Raw events none of which holds the bytes ``splitEvent`` are prepared as
    ``prepare`` would, rejections included; any call that may hold a fragment (one
    event that is, or only has a nested field of that name), a decoded call and a mixed
    one come back as None, left to be put together first."""
    strategy = next(iter(KeyGenerationStrategy))
    enc = Encoder(serializer_for(fmt, Compression.NONE), codec_for(Compression.NONE), strategy)
    changes = [raw_event(n, collection=("users", "orders")[n % 2]) for n in range(6)]
    raws: list[Any] = [bson.encode(change) for change in changes]
    raws[3] = RawBSONDocument(raws[3])
    raws.insert(2, b"\x05\x00\x00\x00")  # malformed: rejected either way

    def outcome(prepared: Any) -> Any:
        rejected = [(error.index, str(error)) for error in prepared.rejected]
        return prepared.partitions, rejected, prepared.accepted, prepared.nbytes

    whole = enc.prepare_whole(raws, NOW)
    assert whole is not None
    assert outcome(whole) == outcome(enc.prepare(raws, NOW))
    assert whole.accepted == 6
    assert [error.index for error in whole.rejected] == [2]
    fragment = {**changes[0], "splitEvent": {"fragment": 1, "of": 2}}
    nested = {**changes[0], "fullDocument": {"splitEvent": True}}
    for marked in (fragment, nested):
        assert enc.prepare_whole([*raws, bson.encode(marked)], NOW) is None
    assert enc.prepare_whole(changes, NOW) is None
    assert enc.prepare_whole([*raws, changes[0]], NOW) is None
    assert enc.prepare_whole([], NOW) is None
