"""Typed columns in every format: types, values, nulls and mismatches, read back independently.

Objects are encoded by the encoder or written through S3 by :class:`S3Destination`,
then read with pyarrow, fastavro, ``csv``, ``json``, DuckDB and Polars.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import bson
import duckdb
import fastavro
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bson import Decimal128, Int64, Timestamp
from bson.raw_bson import RawBSONDocument

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
from rigatoni_s3.formats import avro as avro_format
from rigatoni_s3.formats import serializer_for
from tests.helpers import ALL_FORMATS, DOCUMENT_COLUMNS, Unmappable, list_keys, read_body

JSON, CSV, PARQUET, AVRO = ALL_FORMATS
HIVE = KeyGenerationStrategy.HIVE_PARTITIONED
NOW = datetime(2025, 1, 15, 12, tzinfo=UTC)
T0 = datetime(2025, 1, 15, 10, 0, 0)
"""Naive UTC, as pymongo decodes BSON dates."""

COLUMNS = {
    **DOCUMENT_COLUMNS,
    "city": Column("full_document.address.city", "string"),
    "key": Column("document_key._id", "int64"),
    "changed": Column("update_description.updatedFields.status", "string"),
    "before": Column("full_document_before_change.status", "string"),
}
NAMES = list(COLUMNS)


def change(n: int, operation: str = "insert", **fields: Any) -> dict[str, Any]:
    """A change-stream document as pymongo decodes it."""
    return {
        "_id": {"_data": f"8263{n:012d}"},
        "operationType": operation,
        "clusterTime": Timestamp(int(T0.replace(tzinfo=UTC).timestamp()) + n, n),
        "ns": {"db": "shop", "coll": "users"},
        "documentKey": {"_id": Int64(n)},
        **fields,
    }


GOOD = {
    "status": "paid",
    "age": Int64(41),
    "score": 0.5,
    "vip": True,
    "seen": datetime(2025, 1, 15, 9, 30, 0, 123000),
    "born": datetime(1990, 5, 17),
    "total": Decimal128("1234567890.12"),
    "tags": ["vip", {"since": 2019}],
    "address": {"city": "Kraków"},
}
BAD = {
    "status": 5,
    "age": "forty-one",
    "score": "high",
    "vip": 1,
    "seen": "yesterday",
    "born": 19900517,
    "total": Decimal128("0.005"),
    "tags": None,
    "address": "Kraków",
}
"""Every value but the last two fails its type; a null and a path through a string are
plain nulls."""

EVENTS = [
    change(1, fullDocument={"_id": 1, **GOOD}),
    change(2, fullDocument={"_id": 2, **BAD}),
    change(
        3,
        "update",
        updateDescription={"updatedFields": {"status": "shipped"}, "removedFields": []},
        fullDocumentBeforeChange={"_id": 3, "status": "paid"},
    ),
    change(4, "delete"),
]
MISMATCHES = 7

NULLS = dict.fromkeys(NAMES)
EXPECTED: list[dict[str, Any]] = [
    NULLS
    | {
        "status": "paid",
        "age": 41,
        "score": 0.5,
        "vip": True,
        "seen": datetime(2025, 1, 15, 9, 30, 0, 123000, tzinfo=UTC),
        "born": date(1990, 5, 17),
        "total": Decimal("1234567890.12"),
        "tags": ["vip", {"since": 2019}],
        "city": "Kraków",
        "key": 1,
    },
    NULLS | {"key": 2},
    NULLS | {"key": 3, "changed": "shipped", "before": "paid"},
    NULLS | {"key": 4},
]
"""The typed values of EVENTS, with the json column parsed."""


def encoder(fmt: SerializationFormat, columns: dict[str, Column] = COLUMNS) -> Encoder:
    return Encoder(
        serializer_for(fmt, Compression.NONE, columns),
        codec_for(Compression.NONE),
        KeyGenerationStrategy.FLAT,
    )


def body_of(enc: Encoder, prepared: PreparedEvents) -> bytes:
    (part,) = prepared.partitions.values()
    return enc.encode(part.rows, part.cumulative_bytes[-1]).body


def typed_part(record: dict[str, Any]) -> dict[str, Any]:
    """The typed columns of a record read back, the json column parsed."""
    typed = {name: record[name] for name in NAMES}
    if typed["tags"] is not None:
        typed["tags"] = json.loads(typed["tags"])
    return typed


# -- each format, read by its own library ----------------------------------------------------


def test_parquet_columns_have_arrow_types_statistics_and_exact_values() -> None:
    """After the 13 envelope columns, in order: the declared Arrow types, min/max statistics
    (not for json), and the values, Decimal128 exact and times in UTC."""
    enc = encoder(PARQUET)
    prepared = enc.prepare(EVENTS, NOW)
    assert prepared.type_mismatches == MISMATCHES
    parquet = pq.ParquetFile(io.BytesIO(body_of(enc, prepared)))
    schema = parquet.schema_arrow
    assert schema.names[13:] == NAMES
    assert [schema.field(name).type for name in NAMES] == [
        pa.string(),
        pa.int64(),
        pa.float64(),
        pa.bool_(),
        pa.timestamp("us", tz="UTC"),
        pa.date32(),
        pa.decimal128(12, 2),
        pa.string(),
        pa.string(),
        pa.int64(),
        pa.string(),
        pa.string(),
    ]
    group = parquet.metadata.row_group(0)
    stats = {
        group.column(i).path_in_schema: group.column(i).statistics for i in range(group.num_columns)
    }
    assert stats["age"].has_min_max
    assert (stats["age"].min, stats["age"].max) == (41, 41)
    assert (stats["key"].min, stats["key"].max) == (1, 4)
    assert stats["total"].has_min_max
    assert stats["tags"] is None or not stats["tags"].has_min_max
    assert stats["age"].null_count == 3
    records = parquet.read().to_pylist()
    assert [typed_part(r) for r in records] == EXPECTED
    assert str(records[0]["total"]) == "1234567890.12"
    assert records[0]["seen"].utcoffset() == timedelta(0)


def test_avro_fields_have_logical_types_and_exact_values() -> None:
    """fastavro reads the declared Avro types from the embedded schema, and the values."""
    enc = encoder(AVRO)
    reader = fastavro.reader(io.BytesIO(body_of(enc, enc.prepare(EVENTS, NOW))))
    schema: Any = reader.writer_schema
    fields = {field["name"]: field for field in schema["fields"]}
    assert [field["name"] for field in schema["fields"]][13:] == NAMES
    assert {name: fields[name]["type"][1] for name in ("age", "score", "vip", "born")} == {
        "age": "long",
        "score": "double",
        "vip": "boolean",
        "born": {"type": "int", "logicalType": "date"},
    }
    assert fields["seen"]["type"][1] == {"type": "long", "logicalType": "timestamp-micros"}
    assert fields["total"]["type"][1] == {
        "type": "bytes",
        "logicalType": "decimal",
        "precision": 12,
        "scale": 2,
    }
    assert all(fields[name]["default"] is None for name in NAMES)
    records = [dict(record) for record in reader]  # type: ignore[arg-type]
    assert [typed_part(r) for r in records] == EXPECTED
    assert str(records[0]["total"]) == "1234567890.12"


def test_avro_readers_of_either_schema_read_files_of_the_other() -> None:
    """Adding a typed column evolves the schema: the envelope-only schema reads new files,
    and the schema with the column reads old files as nulls."""
    old_body = body_of(encoder(AVRO, {}), encoder(AVRO, {}).prepare(EVENTS, NOW))
    new = encoder(AVRO)
    new_body = body_of(new, new.prepare(EVENTS, NOW))
    old_records = list(fastavro.reader(io.BytesIO(new_body), reader_schema=avro_format.SCHEMA))
    assert all(len(record) == 13 for record in old_records)  # type: ignore[arg-type]
    with_columns = avro_format.schema_with(COLUMNS)
    records = list(fastavro.reader(io.BytesIO(old_body), reader_schema=with_columns))
    assert [{name: r[name] for name in NAMES} for r in records] == [NULLS] * 4  # type: ignore[call-overload,index]


def test_csv_writes_typed_columns_as_text_after_the_envelope() -> None:
    """The header names the typed columns after extra; values are text, null is empty."""
    enc = encoder(CSV)
    text = body_of(enc, enc.prepare(EVENTS, NOW)).decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0][13:] == NAMES
    assert [dict(zip(NAMES, row[13:], strict=True)) for row in rows[1:]] == [
        {
            "status": "paid",
            "age": "41",
            "score": "0.5",
            "vip": "true",
            "seen": "2025-01-15T09:30:00.123000Z",
            "born": "1990-05-17",
            "total": "1234567890.12",
            "tags": '["vip",{"since":2019}]',
            "city": "Kraków",
            "key": "1",
            "changed": "",
            "before": "",
        },
        dict.fromkeys(NAMES, "") | {"key": "2"},
        dict.fromkeys(NAMES, "") | {"key": "3", "changed": "shipped", "before": "paid"},
        dict.fromkeys(NAMES, "") | {"key": "4"},
    ]


def test_json_lines_adds_typed_keys_after_extra() -> None:
    """Each line gains the typed columns as keys after extra, valued in the one JSON mapping."""
    enc = encoder(JSON)
    lines = body_of(enc, enc.prepare(EVENTS, NOW)).decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert list(records[0])[12:] == ["extra", *NAMES]
    assert {name: records[0][name] for name in NAMES} == {
        "status": "paid",
        "age": 41,
        "score": 0.5,
        "vip": True,
        "seen": "2025-01-15T09:30:00.123000Z",
        "born": "1990-05-17",
        "total": "1234567890.12",
        "tags": ["vip", {"since": 2019}],
        "city": "Kraków",
        "key": 1,
        "changed": None,
        "before": None,
    }
    assert [{name: r[name] for name in NAMES} for r in records[1:]] == EXPECTED[1:]


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_non_finite_doubles_and_exact_decimals_in_every_format(fmt: SerializationFormat) -> None:
    """NaN and infinities stay doubles; a decimal keeps its declared scale."""
    columns = {
        "score": Column("full_document.score", "float64"),
        "total": Column("full_document.total", "decimal(38,10)"),
    }
    documents = [
        {"score": math.nan, "total": Decimal128("-0.1")},
        {"score": math.inf, "total": Decimal128("1234567890123456789012345678.9")},
        {"score": -math.inf, "total": 3},
    ]
    enc = encoder(fmt, columns)
    events = [change(n, fullDocument=doc) for n, doc in enumerate(documents)]
    body = body_of(enc, enc.prepare(events, NOW))
    totals = ["-0.1000000000", "1234567890123456789012345678.9000000000", "3.0000000000"]
    if fmt is PARQUET:
        table = pq.read_table(io.BytesIO(body))
        scores, decimals = table["score"].to_pylist(), table["total"].to_pylist()
    elif fmt is AVRO:
        records: list[Any] = list(fastavro.reader(io.BytesIO(body)))
        scores, decimals = [r["score"] for r in records], [r["total"] for r in records]
    elif fmt is CSV:
        rows = list(csv.DictReader(io.StringIO(body.decode(), newline="")))
        assert [row["score"] for row in rows] == ["NaN", "Infinity", "-Infinity"]
        assert [row["total"] for row in rows] == totals
        return
    else:
        lines = [json.loads(line) for line in body.splitlines()]
        assert [line["score"] for line in lines] == [
            {"$numberDouble": "NaN"},
            {"$numberDouble": "Infinity"},
            {"$numberDouble": "-Infinity"},
        ]
        assert [line["total"] for line in lines] == totals
        return
    assert math.isnan(scores[0])
    assert scores[1:] == [math.inf, -math.inf]
    assert [str(total) for total in decimals] == totals


# -- nulls and mismatches --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_mismatches_are_counted_and_logged_once_per_column(
    fmt: SerializationFormat, caplog: pytest.LogCaptureFixture
) -> None:
    """Each value that cannot take its type is null and counted; the first of each column is
    logged with its path and type, never the value, and no event is rejected."""
    enc = encoder(fmt)
    with caplog.at_level(logging.WARNING, logger="rigatoni_s3"):
        first = enc.prepare(EVENTS, NOW)
        again = enc.prepare([EVENTS[1], EVENTS[1]], NOW)
    assert (first.accepted, first.rejected, first.type_mismatches) == (4, [], MISMATCHES)
    assert (again.accepted, again.type_mismatches) == (2, 2 * MISMATCHES)
    warnings = [r for r in caplog.records if r.name == "rigatoni_s3._projection"]
    assert sorted(r.column for r in warnings) == sorted(  # type: ignore[attr-defined]
        ["status", "age", "score", "vip", "seen", "born", "total"]
    )
    age = next(r for r in warnings if r.column == "age")  # type: ignore[attr-defined]
    assert "full_document.age" in age.getMessage()
    assert "int64" in age.getMessage()
    assert "str" in age.getMessage()
    assert all(
        "forty" not in r.getMessage() and "yesterday" not in r.getMessage() for r in warnings
    )


def test_the_document_column_still_holds_a_mismatched_value() -> None:
    """Nothing is lost: the full_document column keeps the value its typed column could not."""
    enc = encoder(PARQUET)
    records = pq.read_table(io.BytesIO(body_of(enc, enc.prepare(EVENTS, NOW)))).to_pylist()
    assert records[1]["age"] is None
    assert json.loads(records[1]["full_document"])["age"] == "forty-one"


def test_only_accepted_events_count_mismatches() -> None:
    """A rejected event's mismatches are not counted: its row is never written."""
    unwritable = change(5, fullDocument={"age": "old", "blob": Unmappable()})
    prepared = encoder(PARQUET).prepare([EVENTS[1], unwritable], NOW)
    assert [e.index for e in prepared.rejected] == [1]
    assert prepared.type_mismatches == MISMATCHES


