"""ChangeEvent and conversion of raw change-stream documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from rigatoni_s3 import ChangeEvent
from rigatoni_s3.errors import InvalidEventError
from rigatoni_s3.events import cluster_time_of, fields_of


class Timestamp:
    """Stand-in for bson.Timestamp: (seconds, increment)."""

    def __init__(self, time: int, inc: int) -> None:
        self.time = time
        self.inc = inc


RAW: dict[str, Any] = {
    "_id": {"_data": "826789ABCD000000012B"},
    "operationType": "update",
    "clusterTime": Timestamp(1736935200, 7),
    "ns": {"db": "shop", "coll": "orders"},
    "documentKey": {"_id": 42},
    "updateDescription": {
        "updatedFields": {"status": "paid"},
        "removedFields": ["cart"],
        "truncatedArrays": [],
    },
}


def test_from_change_stream_maps_every_field() -> None:
    """operationType, ns, documentKey, updateDescription, clusterTime and _id all carry over."""
    event = ChangeEvent.from_change_stream(RAW)
    assert event == ChangeEvent(
        operation="update",
        database="shop",
        collection="orders",
        document_key={"_id": 42},
        full_document=None,
        update_description=RAW["updateDescription"],
        cluster_time=datetime(2025, 1, 15, 10, 0, 0, tzinfo=UTC),
        resume_token={"_data": "826789ABCD000000012B"},
    )


def test_timestamp_increment_is_not_a_fraction_of_a_second() -> None:
    """Timestamp(t, 7) is second t exactly; the increment only orders operations."""
    assert cluster_time_of(Timestamp(1736935200, 999)) == datetime(2025, 1, 15, 10, tzinfo=UTC)


def test_extended_json_timestamp_is_accepted() -> None:
    """Recorded change streams in extended JSON convert the same way."""
    assert cluster_time_of({"$timestamp": {"t": 1736935200, "i": 3}}) == datetime(
        2025, 1, 15, 10, tzinfo=UTC
    )


def test_naive_datetimes_are_utc_and_aware_ones_are_converted() -> None:
    """pymongo decodes dates as naive UTC; other zones are converted to UTC."""
    assert ChangeEvent(
        "insert", "d", "c", cluster_time=datetime(2025, 1, 1, 5)
    ).cluster_time == datetime(2025, 1, 1, 5, tzinfo=UTC)
    plus_two = datetime(2025, 1, 1, 7, tzinfo=timezone(timedelta(hours=2)))
    assert cluster_time_of(plus_two) == datetime(2025, 1, 1, 5, tzinfo=UTC)


def test_events_without_namespace_are_valid() -> None:
    """invalidate events carry no ns; they convert with None database and collection."""
    event = ChangeEvent.from_change_stream({"operationType": "invalidate", "_id": {"_data": "x"}})
    assert (event.database, event.collection, event.cluster_time) == (None, None, None)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"ns": {"db": "d", "coll": "c"}}, "operationType"),
        ({"operationType": 3}, "operationType"),
        ({"operationType": "insert", "ns": "shop.users"}, "'ns'"),
        ({"operationType": "insert", "ns": {"coll": 5}}, "ns.coll"),
        ({"operationType": "insert", "clusterTime": "yesterday"}, "clusterTime"),
    ],
)
def test_malformed_documents_raise_invalid_event(doc: dict[str, Any], message: str) -> None:
    """A document that is not a change event names what is wrong."""
    with pytest.raises(InvalidEventError, match=message):
        ChangeEvent.from_change_stream(doc)


def test_fields_of_accepts_both_shapes_alike() -> None:
    """A ChangeEvent and its raw document give the same envelope."""
    assert fields_of(RAW) == fields_of(ChangeEvent.from_change_stream(RAW))


def test_fields_of_rejects_other_types() -> None:
    """Passing something that is neither names the type received."""
    with pytest.raises(InvalidEventError, match="str"):
        fields_of("insert")  # type: ignore[arg-type]


def test_utc_seconds_shares_one_datetime_per_second_within_one_cache() -> None:
    """Events of one second share a datetime; separate caches share nothing."""
    from rigatoni_s3.events import UtcSeconds

    first, second = UtcSeconds(), UtcSeconds()
    assert first(1736935200) is first(1736935200)
    assert first(1736935200) == second(1736935200) == datetime(2025, 1, 15, 10, tzinfo=UTC)
    assert first(1736935200) is not second(1736935200)


def test_utc_seconds_stays_small() -> None:
    """The cache starts afresh past its limit instead of growing with the stream."""
    from rigatoni_s3.events import UtcSeconds

    cache = UtcSeconds()
    kept = cache(0)
    for second in range(1, UtcSeconds.LIMIT + 1):
        cache(second)
    assert cache(0) is not kept
    assert len(cache._seen) <= UtcSeconds.LIMIT
