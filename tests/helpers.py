"""Event factories and readers shared by the tests."""

from __future__ import annotations

import base64
import gzip
import json
import math
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import zstandard
from hypothesis import strategies as st

from rigatoni_s3 import ChangeEvent, Column, KeyGenerationStrategy, S3Config, SerializationFormat
from rigatoni_s3._encoder import Encoder
from rigatoni_s3.compression import IDENTITY
from rigatoni_s3.events import EventFields, fields_of
from rigatoni_s3.formats.jsonl import JsonLinesSerializer

BASE_TIME = datetime(2025, 1, 15, 10, 0, 0, tzinfo=UTC)

MakeConfig = Callable[..., S3Config]
"""The type of the ``make_config`` and ``make_proxied_config`` fixtures."""


def raw_event(
    n: int,
    collection: str = "users",
    when: datetime | None = None,
    operation: str = "insert",
    database: str = "shop",
) -> dict[str, Any]:
    """A raw change-stream document as pymongo yields it (extended JSON clusterTime)."""
    when = when or BASE_TIME + timedelta(seconds=n)
    return {
        "_id": {"_data": f"8263{n:012d}"},
        "operationType": operation,
        "ns": {"db": database, "coll": collection},
        "documentKey": {"_id": n},
        "fullDocument": {"_id": n, "name": f"user {n}", "tags": ["a", "b"], "nested": {"n": n}},
        "clusterTime": {"$timestamp": {"t": int(when.timestamp()), "i": 1}},
    }


def raw_events(
    count: int, collections: tuple[str, ...] = ("users",), start: int = 0
) -> list[dict[str, Any]]:
    return [raw_event(start + i, collections[i % len(collections)]) for i in range(count)]


def list_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return sorted(keys)


def ids_in(client: Any, bucket: str, prefix: str = "") -> Counter[int]:
    """How many times each document id appears across all objects."""
    return Counter(
        record["document_key"]["_id"] for _, record in iter_jsonl(client, bucket, prefix)
    )


def read_body(client: Any, bucket: str, key: str) -> bytes:
    """An object's bytes, decompressed according to its extension."""
    body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    if key.endswith(".gz"):
        return gzip.decompress(body)
    if key.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompress(body)
    return body