@pytest.mark.parametrize("fmt", [JSON, CSV])
def test_row_sizes_count_the_typed_values(fmt: SerializationFormat) -> None:
    """The size of a row with typed columns is close to what it takes in the object."""
    enc = encoder(fmt)
    events = [change(n, fullDocument={"_id": n, **GOOD, "status": 'a "b", c'}) for n in range(200)]
    prepared = enc.prepare(events, NOW)
    (part,) = prepared.partitions.values()
    actual = len(enc.encode(part.rows, 0).body)
    assert 0.97 < part.cumulative_bytes[-1] / actual <= 1.0, (part.cumulative_bytes[-1], actual)


# -- through S3, read by DuckDB, Polars, pyarrow and fastavro --------------------------------


async def write(config: S3Config, events: Sequence[Any]) -> int:
    """Write ``events``; the destination's mismatch count."""
    async with S3Destination(config) as dest:
        await dest.write_batch(events)
        await dest.flush()
        return dest.stats().type_mismatches


def download(client: Any, bucket: str, prefix: str, target: Path) -> Path:
    for key in list_keys(client, bucket, prefix):
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(read_body(client, bucket, key))
    return target / prefix


DUCKDB_HIVE = "hive_partitioning = true, hive_types = {'collection': VARCHAR, 'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER}"
DUCKDB_TYPES = {
    "status": "VARCHAR",
    "age": "BIGINT",
    "score": "DOUBLE",
    "vip": "BOOLEAN",
    "seen": "TIMESTAMP WITH TIME ZONE",
    "born": "DATE",
    "total": "DECIMAL(12,2)",
    "tags": "VARCHAR",
    "city": "VARCHAR",
    "key": "BIGINT",
    "changed": "VARCHAR",
    "before": "VARCHAR",
}
POLARS_TYPES = {
    "status": pl.String,
    "age": pl.Int64,
    "score": pl.Float64,
    "vip": pl.Boolean,
    "seen": pl.Datetime("us", "UTC"),
    "born": pl.Date,
    "total": pl.Decimal(12, 2),
    "tags": pl.String,
    "city": pl.String,
    "key": pl.Int64,
    "changed": pl.String,
    "before": pl.String,
}


