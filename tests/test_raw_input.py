"""Raw BSON input: the same objects, byte for byte, as for the same events decoded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
import bson
import pytest
from bson import Binary, Decimal128, Int64, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rigatoni_s3 import (
    Column,
    Compression,
    KeyGenerationStrategy,
    S3Config,
    S3Destination,
    SerializationFormat,
)
from rigatoni_s3._encoder import Encoder, PreparedEvents
from rigatoni_s3.compression import codec_for
from rigatoni_s3.errors import InvalidEventError, RejectedEventsError
from rigatoni_s3.formats import serializer_for
from tests.helpers import list_keys, read_body
from tests.test_bsonjson import change_events, values

DECODE: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=False, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
NOW = datetime(2025, 3, 3, 12, tzinfo=UTC)
START = datetime(2025, 3, 3, 6, 0, 0)
CONFIGS = [(f, c) for f in SerializationFormat for c in Compression]


def change(n: int, collection: str = "orders") -> dict[str, Any]:
    """A change event with the BSON types a real stream carries."""
    when = START + timedelta(seconds=37 * n)
    document: dict[str, Any] = {
        "_id": ObjectId(f"{n:024x}"),
        "total": Decimal128(Decimal(f"{n}.25")),
        "count": Int64(2**40 + n),
        "ratio": n / 7,
        "placed": when,
        "lines": [{"sku": f"S-{n}", "qty": n % 5}, {"note": "crème brûlée \u2028"}],
        "blob": Binary(bytes([n % 256]) * 3),
        "pattern": Regex("^a.*", "im"),
    }
    event: dict[str, Any] = {
        "_id": {"_data": f"82{n:030X}"},
        "operationType": ("insert", "update", "delete")[n % 3],
        "clusterTime": Timestamp(int(when.replace(tzinfo=UTC).timestamp()), n % 7),
        "ns": {"db": "shop", "coll": collection},
        "documentKey": {"_id": document["_id"]},
    }
    if n % 3 == 0:
        event["fullDocument"] = document
    elif n % 3 == 1:
        event["updateDescription"] = {"updatedFields": {"ratio": float("nan")}, "removedFields": []}
    return event


def encoder(fmt: SerializationFormat, compression: Compression) -> Encoder:
    return Encoder(
        serializer_for(fmt, compression),
        codec_for(compression),
        KeyGenerationStrategy.HIVE_PARTITIONED,
    )


def bodies(encoder: Encoder, prepared: PreparedEvents) -> dict[Any, bytes]:
    return {
        partition: encoder.encode(part.rows, part.cumulative_bytes[-1]).body
        for partition, part in prepared.partitions.items()
    }


@pytest.mark.parametrize(("fmt", "compression"), CONFIGS)
@pytest.mark.parametrize("wrap", ["bytes", "memoryview", "RawBSONDocument"])
def test_raw_events_give_the_objects_of_decoded_ones(
    fmt: SerializationFormat, compression: Compression, wrap: str
) -> None:
    """Rows, sizes, partitions and object bodies equal those of the decoded events."""
    changes = [change(n, ("orders", "users")[n % 2]) for n in range(300)]
    raws = [bson.encode(c) for c in changes]
    wrapped: dict[str, list[Any]] = {
        "bytes": list(raws),
        "memoryview": [memoryview(r) for r in raws],
        "RawBSONDocument": [RawBSONDocument(r) for r in raws],
    }
    given_raw = wrapped[wrap]
    enc = encoder(fmt, compression)
    from_raw = enc.prepare(given_raw, NOW)
    from_dicts = enc.prepare([bson.decode(r, DECODE) for r in raws], NOW)
    assert from_raw.rejected == from_dicts.rejected == []
    assert (from_raw.accepted, from_raw.nbytes) == (from_dicts.accepted, from_dicts.nbytes)
    assert list(from_raw.partitions) == list(from_dicts.partitions)
    for partition, part in from_raw.partitions.items():
        assert part.rows == from_dicts.partitions[partition].rows
        assert part.cumulative_bytes == from_dicts.partitions[partition].cumulative_bytes
    assert bodies(enc, from_raw) == bodies(enc, from_dicts)
    assert isinstance(from_raw.last_resume_token, RawBSONDocument)
    assert dict(from_raw.last_resume_token) == from_dicts.last_resume_token


@pytest.mark.parametrize("fmt", list(SerializationFormat))
@given(changes=st.lists(change_events(), min_size=1, max_size=5), split=st.integers(0, 5))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_events_mixed_raw_and_decoded_agree(
    fmt: SerializationFormat, changes: list[dict[str, Any]], split: int
) -> None:
    """Arbitrary events of every BSON type, some raw and some decoded in one call, give
    the rows and rejections of all of them decoded."""
    raws = [bson.encode(c) for c in changes]
    decoded = [bson.decode(r, DECODE) for r in raws]
    mixed: list[Any] = [
        RawBSONDocument(r) if i >= split else d
        for i, (r, d) in enumerate(zip(raws, decoded, strict=True))
    ]
    enc = encoder(fmt, Compression.NONE)
    expected = enc.prepare(decoded, NOW)
    got = enc.prepare(mixed, NOW)
    assert [e.index for e in got.rejected] == [e.index for e in expected.rejected]
    assert got.accepted == expected.accepted
    assert {p: part.rows for p, part in got.partitions.items()} == {
        p: part.rows for p, part in expected.partitions.items()
    }
    assert bodies(enc, got) == bodies(enc, expected)


def test_malformed_raw_events_are_rejected_alone() -> None:
    """A truncated or garbage event is an InvalidEventError at its index; the others stay."""
    good = [bson.encode(change(n)) for n in range(4)]
    batch: list[Any] = [good[0], good[1][:-3], good[2], b"\x05\x00\x00\x00\x00junk", good[3]]
    prepared = encoder(SerializationFormat.JSON, Compression.NONE).prepare(batch, NOW)
    assert prepared.accepted == 3
    assert [(type(e), e.index) for e in prepared.rejected] == [
        (InvalidEventError, 1),
        (InvalidEventError, 3),
    ]
    assert "BSON" in str(prepared.rejected[0])


async def test_write_batch_takes_raw_documents(
    make_config: Any, s3_client: Any, bucket: str
) -> None:
    """Raw and decoded events written through S3 give the same object bytes; the durable
    token of raw events is the raw resume token, which watch(resume_after=) takes."""
    changes = [change(n) for n in range(50)]
    raws = [bson.encode(c) for c in changes]
    base: S3Config = make_config(
        format=SerializationFormat.PARQUET, key_strategy=KeyGenerationStrategy.COLLECTION_BASED
    )
    async with S3Destination(attrs.evolve(base, prefix="raw")) as dest:
        await dest.write_batch([RawBSONDocument(r) for r in raws[:20]])
        await dest.write_batch(raws[20:])
        await dest.flush()
        token = dest.durable_resume_token
    async with S3Destination(attrs.evolve(base, prefix="decoded")) as dest:
        await dest.write_batch([bson.decode(r, DECODE) for r in raws])
    assert isinstance(token, RawBSONDocument)
    assert token.raw == bson.encode(changes[-1]["_id"])
    [raw_key] = list_keys(s3_client, bucket, "raw/")
    [decoded_key] = list_keys(s3_client, bucket, "decoded/")
    # Two write_batch calls, one object: the rows are the same, so are the bytes.
    assert read_body(s3_client, bucket, raw_key) == read_body(s3_client, bucket, decoded_key)


async def test_write_batch_rejects_one_event_given_alone(make_config: Any) -> None:
    """Bytes passed instead of a list of events is a TypeError, not 800 one-byte events."""
    async with S3Destination(make_config()) as dest:
        with pytest.raises(TypeError, match="iterable of events"):
            await dest.write_batch(bson.encode(change(1)))  # type: ignore[arg-type]
        with pytest.raises(RejectedEventsError):
            await dest.write_batch([b"\x00"])


# -- typed columns ---------------------------------------------------------------------------

AS_EVERY_TYPE = {
    f"as_{name}": Column("full_document.v", kind)
    for name, kind in (
        ("string", "string"),
        ("int64", "int64"),
        ("float64", "float64"),
        ("bool", "bool"),
        ("timestamp", "timestamp"),
        ("date", "date"),
        ("decimal", "decimal(20,4)"),
        ("json", "json"),
    )
} | {
    "deep": Column("full_document.d.x.0", "json"),
    "key": Column("document_key._id", "string"),
    "changed": Column("update_description.updatedFields.v", "json"),
}
"""The same values as every type, and paths into nested documents and arrays."""


def typed_encoder(fmt: SerializationFormat) -> Encoder:
    return Encoder(
        serializer_for(fmt, Compression.NONE, AS_EVERY_TYPE),
        codec_for(Compression.NONE),
        KeyGenerationStrategy.HIVE_PARTITIONED,
    )


def check_typed_agree(fmt: SerializationFormat, changes: list[dict[str, Any]]) -> None:
    """Raw and decoded events give the same rows, sizes, mismatch count and bodies."""
    raws = [bson.encode(c) for c in changes]
    enc = typed_encoder(fmt)
    from_raw = enc.prepare([RawBSONDocument(r) for r in raws], NOW)
    from_dicts = enc.prepare([bson.decode(r, DECODE) for r in raws], NOW)
    assert [e.index for e in from_raw.rejected] == [e.index for e in from_dicts.rejected]
    assert from_raw.type_mismatches == from_dicts.type_mismatches
    assert {p: (part.rows, part.cumulative_bytes) for p, part in from_raw.partitions.items()} == {
        p: (part.rows, part.cumulative_bytes) for p, part in from_dicts.partitions.items()
    }
    assert bodies(enc, from_raw) == bodies(enc, from_dicts)


@pytest.mark.parametrize("fmt", list(SerializationFormat))
def test_typed_columns_of_raw_events_equal_those_of_decoded_ones(fmt: SerializationFormat) -> None:
    """Every BSON type a stream carries, read as every column type, from raw and decoded events."""
    changes = [change(n) for n in range(60)]
    for n, c in enumerate(changes):
        document = c.get("fullDocument")
        if document is not None:
            document["v"] = list(document.values())[n % len(document)]
            document["d"] = {"x": [document["lines"], 1]}
    check_typed_agree(fmt, changes)


@pytest.mark.parametrize("fmt", list(SerializationFormat))
@given(
    changes=st.lists(st.tuples(change_events(), values, values), min_size=1, max_size=4).map(
        lambda drawn: [
            c
            | {
                "fullDocument": {"v": v, "d": {"x": [d]}},
                "updateDescription": {"updatedFields": {"v": v}},
            }
            for c, v, d in drawn
        ]
    )
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_typed_columns_of_any_values_agree(
    fmt: SerializationFormat, changes: list[dict[str, Any]]
) -> None:
    """Any value of any BSON type, in events of any shape, converts the same raw and decoded."""
    check_typed_agree(fmt, changes)
