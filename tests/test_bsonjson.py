"""Raw BSON change events to JSON: both modules against the dict path as the oracle.

The spec is what the library writes for the same event decoded by pymongo:
``fields_of(bson.decode(raw))`` and ``dumps`` of each document. Every test runs against
the pure-Python module and the compiled one; under ``CI`` a missing build fails.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from types import ModuleType
from typing import Any

import bson
import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rigatoni_s3 import _bsonjson_py
from rigatoni_s3._bsonjson_py import RawEnvelope
from rigatoni_s3.errors import EventError
from rigatoni_s3.events import fields_of
from rigatoni_s3.formats._envelope import EnvelopeRow
from rigatoni_s3.formats._json import dumps
from rigatoni_s3.keys import PartitionKey, new_partition_key

OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=False, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
RAW_OPTIONS: CodecOptions[RawBSONDocument] = CodecOptions(
    document_class=RawBSONDocument, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
EPOCH = datetime(1970, 1, 1)
EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


NO_EXTENSIONS = os.environ.get("RIGATONI_S3_NO_EXTENSIONS", "") not in ("", "0")


@pytest.fixture(
    params=["python", "selected"] if NO_EXTENSIONS else ["python", "native", "selected"]
)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each implementation, and the one ``_bsonjson`` selects. The compiled one must be
    built unless ``RIGATONI_S3_NO_EXTENSIONS`` turns it off, and then it is no parameter
    at all: a missing build fails, it is never skipped."""
    if request.param == "python":
        return _bsonjson_py
    if request.param == "selected":
        from rigatoni_s3 import _bsonjson

        return _bsonjson
    try:
        from rigatoni_s3 import _bsonjson_c
    except ImportError as exc:
        pytest.fail(
            f"the compiled module is not built ({exc}); build it with a C compiler, or "
            "test the pure-Python core alone with RIGATONI_S3_NO_EXTENSIONS=1"
        )
    return _bsonjson_c


def test_selection_follows_the_environment() -> None:
    from rigatoni_s3 import _bsonjson

    if NO_EXTENSIONS:
        assert not _bsonjson.NATIVE
        assert _bsonjson.convert_batch is _bsonjson_py.convert_batch
    elif os.environ.get("CI"):
        assert _bsonjson.NATIVE


def oracle(raw: bytes) -> RawEnvelope | None:
    """What the dict path writes for ``raw``; None where it rejects the event."""
    try:
        doc = bson.decode(raw, codec_options=OPTIONS)
        fields = fields_of(doc)
    except (bson.errors.InvalidBSON, EventError, ValueError, OverflowError):
        return None
    cluster = doc.get("clusterTime")
    increment = None
    if isinstance(cluster, dict):
        inc = cluster["$timestamp"].get("i")
        increment = int(inc) if isinstance(inc, int) else None
    elif cluster is not None and not isinstance(cluster, datetime):
        inc = cluster.inc  # a Timestamp, or a DBRef with an "inc" field, which fields_of takes
        increment = int(inc) if isinstance(inc, int) else None
    when = fields.cluster_time
    ms = None
    if when is not None:
        ms = (when.replace(tzinfo=None) - EPOCH) // timedelta(milliseconds=1)
    token = doc.get("_id")
    return RawEnvelope(
        str.__str__(fields.operation),  # a Code (a str subclass) compares its scope too
        None if fields.database is None else str.__str__(fields.database),
        None if fields.collection is None else str.__str__(fields.collection),
        ms,
        increment,
        None if fields.document_key is None else dumps(fields.document_key, "document_key"),
        None if fields.full_document is None else dumps(fields.full_document, "full_document"),
        None
        if fields.update_description is None
        else dumps(fields.update_description, "update_description"),
        None if token is None else dumps(token, "resume_token"),
        None
        if fields.full_document_before_change is None
        else dumps(fields.full_document_before_change, "full_document_before_change"),
        None
        if fields.wall_time is None
        else (fields.wall_time.replace(tzinfo=None) - EPOCH) // timedelta(milliseconds=1),
        None if fields.transaction is None else dumps(fields.transaction, "transaction"),
        None if fields.extra is None else dumps(fields.extra, "extra"),
        _span(raw) if token is not None else None,
    )


def _span(raw: bytes) -> tuple[int, int] | None:
    """Where the last top-level ``_id`` lies when it is a document, found with pymongo's
    own element parser (independent of both modules; a search for its bytes could hit
    an equal ``_id`` nested further on)."""
    span = None
    at, end = 4, len(raw) - 1
    while at < end:
        key, _, after = bson._element_to_dict(raw, memoryview(raw), at, end, RAW_OPTIONS)
        if key == "_id":
            start = at + 1 + len(key) + 1
            span = (start, after) if raw[at] == 0x03 else None
        at = after
    return span


def convert(impl: ModuleType, raw: bytes) -> RawEnvelope | str:
    result = impl.convert_batch([raw])
    assert len(result) == 1
    out: RawEnvelope | str = result[0]
    return out


def check(impl: ModuleType, raw: bytes) -> RawEnvelope | str:
    """``impl``'s result for ``raw``, asserted equal to the oracle's."""
    ours = convert(impl, raw)
    expected = oracle(raw)
    if expected is None:
        assert isinstance(ours, str), ours
        assert ours
    else:
        assert ours == expected
    return ours


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "_id": {"_data": "8267A1B2C3000000012B"},
        "operationType": "update",
        "clusterTime": Timestamp(1736935200, 7),
        "ns": {"db": "shop", "coll": "orders"},
        "documentKey": {"_id": ObjectId(b"0123456789ab")},
        "fullDocument": {"a": 1},
        "updateDescription": {"updatedFields": {"a": 1}, "removedFields": []},
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ...}