def duckdb_rows(source: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Column types and typed rows (by key) of a DuckDB source, times read in UTC."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        types = {
            row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        }
        cursor = con.execute(f"SELECT {', '.join(NAMES)} FROM {source} ORDER BY key")
        rows = [dict(zip(NAMES, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()
    for row in rows:
        if row["tags"] is not None:
            row["tags"] = json.loads(row["tags"])
    return types, rows


async def test_parquet_reads_back_typed_in_pyarrow_duckdb_and_polars(
    make_config: Callable[..., S3Config], s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    """Parquet objects written to S3 hold the declared types and values for all three readers;
    stats() counts the mismatches."""
    config = make_config(
        prefix="cdc", format=PARQUET, compression="zstd", key_strategy=HIVE, columns=COLUMNS
    )
    assert await write(config, EVENTS) == MISMATCHES
    [key] = list_keys(s3_client, bucket, "cdc/")
    table = pq.read_table(io.BytesIO(read_body(s3_client, bucket, key)))
    assert [typed_part(r) for r in table.to_pylist()] == EXPECTED

    root = download(s3_client, bucket, "cdc/", tmp_path)
    types, rows = duckdb_rows(f"read_parquet('{root}/**/*.parquet', {DUCKDB_HIVE})")
    assert {name: types[name] for name in NAMES} == DUCKDB_TYPES
    assert rows == EXPECTED

    frame = pl.read_parquet(next(root.rglob("*.parquet")))
    assert {name: frame.schema[name] for name in NAMES} == POLARS_TYPES
    assert [typed_part(r) for r in frame.sort("key").to_dicts()] == EXPECTED


async def test_avro_reads_back_typed_in_fastavro_and_polars(
    make_config: Callable[..., S3Config], s3_client: Any, bucket: str
) -> None:
    """Avro objects written to S3 hold the declared logical types for fastavro and Polars."""
    config = make_config(prefix="cdc", format=AVRO, compression="gzip", columns=COLUMNS)
    assert await write(config, EVENTS) == MISMATCHES
    [key] = list_keys(s3_client, bucket, "cdc/")
    body = read_body(s3_client, bucket, key)
    records = [dict(r) for r in fastavro.reader(io.BytesIO(body))]  # type: ignore[arg-type]
    assert [typed_part(r) for r in records] == EXPECTED
    frame = pl.read_avro(io.BytesIO(body))
    assert {name: frame.schema[name] for name in NAMES} == POLARS_TYPES
    assert [typed_part(r) for r in frame.to_dicts()] == EXPECTED


async def test_csv_reads_back_typed_in_duckdb_and_polars(
    make_config: Callable[..., S3Config], s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    """CSV text of every type parses back to the same values when a reader is given the types."""
    config = make_config(
        prefix="cdc", format=CSV, compression="gzip", key_strategy=HIVE, columns=COLUMNS
    )
    assert await write(config, EVENTS) == MISMATCHES
    root = download(s3_client, bucket, "cdc/", tmp_path)
    [path] = root.rglob("*.csv.gz")
    path.rename(path.with_suffix(""))  # downloaded decompressed
    types = ", ".join(f"'{name}': '{kind}'" for name, kind in DUCKDB_TYPES.items())
    source = (
        f"read_csv('{root}/**/*.csv', header = true, quote = '\"', escape = '\"', "
        f"types = {{{types}}}, {DUCKDB_HIVE})"
    )
    duck_types, rows = duckdb_rows(source)
    assert {name: duck_types[name] for name in NAMES} == DUCKDB_TYPES
    assert rows == EXPECTED

    frame = pl.read_csv(path.with_suffix(""), infer_schema=False).with_columns(
        pl.col("age", "key").cast(pl.Int64),
        pl.col("score").cast(pl.Float64),
        (pl.col("vip") == "true").alias("vip"),
        pl.col("seen").str.to_datetime(time_unit="us", time_zone="UTC"),
        pl.col("born").str.to_date(),
        pl.col("total").cast(pl.Decimal(12, 2)),
    )
    assert [typed_part(r) for r in frame.sort("key").to_dicts()] == EXPECTED


async def test_raw_bson_through_s3_counts_the_same_mismatches(
    make_config: Callable[..., S3Config], s3_client: Any, bucket: str
) -> None:
    """Raw documents write the same object and count the same mismatches as decoded ones."""
    config = make_config(format=PARQUET, columns=COLUMNS, key_strategy="collection_based")
    raw = [RawBSONDocument(bson.encode(event)) for event in EVENTS]
    assert await write(attrs.evolve(config, prefix="raw"), raw) == MISMATCHES
    assert await write(attrs.evolve(config, prefix="dict"), EVENTS) == MISMATCHES
    [raw_key] = list_keys(s3_client, bucket, "raw/")
    [dict_key] = list_keys(s3_client, bucket, "dict/")
    assert read_body(s3_client, bucket, raw_key) == read_body(s3_client, bucket, dict_key)


def profiled(query: str, directory: Path) -> tuple[list[Any], int]:
    """The rows of ``query`` and the bytes DuckDB read from files for it (its profile's
    ``io.total_bytes_read``), on a fresh connection so that nothing is cached."""
    output = directory / "profile.json"
    connection = duckdb.connect()
    try:
        connection.execute("PRAGMA enable_profiling = 'json'")
        connection.execute(f"PRAGMA profiling_output = '{output}'")
        rows = connection.execute(query).fetchall()
    finally:
        connection.close()
    profile = json.loads(output.read_text())
    return rows, int(profile["io"]["total_bytes_read"])


async def test_duckdb_filter_on_a_typed_column_reads_fewer_bytes(
    make_config: Callable[..., S3Config], s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    """Over a Hive prefix, a filter on a typed column returns the rows the same filter on the
    JSON document returns, and DuckDB reads fewer bytes of the files for it."""
    statuses = ("paid", "shipped", "refunded", "cancelled")
    orders = [
        change(
            n,
            fullDocument={
                "_id": n,
                "status": statuses[n % 4],
                "total": Decimal128(f"{n}.50"),
                "note": hashlib.sha256(b"%d" % n).hexdigest() * 4,  # compresses poorly
                "placed_at": T0 + timedelta(seconds=n),
            },
        )
        | {"clusterTime": Timestamp(int(T0.replace(tzinfo=UTC).timestamp()) + 9 * n, 1)}
        for n in range(1200)
    ]
    columns = {
        "status": Column("full_document.status", "string"),
        "total": Column("full_document.total", "decimal(12,2)"),
    }
    config = make_config(
        prefix="cdc", format=PARQUET, compression="zstd", key_strategy=HIVE, columns=columns
    )
    assert await write(config, orders) == 0
    root = download(s3_client, bucket, "cdc/", tmp_path / "data")
    assert len(list(root.rglob("*.parquet"))) == 3  # three hours of orders
    source = f"read_parquet('{root}/**/*.parquet', {DUCKDB_HIVE})"
    typed_rows, typed_bytes = profiled(
        f"SELECT sum(total), count(*) FROM {source} WHERE status = 'refunded'", tmp_path
    )
    json_rows, json_bytes = profiled(
        "SELECT sum(CAST(full_document ->> '$.total' AS DECIMAL(12,2))), count(*) "
        f"FROM {source} WHERE full_document ->> '$.status' = 'refunded'",
        tmp_path,
    )
    refunded = [n for n in range(1200) if n % 4 == 2]
    assert typed_rows == json_rows == [(sum(Decimal(f"{n}.50") for n in refunded), len(refunded))]
    assert 0 < typed_bytes < json_bytes
