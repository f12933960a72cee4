"""ChangeEvent and conversion of raw change-stream documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rigatoni_s3 import ChangeEvent
from rigatoni_s3.errors import InvalidEventError
from rigatoni_s3.events import cluster_time_of, fields_of, naive_as_utc, utc_second


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
        cluster_time_increment=7,
    )


def test_timestamp_increment_is_not_a_fraction_of_a_second() -> None:
    """Timestamp(t, 7) is second t exactly; the increment only orders operations."""
    assert cluster_time_of(Timestamp(1736935200, 999)) == (
        datetime(2025, 1, 15, 10, tzinfo=UTC),
        999,
    )


def test_extended_json_timestamp_is_accepted() -> None:
    """Recorded change streams in extended JSON convert the same way."""
    assert cluster_time_of({"$timestamp": {"t": 1736935200, "i": 3}}) == (
        datetime(2025, 1, 15, 10, tzinfo=UTC),
        3,
    )


def test_naive_datetimes_are_utc_and_aware_ones_are_converted() -> None:
    """pymongo decodes dates as naive UTC; other zones are converted to UTC."""
    assert ChangeEvent(
        "insert", "d", "c", cluster_time=datetime(2025, 1, 1, 5)
    ).cluster_time == datetime(2025, 1, 1, 5, tzinfo=UTC)
    plus_two = datetime(2025, 1, 1, 7, tzinfo=timezone(timedelta(hours=2)))
    assert cluster_time_of(plus_two) == (datetime(2025, 1, 1, 5, tzinfo=UTC), None)


FULL: dict[str, Any] = {
    "_id": {"_data": "8267"},
    "operationType": "rename",
    "clusterTime": Timestamp(1736935200, 4),
    "wallTime": datetime(2025, 1, 15, 10, 0, 0, 125000),
    "ns": {"db": "shop", "coll": "orders"},
    "to": {"db": "shop", "coll": "archive"},
    "lsid": {"id": "session", "uid": b"\x01"},
    "collectionUUID": "uuid",
    "txnNumber": 12,
    "operationDescription": {"dropTarget": None},
    "fullDocumentBeforeChange": {"_id": 1, "state": "old"},
    "newServerField": None,
}


def test_every_top_level_field_is_kept() -> None:
    """Pre-image, wall time, increment and transaction get attributes; the rest goes to extra."""
    event = ChangeEvent.from_change_stream(FULL)
    assert event.full_document_before_change == {"_id": 1, "state": "old"}
    assert event.wall_time == datetime(2025, 1, 15, 10, 0, 0, 125000, tzinfo=UTC)
    assert event.cluster_time_increment == 4
    assert event.transaction == {"txnNumber": 12, "lsid": {"id": "session", "uid": b"\x01"}}
    assert event.extra == {
        "to": {"db": "shop", "coll": "archive"},
        "collectionUUID": "uuid",
        "operationDescription": {"dropTarget": None},
        "newServerField": None,
    }
    assert list(event.extra) == ["to", "collectionUUID", "operationDescription", "newServerField"]


def test_events_of_known_fields_only_have_no_extra_or_transaction() -> None:
    """A plain insert has null extra and transaction; a datetime clusterTime has no increment."""
    event = ChangeEvent.from_change_stream(
        {"operationType": "insert", "clusterTime": datetime(2025, 1, 1), "documentKey": {"_id": 1}}
    )
    assert (event.extra, event.transaction, event.cluster_time_increment) == (None, None, None)


@pytest.mark.parametrize(
    ("fields", "transaction"),
    [
        ({"lsid": {"id": 1}}, {"lsid": {"id": 1}}),
        ({"txnNumber": 3}, {"txnNumber": 3}),
        ({"lsid": {"id": 1}, "txnNumber": 3}, {"txnNumber": 3, "lsid": {"id": 1}}),
        ({"lsid": None, "txnNumber": None}, None),
    ],
)
def test_transaction_holds_what_is_present_txn_number_first(
    fields: dict[str, Any], transaction: dict[str, Any] | None
) -> None:
    """The transaction object holds txnNumber then lsid, whichever are present and not null."""
    event = ChangeEvent.from_change_stream({"operationType": "insert", **fields})
    assert event.transaction == transaction
    assert event.transaction is None or list(event.transaction) == list(transaction or {})


def test_wall_time_must_be_a_date() -> None:
    """A wallTime that is not a BSON date names the field."""
    with pytest.raises(InvalidEventError, match="wallTime"):
        ChangeEvent.from_change_stream({"operationType": "insert", "wallTime": "today"})


def test_decoded_dicts_and_change_events_agree_on_every_field() -> None:
    """fields_of gives the same thirteen fields for the dict and its ChangeEvent."""
    assert fields_of(FULL) == fields_of(ChangeEvent.from_change_stream(FULL))
    assert len(fields_of(FULL)) == 13


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


@given(st.datetimes(), st.booleans())
def test_naive_as_utc_equals_replace(value: datetime, fold: bool) -> None:
    """The arithmetic that makes a naive time aware gives what ``replace`` gives."""
    value = value.replace(fold=int(fold))
    made = naive_as_utc(value)
    assert made == value.replace(tzinfo=UTC)
    assert made.tzinfo is UTC
    assert made.isoformat() == value.replace(tzinfo=UTC).isoformat()


@given(st.integers(-62135596800 - 2, 253402300799 + 2))
def test_utc_second_equals_fromtimestamp(seconds: int) -> None:
    """Whole seconds by arithmetic are ``fromtimestamp``'s datetimes, and beyond years
    1 to 9999 fail as it does, saying the same."""
    expected: datetime | Exception
    try:
        expected = datetime.fromtimestamp(seconds, tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        expected = exc
    made: datetime | Exception
    try:
        made = utc_second(seconds)
    except (ValueError, OverflowError, OSError) as exc:
        made = exc
    if isinstance(expected, Exception):
        assert (type(made), str(made)) == (type(expected), str(expected))
    else:
        assert made == expected
        assert isinstance(made, datetime)
        assert made.tzinfo is UTC