# ---- hand-made BSON, for what bson.encode cannot write -----------------------------


def cstring(text: bytes) -> bytes:
    return text + b"\x00"


def string(text: bytes) -> bytes:
    return struct.pack("<i", len(text) + 1) + text + b"\x00"


def document(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def element(kind: int, key: bytes, payload: bytes) -> bytes:
    return bytes([kind]) + cstring(key) + payload


def with_full_document(payload_element: bytes) -> bytes:
    """A valid event whose fullDocument holds the one hand-made element."""
    return document(
        element(0x02, b"operationType", string(b"insert")),
        element(0x03, b"fullDocument", document(payload_element)),
    )


# ---- values ----------------------------------------------------------------------


def test_every_type(impl: ModuleType) -> None:
    full = {
        "double": [1.5, -0.0, 0.0, 1e16, 1e-7, 5e-324, 1.2345678901234568e17, 1e300, 0.1],
        "nonfinite": [math.nan, math.inf, -math.inf],
        "str": "é\n\"\\\x00\x01\x1f\x7f😀",
        "int": [0, -1, 2**31 - 1, -(2**31), Int64(2**63 - 1), Int64(-(2**63))],
        "oid": ObjectId(b"\x00\xff" * 6),
        "dec": [Decimal128(s) for s in ("1.23E-8", "-0", "0E+6111", "Infinity", "-Infinity", "NaN")],
        "dt": [datetime(1, 1, 1), datetime(999, 12, 31, 23, 59, 59, 1000), datetime(9999, 12, 31, 23, 59, 59, 999000)],
        "dt_ms": [DatetimeMS(-(2**63)), DatetimeMS(2**63 - 1), DatetimeMS(253402300800000)],
        "bin": [Binary(b"", 0), Binary(b"\x01", 1), Binary(b"ab", 2), Binary(b"abc", 3), Binary(b"u" * 16, 4), Binary(b"x", 0x80)],
        "bytes": b"\x00\xff",
        "ts": Timestamp(2**32 - 1, 2**32 - 1),
        "re": [Regex("a\\.b\n", "imsux"), Regex("", 0), Regex("é", "l")],
        "keys": [MinKey(), MaxKey()],
        "none": None,
        "bool": [True, False],
        "code": [Code("f()"), Code("g()", {"x": 1.5, "y": [math.nan]})],
        "dbref": [DBRef("c", 1.5), DBRef("c", {"x": math.nan}, "db", extra=[1e-7], more=None)],
    }  # fmt: skip
    check(impl, bson.encode(event(fullDocument=full)))


def test_nonfinite_inside_a_dbref_only(impl: ModuleType) -> None:
    """The dict path writes null there (its scan does not look inside a DBRef), and
    orjson's floats elsewhere; one non-finite float outside switches the whole field
    to the json module's spelling."""
    inside = {"x": DBRef("c", math.nan), "y": 1e-7}
    outside = {"x": DBRef("c", math.nan), "y": 1e-7, "z": math.inf}
    assert check(impl, bson.encode(event(fullDocument=inside))) != check(
        impl, bson.encode(event(fullDocument=outside))
    )


@pytest.mark.parametrize(
    "payload",
    [
        element(0x06, b"undefined", b""),
        element(0x0E, b"symbol", string(b"sym\x01")),
        element(0x0C, b"pointer", string(b"db.coll") + b"0123456789ab"),
        element(0x0F, b"scoped", struct.pack("<i", 4 + 8 + 5) + string(b"f()") + document()),
        element(0x0B, b"re", cstring(b"a+") + cstring(b"zxmiq")),
        element(0x0B, b"re2", cstring(b"") + cstring(b"ssi")),
        element(0x05, b"old", struct.pack("<i", 7) + b"\x02" + struct.pack("<i", 3) + b"abc"),
        element(0x03, b"dbref_nulldb", document(element(0x0A, b"$db", b""), element(0x10, b"n", b"\x05\x00\x00\x00"), element(0x02, b"$ref", string(b"c")), element(0x10, b"$id", b"\x01\x00\x00\x00"))),
        element(0x03, b"not_dbref", document(element(0x10, b"$ref", b"\x01\x00\x00\x00"), element(0x10, b"$id", b"\x01\x00\x00\x00"))),
        element(0x03, b"bad_db", document(element(0x02, b"$ref", string(b"c")), element(0x10, b"$id", b"\x01\x00\x00\x00"), element(0x10, b"$db", b"\x01\x00\x00\x00"))),
        element(0x03, b"code_ref", document(element(0x0D, b"$ref", string(b"c")), element(0x01, b"$id", struct.pack("<d", math.nan)))),
        element(0x03, b"repeat", document(element(0x10, b"a", b"\x01\x00\x00\x00"), element(0x10, b"b", b"\x02\x00\x00\x00"), element(0x01, b"a", struct.pack("<d", 2.5)))),
        element(0x04, b"array_keys_unchecked", document(element(0x10, b"\xff\xfe", b"\x01\x00\x00\x00"), element(0x10, b"\xff\xfe", b"\x02\x00\x00\x00"))),
    ],
)  # fmt: skip
def test_hand_made_elements(impl: ModuleType, payload: bytes) -> None:
    assert not isinstance(check(impl, with_full_document(payload)), str)


@pytest.mark.parametrize("bits", [0, 0x8000000000000000, 1, 0x7FEFFFFFFFFFFFFF, 0x000FFFFFFFFFFFFF, 0x7FF8000000000001, 0xFFF0000000000000])  # fmt: skip
def test_double_bit_patterns(impl: ModuleType, bits: int) -> None:
    check(impl, with_full_document(element(0x01, b"d", struct.pack("<Q", bits))))


@given(bits=st.integers(0, 2**64 - 1))
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_double(impl: ModuleType, bits: int) -> None:
    check(impl, with_full_document(element(0x01, b"d", struct.pack("<Q", bits))))


@given(bid=st.binary(min_size=16, max_size=16), high=st.sampled_from([None, 0x6000, 0x7800, 0x7C00, 0x7E00, 0xE000, 0x3040]))  # fmt: skip
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_decimal128(impl: ModuleType, bid: bytes, high: int | None) -> None:
    if high is not None:  # steer the top bits to the special and non-canonical forms
        bid = bid[:15] + bytes([high >> 8 | bid[15] & 0x01])
    check(impl, with_full_document(element(0x13, b"d", bid)))


# ---- hypothesis: arbitrary events --------------------------------------------------

NO_NUL = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
"""Characters a BSON key, regex or bson.encode's strings can hold."""

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_subnormal=True),
    st.text(),
    st.text(st.characters(max_codepoint=0x7F)),
    st.binary(max_size=40).map(lambda data: Binary(data, 0)),
    st.tuples(st.binary(max_size=20), st.sampled_from([0, 1, 3, 4, 5, 6, 7, 8, 9, 0x80, 0xFF])).map(
        lambda pair: Binary(*pair)
    ),
    st.binary(max_size=20).map(lambda data: Binary(data, 2)),
    st.binary(min_size=12, max_size=12).map(ObjectId),
    st.binary(min_size=16, max_size=16).map(Decimal128.from_bid),
    st.datetimes().map(lambda when: when.replace(microsecond=when.microsecond // 1000 * 1000)),
    st.integers(-(2**63), 2**63 - 1).map(DatetimeMS),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(lambda ti: Timestamp(*ti)),
    st.tuples(st.text(NO_NUL), st.integers(0, 127)).map(lambda pf: Regex(*pf)),
    st.just(MinKey()),
    st.just(MaxKey()),
    st.text(NO_NUL, max_size=8).map(Code),
)
keys = st.text(NO_NUL, max_size=6)


_DBREF_PARAMETERS = ("collection", "id", "database")
"""Names DBRef takes as arguments: extra fields by these names cannot be passed."""


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.tuples(st.text(max_size=4), children, st.dictionaries(keys, children, max_size=2)).map(
            lambda t: DBRef(
                t[0],
                t[1],
                None,
                **{
                    k: v for k, v in t[2].items() if k.isidentifier() and k not in _DBREF_PARAMETERS
                },
            )
        ),
        st.tuples(
            st.sampled_from(["c", 1, None]), children, st.sampled_from(["db", None, 2, ...])
        ).map(lambda t: {"$ref": t[0], "$id": t[1], **({} if t[2] is ... else {"$db": t[2]})}),
        st.tuples(st.text(max_size=4), st.dictionaries(keys, children, max_size=2)).map(
            lambda t: Code(t[0], t[1])
        ),
    )