def iter_jsonl(client: Any, bucket: str, prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (key, record) of every JSON Lines object under ``prefix``."""

    for key in list_keys(client, bucket, prefix):
        for line in read_body(client, bucket, key).splitlines():
            yield key, json.loads(line)


def decode_records(key: str, body: bytes) -> list[dict[str, Any]]:
    """The events of one object in any format, read with that format's own reader.

    ``body`` is already decompressed (see :func:`read_body`). Documents come back
    parsed from their JSON, ``cluster_time`` as an aware datetime, so records of
    every format compare equal to each other. CSV's empty fields read as None.
    """
    import csv
    import io

    name = key.removesuffix(".gz").removesuffix(".zst")
    records: list[dict[str, Any]]
    if name.endswith(".jsonl"):
        records = [json.loads(line) for line in body.splitlines()]  # bytes: splits at \n, \r only
    elif name.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(body.decode("utf-8"), newline=""))
        records = [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        records = pq.read_table(io.BytesIO(body)).to_pylist()
    elif name.endswith(".avro"):
        import fastavro

        records = [cast(dict[str, Any], record) for record in fastavro.reader(io.BytesIO(body))]
    else:
        raise ValueError(f"no reader for {key}")
    for record in records:
        for field in TIME_COLUMNS:
            when = record[field]
            if isinstance(when, str):
                when = datetime.fromisoformat(when)
            if isinstance(when, datetime):
                record[field] = when.astimezone(UTC)
        if not name.endswith(".jsonl"):
            for field in JSON_COLUMNS:
                if record[field] is not None:
                    record[field] = json.loads(record[field])
        increment = record["cluster_time_increment"]
        if isinstance(increment, str):  # CSV
            record["cluster_time_increment"] = int(increment)
    return records


JSON_COLUMNS = (
    "document_key",
    "full_document",
    "update_description",
    "resume_token",
    "full_document_before_change",
    "transaction",
    "extra",
)
"""Columns holding JSON: parsed by :func:`decode_records` in every format."""

TIME_COLUMNS = ("cluster_time", "wall_time")


def read_records(client: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """The events of one object, whatever its format and compression."""
    return decode_records(key, read_body(client, bucket, key))


# -- BSON lookalikes ----------------------------------------------------------------------
# Stand-ins for bson types: rigatoni_s3 recognises them by module and class name, so these
# exercise the mapping without a pymongo import (test_jsonl also checks the real classes).


class ObjectId:
    __module__ = "bson.objectid"

    def __init__(self, hex_id: str) -> None:
        self._hex = hex_id

    def __str__(self) -> str:
        return self._hex


class Decimal128:
    __module__ = "bson.decimal128"

    def __init__(self, text: str) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text


class Int64(int):
    __module__ = "bson.int64"


class Binary(bytes):
    __module__ = "bson.binary"
    subtype = 0


class Timestamp:
    __module__ = "bson.timestamp"

    def __init__(self, time: int, inc: int) -> None:
        self.time = time
        self.inc = inc


class Regex:
    __module__ = "bson.regex"

    def __init__(self, pattern: str, flags: str) -> None:
        self.pattern = pattern
        self.flags = flags


class MinKey:
    __module__ = "bson.min_key"


class MaxKey:
    __module__ = "bson.max_key"


class DBRef:
    __module__ = "bson.dbref"

    def __init__(self, collection: str, oid: Any, database: str) -> None:
        self._doc = {"$ref": collection, "$id": oid, "$db": database}

    def as_doc(self) -> dict[str, Any]:
        return dict(self._doc)


OID = "65a4f0c2e1b2c3d4e5f60718"
BSON_DOCUMENT: dict[str, Any] = {
    "_id": ObjectId(OID),
    "when": datetime(2025, 1, 15, 10, 30, 0, 123456, tzinfo=UTC),
    "naive": datetime(2025, 1, 15),
    "price": Decimal128("1234567890.123456789012345678901234"),
    "exact": Decimal("0.1"),
    "count": Int64(2**62),
    "blob": Binary(b"\x00\xffbin"),
    "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "ts": Timestamp(1736935200, 7),
    "re": Regex("^a.*", "i"),
    "lo": MinKey(),
    "hi": MaxKey(),
    "ref": DBRef("users", ObjectId(OID), "shop"),
    "nested": {"ids": [ObjectId(OID), [Int64(-1), {"deep": Binary(b"x")}]], "empty": {}},
}
BSON_EXPECTED: dict[str, Any] = {
    "_id": OID,
    "when": "2025-01-15T10:30:00.123456Z",
    "naive": "2025-01-15T00:00:00Z",
    "price": "1234567890.123456789012345678901234",
    "exact": "0.1",
    "count": 2**62,
    "blob": base64.b64encode(b"\x00\xffbin").decode(),
    "uid": "12345678-1234-5678-1234-567812345678",
    "ts": {"t": 1736935200, "i": 7},
    "re": {"$regularExpression": {"pattern": "^a.*", "options": "i"}},
    "lo": {"$minKey": 1},
    "hi": {"$maxKey": 1},
    "ref": {"$ref": "users", "$id": OID, "$db": "shop"},
    "nested": {"ids": [OID, [-1, {"deep": "eA=="}]], "empty": {}},
}


def expected_json(value: Any) -> Any:
    """What a plain JSON-able value reads back as: non-finite floats become $numberDouble."""
    if isinstance(value, float) and not math.isfinite(value):
        text = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return {"$numberDouble": text}
    if isinstance(value, dict):
        return {key: expected_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [expected_json(item) for item in value]
    return value


# -- envelopes and their encodings -------------------------------------------------------

ALL_FORMATS = [
    SerializationFormat.JSON,
    SerializationFormat.CSV,
    SerializationFormat.PARQUET,
    SerializationFormat.AVRO,
]


def event(
    n: int = 1,
    *,
    operation: Any = "insert",
    database: Any = "shop",
    collection: Any = "users",
    cluster_time: Any = BASE_TIME,
    document_key: Any = None,
    full_document: Any = None,
    update_description: Any = None,
    resume_token: Any = None,
    full_document_before_change: Any = None,
    wall_time: Any = None,
    cluster_time_increment: Any = None,
    transaction: Any = None,
    extra: Any = None,
) -> EventFields:
    """The envelope of one event; by default an insert of ``{"_id": n}``."""
    return EventFields(
        operation,
        database,
        collection,
        cluster_time,
        {"_id": n} if document_key is None else document_key,
        {"_id": n, "name": f"user {n}"} if full_document is None else full_document,
        update_description,
        {"_data": f"8263{n:012d}"} if resume_token is None else resume_token,
        full_document_before_change,
        wall_time,
        cluster_time_increment,
        transaction,
        extra,
    )


class Unmappable:
    """A value no format has a mapping for."""


LONE_SURROGATE = "bad \udc80 text"


JSONL_SERIALIZER = JsonLinesSerializer()


JSONL_ENCODER = Encoder(JSONL_SERIALIZER, IDENTITY, KeyGenerationStrategy.FLAT)


def line_of(**document: Any) -> dict[str, Any]:
    """The JSON Lines record of an insert of ``document``, checked to be one whole line."""
    event = ChangeEvent(
        "insert",
        "shop",
        "users",
        {"_id": 1},
        document,
        None,
        datetime(2025, 1, 15, 10, tzinfo=UTC),
        {"_data": "t"},
    )
    fields = fields_of(event)
    row, size = JSONL_SERIALIZER.encode_event(fields)
    # A write_batch call, encoded all at once, writes the very same line.
    (part,) = JSONL_ENCODER.prepare([event, event], datetime.now(UTC)).partitions.values()
    assert part.rows == [row, row]
    assert part.cumulative_bytes == [size, 2 * size]
    body = JSONL_SERIALIZER.serialize([row])
    assert size == len(body)
    assert body.endswith(b"\n")
    assert body.count(b"\n") == 1
    parsed: dict[str, Any] = json.loads(body)
    return parsed


# -- hypothesis strategies ----------------------------------------------------------------

KEYS = st.text(max_size=8)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)

VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=25,
)
DOCUMENTS_ST = st.dictionaries(KEYS, VALUES, max_size=6)
ANY_TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=6)
ANY_VALUE = st.recursive(
    SCALARS | ANY_TEXT | st.builds(Unmappable) | st.binary(max_size=4) | st.datetimes(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(ANY_TEXT | st.integers(), children, max_size=3)
    ),
    max_leaves=10,
)
ANY_EVENT = st.builds(
    EventFields,
    operation=st.one_of(ANY_TEXT, st.none(), st.integers()),
    database=st.one_of(ANY_TEXT, st.none(), st.integers()),
    collection=st.one_of(ANY_TEXT, st.none()),
    cluster_time=st.none() | st.datetimes(timezones=st.just(UTC)),
    document_key=ANY_VALUE,
    full_document=ANY_VALUE,
    update_description=ANY_VALUE,
    resume_token=ANY_VALUE,
    full_document_before_change=ANY_VALUE,
    wall_time=st.none() | st.datetimes(timezones=st.just(UTC)) | st.integers(),
    cluster_time_increment=st.none() | st.integers(0, 2**32 - 1) | st.booleans() | ANY_TEXT,
    transaction=st.none() | st.fixed_dictionaries({"txnNumber": st.integers(), "lsid": ANY_VALUE}),
    extra=st.none() | st.dictionaries(st.text(max_size=5), ANY_VALUE, max_size=3),
)


DOCUMENT_COLUMNS = {
    "status": Column("full_document.status", "string"),
    "age": Column("full_document.age", "int64"),
    "score": Column("full_document.score", "float64"),
    "vip": Column("full_document.vip", "bool"),
    "seen": Column("full_document.seen", "timestamp"),
    "born": Column("full_document.born", "date"),
    "total": Column("full_document.total", "decimal(12,2)"),
    "tags": Column("full_document.tags", "json"),
}
"""Typed columns of every type, over fields of ``full_document``."""