values = st.recursive(scalars, containers, max_leaves=12)
documents = st.dictionaries(keys, values, max_size=5)

cluster_times = st.one_of(
    st.none(),
    st.just(...),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(lambda ti: Timestamp(*ti)),
    st.datetimes().map(lambda when: when.replace(microsecond=0)),
    st.integers(-(2**63), 2**63 - 1).map(DatetimeMS),
    st.fixed_dictionaries(
        {"$timestamp": st.fixed_dictionaries({"t": st.integers(-(2**40), 2**40), "i": values})}
    ),
    values,
)
wall_times = st.one_of(
    st.just(...),
    st.none(),
    st.datetimes().map(lambda when: when.replace(microsecond=when.microsecond // 1000 * 1000)),
    st.integers(-(2**63), 2**63 - 1).map(DatetimeMS),  # mostly beyond datetime's range
    st.sampled_from([DatetimeMS(-62135596800001), DatetimeMS(253402300800000)]),
    values,  # every other type, rejected
)
nonfinite = st.sampled_from([math.nan, math.inf, -math.inf])
transaction_parts = st.one_of(
    st.just(...),
    st.none(),
    st.integers(0, 2**63 - 1).map(Int64),
    st.fixed_dictionaries(
        {"id": st.binary(min_size=16, max_size=16).map(lambda data: Binary(data, 4))},
        optional={"uid": st.binary(max_size=32)},
    ),
    nonfinite,
    values,
)
extra_keys = st.one_of(
    st.sampled_from(["to", "collectionUUID", "operationDescription", "splitEvent", "nsType"]),
    keys,
)
extra_values = st.one_of(st.none(), nonfinite, values)
"""Values of top-level fields with no column: nulls are kept, non-finite doubles switch
the whole extra object to the json module's spelling."""
namespaces = st.one_of(
    st.none(),
    st.just(...),
    st.fixed_dictionaries({}, optional={"db": st.one_of(st.text(), values), "coll": st.text()}),
    values,
)


@st.composite
def change_events(draw: Callable[..., Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "_id": draw(st.one_of(st.just(...), values, documents)),
        "operationType": draw(
            st.one_of(st.sampled_from(["insert", "update", "delete"]), st.text(), values)
        ),
        "clusterTime": draw(cluster_times),
        "ns": draw(namespaces),
        "documentKey": draw(st.one_of(documents, values, st.just(...))),
        "fullDocument": draw(st.one_of(documents, values, st.just(...))),
        "updateDescription": draw(st.one_of(documents, st.just(...), st.none())),
        "fullDocumentBeforeChange": draw(st.one_of(documents, values, st.just(...))),
        "wallTime": draw(wall_times),
        "txnNumber": draw(transaction_parts),
        "lsid": draw(transaction_parts),
    }
    extra = draw(st.dictionaries(extra_keys, extra_values, max_size=3))
    fields.update({key: value for key, value in extra.items() if key not in fields})
    # Unknown fields among the known ones; txnNumber before or after lsid.
    order = draw(st.permutations(list(fields)))
    return {key: fields[key] for key in order if fields[key] is not ...}


@given(change=change_events())
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
def test_any_event(impl: ModuleType, change: dict[str, Any]) -> None:
    check(impl, bson.encode(change))


@given(changes=st.lists(change_events(), min_size=1, max_size=6))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
def test_a_batch_equals_its_events_one_by_one(
    impl: ModuleType, changes: list[dict[str, Any]]
) -> None:
    raws = [bson.encode(change) for change in changes]
    assert impl.convert_batch(raws) == [convert(impl, raw) for raw in raws]


# ---- rows with their partitions ----------------------------------------------------


def expected_rows(
    impl: ModuleType, raws: list[Any], step: int | None, now_seconds: int, envelopes: bool
) -> tuple[list[int], list[PartitionKey], list[Any], list[tuple[int, str]], Any, bool]:
    """What ``lines_batch`` (or ``envelopes_batch``) must give: ``impl``'s envelopes,
    placed by the key rules, and whether some input may be a fragment. (How the reasons for rejecting malformed bytes are worded
    differs between modes.)"""
    positions, partitions, rows, rejected, last = [], [], [], [], None
    for position, envelope in enumerate(impl.convert_batch(raws, lines=not envelopes)):
        if isinstance(envelope, str):
            rejected.append((position, envelope))
            continue
        row: Any = envelope.line
        if envelopes:
            when, wall = (
                None if ms is None else EPOCH_UTC + timedelta(milliseconds=ms)
                for ms in (envelope.cluster_time_ms, envelope.wall_time_ms)
            )
            row = EnvelopeRow(
                envelope.operation,
                envelope.database,
                envelope.collection,
                when,
                envelope.document_key,
                envelope.full_document,
                envelope.update_description,
                envelope.resume_token,
                envelope.full_document_before_change,
                wall,
                envelope.cluster_time_increment,
                envelope.transaction,
                envelope.extra,
            )
        ms = envelope.cluster_time_ms
        seconds = now_seconds if ms is None else ms // 1000
        positions.append(position)
        partitions.append(
            PartitionKey(envelope.collection, None if step is None else seconds // step * step)
        )
        assert row is not None
        rows.append(row)
        if envelope.resume_token_span is not None:
            last = (position, envelope.resume_token_span)
    return positions, partitions, rows, rejected, last, any(map(holds_split_mark, raws))


def holds_split_mark(raw: Any) -> bool:
    """Whether an input's bytes hold ``splitEvent`` anywhere; no bytes, no mark."""
    data = getattr(raw, "raw", raw)
    try:
        return b"splitEvent" in bytes(memoryview(data).cast("B"))
    except (TypeError, ValueError):
        return False


def assert_rows_batch(impl: ModuleType, raws: list[Any], step: int | None, now: int) -> None:
    for envelopes in (False, True):
        calls: list[None] = []
        breaker = partial(calls.append, None)
        if envelopes:
            batch = impl.envelopes_batch(raws, step, now, new_partition_key, EnvelopeRow, breaker)
        else:
            batch = impl.lines_batch(raws, step, now, new_partition_key, breaker)
        assert tuple(batch) == expected_rows(impl, raws, step, now, envelopes)
        assert all(type(key) is PartitionKey for key in batch.partitions)
        assert len(calls) == len(raws) // 64
        for row in batch.rows if envelopes else ():
            assert type(row) is EnvelopeRow
            assert all(
                when is None or when.tzinfo is UTC for when in (row.cluster_time, row.wall_time)
            )


@given(
    changes=st.lists(st.one_of(change_events(), st.binary(max_size=40)), min_size=1, max_size=8),
    step=st.sampled_from([None, 3600, 86400]),
    now=st.integers(-(2**40), 2**40),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
def test_rows_batch_of_any_events(
    impl: ModuleType, changes: list[Any], step: int | None, now: int
) -> None:
    raws = [change if isinstance(change, bytes) else bson.encode(change) for change in changes]
    assert_rows_batch(impl, raws, step, now)


# The first and last milliseconds a datetime holds, and one beyond each.
EDGE_TIMES = [-62135596800001, -62135596800000, 253402300799999, 253402300800000]


def test_rows_batch_partitions_many_collections_and_times(impl: ModuleType) -> None:
    """More partitions than the compiled core keeps at hand, times before 1970, on
    bucket edges and at the ends of a datetime's range (and beyond, rejected), events
    without a clusterTime or a collection, doubles around rejected events, and every
    input kind."""
    raws: list[Any] = []
    for n in range(300):
        fields: dict[str, Any] = {"ns": {"db": "shop", "coll": f"c{n * 7 % 11}"}}
        kind = n % 7
        if kind == 0:
            fields["clusterTime"] = DatetimeMS(-3_600_000 * (n % 5) - n % 7)
        elif kind == 1:
            fields["clusterTime"] = Timestamp(3600 * (n % 4) + n % 2 - 1 if n % 4 else 0, n)
        elif kind == 2:
            timeless = event()
            del timeless["clusterTime"]
            raws.append(bson.encode(timeless))
            continue
        elif kind == 3:
            fields["ns"] = {"db": "shop"}
        elif kind == 4:
            fields["fullDocument"] = {"f": n / 7, "nan": math.nan}
        elif kind == 5:
            fields["fullDocument"] = {"f": n / 3, "g": [1.5, n / 9]}
            fields["clusterTime" if n % 2 else "wallTime"] = DatetimeMS(EDGE_TIMES[n % 4])
        raw = bson.encode(event(**fields))
        raws.append([raw, bytearray(raw), memoryview(raw), RawBSONDocument(raw)][n % 4])
    raws[17] = b"not bson"
    raws[18] = document(  # repeated keys: the reference module reads this one
        element(0x02, b"operationType", string(b"insert")),
        element(0x03, b"_id", document(element(0x10, b"a", b"\x01\x00\x00\x00"))),
        element(0x03, b"ns", document(element(0x02, b"coll", string(b"c1")))),
        element(0x02, b"operationType", string(b"delete")),
    )
    for step in (None, 3600, 86400):
        assert_rows_batch(impl, raws, step, 1_736_935_200)
        assert_rows_batch(impl, raws, step, -1)


@pytest.mark.parametrize("step", [0, -3600])
def test_rows_batch_takes_positive_steps_only(impl: ModuleType, step: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        impl.lines_batch([VALID], step, 0, new_partition_key)
    with pytest.raises(ValueError, match="positive"):
        impl.envelopes_batch([VALID], step, 0, new_partition_key, EnvelopeRow)


@pytest.mark.parametrize("row_type", [None, dict, list])
def test_envelope_rows_are_tuples(impl: ModuleType, row_type: Any) -> None:
    with pytest.raises(TypeError):
        impl.envelopes_batch([VALID], 3600, 0, new_partition_key, row_type)


@given(ms=st.one_of(st.integers(-62135596800000, 253402300799999), st.sampled_from(EDGE_TIMES)))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
def test_envelope_times_of_any_instant(impl: ModuleType, ms: int) -> None:
    raw = bson.encode(event(clusterTime=DatetimeMS(ms), wallTime=DatetimeMS(-ms)))
    assert_rows_batch(impl, [raw], 3600, 0)


# ---- malformed input ---------------------------------------------------------------

VALID = bson.encode(
    event(
        fullDocument={
            "s": "tëxt",
            "f": 2.5,
            "l": [1, {"x": Decimal128("1.5")}],
            "b": Binary(b"ab", 2),
            "c": Code("f()", {"a": 1}),
            "r": Regex("a", "i"),
            "d": datetime(2025, 1, 1),
            "n": None,
            "t": True,
        }
    )
)


def test_every_truncation_is_rejected(impl: ModuleType) -> None:
    for cut in range(len(VALID)):
        assert isinstance(convert(impl, VALID[:cut]), str)
        fixed = bytearray(VALID[:cut])
        if cut >= 5:  # a consistent length prefix, so the walk reaches the cut
            fixed[:4] = struct.pack("<i", cut)
            fixed[-1] = 0
            check(impl, bytes(fixed))


def test_every_corrupted_byte_agrees_with_pymongo(impl: ModuleType) -> None:
    for at in range(len(VALID)):
        for value in {0x00, 0x01, 0x7F, 0xFF, VALID[at] ^ 0x01, VALID[at] + 1 & 0xFF}:
            corrupted = bytearray(VALID)
            corrupted[at] = value
            check(impl, bytes(corrupted))


@pytest.mark.parametrize(
    "text",
    [b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80", b"\xff", b"\xf8\x88\x80\x80\x80"],
)  # fmt: skip
@pytest.mark.parametrize("where", ["value", "key", "top_key", "regex", "code_scope_key"])
def test_bad_utf8_is_rejected(impl: ModuleType, text: bytes, where: str) -> None:
    if where == "value":
        raw = with_full_document(element(0x02, b"s", string(text)))
    elif where == "key":
        raw = with_full_document(element(0x10, text, b"\x01\x00\x00\x00"))
    elif where == "top_key":
        raw = document(element(0x02, b"operationType", string(b"x")), element(0x0A, text, b""))
    elif where == "regex":
        raw = with_full_document(element(0x0B, b"r", cstring(text) + cstring(b"")))
    else:
        scope = document(element(0x0A, text, b""))
        raw = with_full_document(
            element(0x0F, b"c", struct.pack("<i", 4 + 6 + len(scope)) + string(b"f") + scope)
        )
    result = check(impl, raw)
    assert isinstance(result, str)


@pytest.mark.parametrize("kind", [0x00, 0x14, 0x15, 0x20, 0x80, 0xFE])
def test_unknown_types_are_rejected(impl: ModuleType, kind: int) -> None:
    assert isinstance(check(impl, with_full_document(element(kind, b"x", b"\x00" * 8))), str)


def test_trailing_bytes_are_rejected(impl: ModuleType) -> None:
    assert isinstance(convert(impl, VALID + b"\x00"), str)
    assert isinstance(convert(impl, b""), str)


def nested(depth: int, *innermost: bytes) -> bytes:
    """An event whose fullDocument nests documents and arrays to ``depth`` in all."""
    inner = document(*innermost)
    for level in range(depth - 2):
        inner = document(element(0x04 if level % 2 else 0x03, b"0", inner))
    return document(
        element(0x02, b"operationType", string(b"insert")),
        element(0x03, b"fullDocument", inner),
    )


def test_nesting_limit(impl: ModuleType) -> None:
    assert not isinstance(check(impl, nested(100)), str)
    assert isinstance(convert(impl, nested(101)), str)
    assert isinstance(convert(impl, nested(5000)), str)
    # a DBPointer at the deepest level is no container of its own
    pointer = element(0x0C, b"p", string(b"c") + b"0123456789ab")
    assert not isinstance(check(impl, nested(100, pointer)), str)
    scope = element(0x0F, b"c", struct.pack("<i", 4 + 6 + 5) + string(b"f") + document())
    assert isinstance(convert(impl, nested(100, scope)), str)  # the scope is level 101


# ---- the envelope --------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"operationType": ...},
        {"operationType": ""},
        {"operationType": 5},
        {"operationType": None},
        {"operationType": Code("insert")},
        {"ns": ...},
        {"ns": None},
        {"ns": {}},
        {"ns": 0},
        {"ns": ""},
        {"ns": []},
        {"ns": "x"},
        {"ns": 1},
        {"ns": {"db": 5}},
        {"ns": {"db": None, "coll": "c"}},
        {"ns": {"coll": Code("c", {})}},
        {"ns": {"$ref": "c", "$id": 1}},
        {"clusterTime": ...},
        {"clusterTime": None},
        {"clusterTime": datetime(2025, 1, 2, 3, 4, 5, 678000)},
        {"clusterTime": datetime(1, 1, 1)},
        {"clusterTime": DatetimeMS(2**62)},
        {"clusterTime": 5},
        {"clusterTime": "x"},
        {"clusterTime": {"$timestamp": {"t": 5, "i": 6}}},
        {"clusterTime": {"$timestamp": {"t": Int64(5)}}},
        {"clusterTime": {"$timestamp": {"t": True, "i": -3}}},
        {"clusterTime": {"$timestamp": {"t": 2**40}}},
        {"clusterTime": {"$timestamp": {"t": 1.5}}},
        {"clusterTime": {"$timestamp": {"$ref": "c", "$id": 1, "t": 5}}},
        {"clusterTime": {"$ref": "c", "$id": 1, "time": 5, "inc": 2}},
        {"documentKey": None, "fullDocument": ..., "updateDescription": 5, "_id": ...},
        {"_id": [1]},
        {"_id": "token"},
        {"_id": DBRef("c", 1)},
    ],
)
def test_envelope_rules(impl: ModuleType, fields: dict[str, Any]) -> None:
    check(impl, bson.encode(event(**fields)))


WALL_TIMES = [
    ...,
    None,
    datetime(2025, 1, 2, 3, 4, 5, 678000),
    datetime(2025, 1, 2, 3, 4, 5),
    datetime(1, 1, 1),
    datetime(1969, 12, 31, 23, 59, 59, 999000),
    datetime(9999, 12, 31, 23, 59, 59, 999000),
    DatetimeMS(-62135596800001),
    DatetimeMS(253402300800000),
    DatetimeMS(-(2**63)),
    1.5,
    "2025-01-01T00:00:00Z",
    {"$date": 5},
    {"$ref": "c", "$id": 1},
    [datetime(2025, 1, 1)],
    b"x",
    Binary(b"x", 4),
    ObjectId(b"0123456789ab"),
    True,
    Regex("a", "i"),
    DBRef("c", 1),
    Code("f()"),
    Code("f()", {}),
    5,
    Timestamp(1, 2),
    Int64(5),
    Decimal128("1"),
    MinKey(),
    MaxKey(),
]


@pytest.mark.parametrize("wall_time", WALL_TIMES, ids=repr)
def test_wall_time_rules(impl: ModuleType, wall_time: Any) -> None:
    """A BSON date within datetime's range, or null; anything else rejects the event,
    with the same reason in both modes."""
    raw = bson.encode(event(wallTime=wall_time))
    result = check(impl, raw)
    assert result == convert(_bsonjson_py, raw)
    if isinstance(wall_time, datetime):
        assert isinstance(result, RawEnvelope)
        assert result.wall_time_ms == (wall_time - EPOCH) // timedelta(milliseconds=1)


def test_undefined_wall_time_is_none(impl: ModuleType) -> None:
    raw = document(
        element(0x02, b"operationType", string(b"insert")), element(0x06, b"wallTime", b"")
    )
    result = check(impl, raw)
    assert isinstance(result, RawEnvelope)
    assert result.wall_time_ms is None


@pytest.mark.parametrize(
    "fields",
    [
        {"txnNumber": Int64(3), "lsid": {"id": Binary(b"u" * 16, 4), "uid": b"\x01" * 32}},
        {"lsid": {"id": Binary(b"u" * 16, 4)}, "txnNumber": Int64(3)},
        {"lsid": {"id": 1.5}, "fullDocument": {"f": 2.5}, "txnNumber": 0.5},
        {"txnNumber": Int64(3)},
        {"lsid": {"id": 1}},
        {"txnNumber": None, "lsid": {"id": 1}},
        {"txnNumber": 4, "lsid": None},
        {"txnNumber": None, "lsid": None},
        {"lsid": {"$ref": "c", "$id": 1.5, "x": 0.1}, "txnNumber": 2.5},
        {"lsid": DBRef("c", math.nan), "txnNumber": 1e-7},
        {"lsid": {"a": 1, "b": 2, "a ": 3}},
    ],
)
def test_transaction(impl: ModuleType, fields: dict[str, Any]) -> None:
    check(impl, bson.encode(event(**fields)))


def test_transaction_is_one_object_for_non_finite_doubles(impl: ModuleType) -> None:
    """The transaction is written as one object: a NaN txnNumber makes the lsid's
    doubles take the json module's spelling too."""
    finite = check(impl, bson.encode(event(lsid={"x": 1e-7}, txnNumber=2.5)))
    mixed = check(impl, bson.encode(event(lsid={"x": 1e-7}, txnNumber=math.nan)))
    assert isinstance(finite, RawEnvelope)
    assert isinstance(mixed, RawEnvelope)
    assert finite.transaction == b'{"txnNumber":2.5,"lsid":{"x":1e-7}}'
    assert mixed.transaction == b'{"txnNumber":{"$numberDouble":"NaN"},"lsid":{"x":1e-07}}'


def test_undefined_transaction_parts_are_left_out(impl: ModuleType) -> None:
    raw = document(
        element(0x06, b"lsid", b""),
        element(0x02, b"operationType", string(b"insert")),
        element(0x12, b"txnNumber", struct.pack("<q", 9)),
    )
    result = check(impl, raw)
    assert isinstance(result, RawEnvelope)
    assert result.transaction == b'{"txnNumber":9}'


@pytest.mark.parametrize(
    "fields",
    [
        {"to": {"db": "a", "coll": "b"}, "collectionUUID": Binary(b"u" * 16, 4)},
        {"operationDescription": {"index": {"v": 2.5}}, "splitEvent": None, "nsType": "collection"},
        {"a": None, "b": [None, math.nan], "c": 1e-7},
        {"a": 1e-7, "to": {"x": 2.5, "$id": 1e-7, "$ref": "c"}, "b": 0.1},
        {"a": 1e-7, "to": {"x": 2.5, "$id": 1e-7, "$ref": "c"}, "b": math.inf},
        {"to": DBRef("c", math.nan, x=1e-7), "b": 1e-7},
        {"to": {"$ref": "c", "$id": 1, "$db": None, "x": 1.5}},
        {"to": {"a": 1, "b": 2.5}, "z": {"q": {"a": 1}}},
        {"code": Code("f()", {"s": math.nan}), "d": 1e-7},
        {"when": datetime(2025, 1, 1), "never": DatetimeMS(2**62)},
    ],
)
def test_extra(impl: ModuleType, fields: dict[str, Any]) -> None:
    """Top-level fields with no column, among the known ones, in document order."""
    items = list(event(**fields).items())
    shuffled = dict(items[1::2] + items[::2])
    for change in (shuffled, event(**fields)):
        check(impl, bson.encode(change))


def test_extra_is_one_object_for_non_finite_doubles(impl: ModuleType) -> None:
    result = check(impl, bson.encode(event(a=1e-7, fullDocument={"f": 1e-7}, b=-math.inf)))
    assert isinstance(result, RawEnvelope)
    assert result.extra == b'{"a":1e-07,"b":{"$numberDouble":"-Infinity"}}'
    assert result.full_document == b'{"f":1e-7}'


def test_repeated_keys_inside_extra_values(impl: ModuleType) -> None:
    """The extra object is a dict's JSON: a repeated key keeps its first position and
    last value, as in any other document."""
    inner = document(
        element(0x10, b"a", b"\x01\x00\x00\x00"),
        element(0x01, b"b", struct.pack("<d", 2.5)),
        element(0x01, b"a", struct.pack("<d", 0.5)),
    )
    raw = document(
        element(0x02, b"operationType", string(b"insert")),
        element(0x03, b"to", inner),
        element(0x0A, b"splitEvent", b""),
    )
    result = check(impl, raw)
    assert isinstance(result, RawEnvelope)
    assert result.extra == b'{"to":{"a":0.5,"b":2.5},"splitEvent":null}'


@pytest.mark.parametrize("count", [9, 30, 300])
def test_many_unknown_fields(impl: ModuleType, count: int) -> None:
    elements = [element(0x01, f"u{i}".encode(), struct.pack("<d", i / 7)) for i in range(count)]
    elements.insert(count // 2, element(0x02, b"operationType", string(b"insert")))
    for raw in (document(*elements), document(*elements, elements[3])):
        for lines in (False, True):
            assert impl.convert_batch([raw, raw], lines) == _bsonjson_py.convert_batch(
                [raw, raw], lines
            )
        check(impl, raw)


def test_json_lines_row_of_every_column(impl: ModuleType) -> None:
    change = event(
        fullDocumentBeforeChange={"a": 0.5},
        wallTime=datetime(2025, 1, 2, 3, 4, 5, 678000),
        lsid={"id": 1},
        txnNumber=Int64(2),
        to={"db": "x"},
    )
    result = impl.convert_batch([bson.encode(change)], lines=True)[0]
    assert result.line == (
        b'{"operation":"update","database":"shop","collection":"orders",'
        b'"cluster_time":"2025-01-15T10:00:00Z","document_key":{"_id":"303132333435363738396162"},'
        b'"full_document":{"a":1},"update_description":{"updatedFields":{"a":1},"removedFields":[]},'
        b'"resume_token":{"_data":"8267A1B2C3000000012B"},"full_document_before_change":{"a":0.5},'
        b'"wall_time":"2025-01-02T03:04:05.678000Z","cluster_time_increment":7,'
        b'"transaction":{"txnNumber":2,"lsid":{"id":1}},"extra":{"to":{"db":"x"}}}'
    )


def test_repeated_top_level_keys_keep_the_last_value(impl: ModuleType) -> None:
    raw = document(
        element(0x02, b"operationType", string(b"insert")),
        element(0x03, b"_id", document(element(0x10, b"a", b"\x01\x00\x00\x00"))),
        element(0x02, b"operationType", string(b"delete")),
        element(0x03, b"_id", document(element(0x10, b"b", b"\x02\x00\x00\x00"))),
    )
    result = check(impl, raw)
    assert isinstance(result, RawEnvelope)
    assert result.operation == "delete"
    assert result.resume_token_span is not None
    assert dict(RawBSONDocument(raw[slice(*result.resume_token_span)]).items()) == {"b": 2}


def test_inputs_of_every_kind(impl: ModuleType) -> None:
    expected = oracle(VALID)
    results = impl.convert_batch(
        [
            VALID,
            bytearray(VALID),
            memoryview(VALID),
            RawBSONDocument(VALID),
            5,
            memoryview(VALID)[::2],
        ]
    )
    assert results[:4] == [expected] * 4
    assert all(isinstance(result, str) for result in results[4:])


def test_resume_token_span_slices_the_token(impl: ModuleType) -> None:
    result = convert(impl, VALID)
    assert isinstance(result, RawEnvelope)
    assert result.resume_token_span is not None
    token = RawBSONDocument(VALID[slice(*result.resume_token_span)])
    assert dict(token.items()) == {"_data": "8267A1B2C3000000012B"}


def test_selector_honours_the_environment() -> None:
    code = "from rigatoni_s3 import _bsonjson; print(_bsonjson.NATIVE)"
    env = {**os.environ, "RIGATONI_S3_NO_EXTENSIONS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False"
    env["RIGATONI_S3_NO_EXTENSIONS"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    try:
        import rigatoni_s3._bsonjson_c  # noqa: F401
    except ImportError:
        assert out.stdout.strip() == "False"
    else:
        assert out.stdout.strip() == "True"


@pytest.mark.parametrize("count", [24, 25, 300])
@pytest.mark.parametrize("repeat", [False, True])
def test_many_keys(impl: ModuleType, count: int, repeat: bool) -> None:
    """Wide documents, where repeated keys are searched by sorting rather than pairwise."""
    elements = [element(0x10, f"k{i}".encode(), struct.pack("<i", i)) for i in range(count)]
    if repeat:
        elements.append(element(0x01, b"k7", struct.pack("<d", 0.5)))
    check(impl, with_full_document(element(0x03, b"wide", document(*elements))))


@pytest.mark.parametrize("size", [1, 7, 8, 9, 15, 16, 17, 4096, 1 << 20])
def test_long_strings(impl: ModuleType, size: int) -> None:
    """Text is scanned eight bytes at a time; what needs a look may sit anywhere."""
    for filler in ("a", "é", '"', "\x1f", "😀", "a\\"):
        text = (filler * size)[:size] if len(filler) == 1 else filler * (size // 2 + 1)
        check(impl, bson.encode(event(fullDocument={"s": text, "t": "x" * size + "\n"})))


@given(changes=st.lists(change_events(), min_size=1, max_size=4))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
def test_json_lines_rows_agree(impl: ModuleType, changes: list[dict[str, Any]]) -> None:
    """With lines=True, each envelope also holds its JSON Lines row, the same in both
    modes; without, the row is None and the envelope is otherwise the same."""
    raws = [bson.encode(change) for change in changes]
    with_lines = impl.convert_batch(raws, lines=True)

    def accepted(results: list[Any]) -> list[Any]:  # reasons differ between the modes
        return [None if isinstance(result, str) else result for result in results]

    assert accepted(with_lines) == accepted(_bsonjson_py.convert_batch(raws, lines=True))
    without = impl.convert_batch(raws)
    for full, bare in zip(with_lines, without, strict=True):
        if isinstance(full, str):
            assert isinstance(bare, str)
        else:
            assert full.line is not None
            assert bare == full._replace(line=None)


@pytest.mark.parametrize(
    "raw",
    [
        b"splitEvent",
        b"xsplitEvent",
        b"splitEventx",
        b"EEEEEsplitEvenEt",
        b"plitEvent",
        b"splitEven",
        b"splitEvenT",
        b"EsplitEveEnt" + b"E" * 20,
        b"\x00" * 40 + b"splitEvent",
        b"E" * 64,
        b"",
        bytes(memoryview(bson.encode({"splitEvent": {"fragment": 1, "of": 2}}))),
    ],
)
def test_the_fragment_mark_is_found_anywhere_in_the_bytes(impl: ModuleType, raw: bytes) -> None:
    """Whatever the bytes (the mark at either end, near misses, no document at all),
    a batch may hold fragments exactly when ``splitEvent`` occurs in one of them."""
    plain = bson.encode({"operationType": "insert"})
    for batch in ([raw], [plain, raw], [raw, plain, memoryview(raw)]):
        found = impl.lines_batch(batch, None, 0, new_partition_key).may_hold_fragments
        assert found == (b"splitEvent" in raw)


_PARTITIONS = st.sampled_from(
    [
        PartitionKey("orders", 0),
        PartitionKey("orders", 3600),
        PartitionKey("users", 0),
        PartitionKey(None, None),
        PartitionKey(None, 3600),
    ]
)


@given(st.lists(st.tuples(_PARTITIONS, st.integers(0, 1 << 20)), max_size=60), st.booleans())
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_rows_are_grouped_by_partition_in_order(
    impl: ModuleType, placed: list[tuple[PartitionKey, int]], copies: bool
) -> None:
    """Each partition gets its rows and sizes in the order given, partitions in the
    order first seen; equal keys that are distinct objects share a group."""
    partitions = [PartitionKey(*partition) if copies else partition for partition, _ in placed]
    rows = [f"row {n}".encode() for n in range(len(placed))]
    sizes = [size for _, size in placed]
    expected: dict[PartitionKey, tuple[list[bytes], list[int]]] = {}
    for partition, row, size in zip(partitions, rows, sizes, strict=True):
        expected.setdefault(partition, ([], []))
        expected[partition][0].append(row)
        expected[partition][1].append(size)
    groups = impl.group_rows(partitions, tuple(rows), sizes)
    assert groups == expected
    assert list(groups) == list(expected)


def test_grouping_refuses_lists_of_different_lengths(impl: ModuleType) -> None:
    key = PartitionKey("orders", 0)
    with pytest.raises(ValueError, match="as long as each other"):
        impl.group_rows([key, key], [b"a"], [1, 1])
    with pytest.raises(ValueError, match="as long as each other"):
        impl.group_rows([key], [b"a"], [])
