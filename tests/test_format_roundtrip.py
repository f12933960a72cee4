"""Round trips through a real S3 server: each format, codec and key layout, read back independently.

Objects are written by :class:`S3Destination` and read with the formats' own readers
(``csv``, ``json``, ``pyarrow``, ``fastavro``), by ``pyarrow.dataset`` over S3 with Hive
partition discovery, by DuckDB and by Polars.
"""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import fastavro
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rigatoni_s3 import (
    Compression,
    KeyGenerationStrategy,
    S3Config,
    S3Destination,
    SerializationFormat,
)
from rigatoni_s3.errors import RejectedEventsError, SerializationError
from rigatoni_s3.testing import S3Endpoint
from tests.helpers import (
    BSON_DOCUMENT,
    BSON_EXPECTED,
    JSON_COLUMNS,
    expected_json,
    list_keys,
    read_body,
    read_records,
)

CSV, PARQUET, AVRO = SerializationFormat.CSV, SerializationFormat.PARQUET, SerializationFormat.AVRO
HIVE = KeyGenerationStrategy.HIVE_PARTITIONED
T0 = datetime(2025, 1, 15, 10, 0, 0, tzinfo=UTC)
WEIRD = "orders/eu=1%"
"""A collection name that must be escaped in keys: '/', '=' and '%'."""

PARTITIONING = ds.partitioning(
    pa.schema(
        [
            ("collection", pa.string()),
            ("year", pa.int16()),
            ("month", pa.int8()),
            ("day", pa.int8()),
            ("hour", pa.int8()),
        ]
    ),
    flavor="hive",
)
"""Partition types stated, not inferred: a collection named '2024' must stay a string."""

CSV_TYPES = {name: pa.string() for name in ("operation", "database", "collection")} | {
    "cluster_time": pa.timestamp("us", tz="UTC"),
    "wall_time": pa.timestamp("us", tz="UTC"),
    "cluster_time_increment": pa.int64(),
    **dict.fromkeys(JSON_COLUMNS, pa.string()),
}
"""Column types for pyarrow's CSV reader: inferring them per file fails on all-empty columns."""

DUCKDB_HIVE_TYPES = (
    "{'collection': VARCHAR, 'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER}"
)


# -- the events ----------------------------------------------------------------------------


def _raw(
    n: int,
    operation: str,
    collection: str | None,
    when: datetime,
    *,
    full: Any = None,
    update: Any = None,
    **more: Any,
) -> dict[str, Any]:
    ns: dict[str, Any] = {"db": "shop"}
    if collection is not None:
        ns["coll"] = collection
    doc: dict[str, Any] = {
        "_id": {"_data": f"8263{n:012d}"},
        "operationType": operation,
        "ns": ns,
        "clusterTime": {"$timestamp": {"t": int(when.timestamp()), "i": n}},
    }
    if operation not in ("dropDatabase", "invalidate"):
        doc["documentKey"] = {"_id": n}
    if full is not None:
        doc["fullDocument"] = full
    if update is not None:
        doc["updateDescription"] = update
    return doc | more


def change_events() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(raw change-stream document, the record it must read back as) for a varied batch."""
    tricky = 'comma, "quote"\r\nnewline ユーザー 😀 \x00 \\'
    plain = [
        _raw(1, "insert", "users", T0, full={"_id": 1, "name": tricky, "big": 2**64 + 1}),
        _raw(2, "insert", "users", T0 + timedelta(minutes=5), full={"_id": 2, "tags": [], "e": {}}),
        _raw(
            3,
            "update",
            "users",
            T0 + timedelta(minutes=10),
            update={
                "updatedFields": {"name": "renamed", "tags.0": "x"},
                "removedFields": ["legacy", "address.zip"],
                "truncatedArrays": [{"field": "history", "newSize": 2}],
            },
        ),
        _raw(4, "delete", "users", T0 + timedelta(hours=1, minutes=1)),
        _raw(5, "replace", WEIRD, T0 + timedelta(minutes=30), full={"_id": 5, "f": 1.5}),
        _raw(6, "insert", WEIRD, T0 + timedelta(hours=1, minutes=30), full={"nan": float("nan")}),
        _raw(7, "dropDatabase", None, T0 + timedelta(minutes=59, seconds=59)),
    ]
    newer = [
        _raw(
            11,
            "update",
            "users",
            T0 + timedelta(minutes=20),
            update={"updatedFields": {"name": "new"}, "removedFields": []},
            fullDocumentBeforeChange={"_id": 11, "name": "old"},
            wallTime=T0 + timedelta(minutes=20, milliseconds=250),
            txnNumber=4,
            lsid={"id": "6c7a0f4e-session", "uid": "c2hh"},
        ),
        _raw(
            12,
            "rename",
            "users",
            T0 + timedelta(minutes=40),
            wallTime=T0 + timedelta(minutes=40),
            to={"db": "shop", "coll": "archive"},
            operationDescription={"to": {"db": "shop", "coll": "archive"}, "dropTarget": None},
            newServerField=[1, None, {"x": "y"}],
        ),
    ]
    bson = _raw(8, "insert", "users", T0 + timedelta(hours=1, minutes=2), full=BSON_DOCUMENT)
    pairs = [(raw, _expected(raw)) for raw in plain]
    pairs.append((bson, _expected(bson) | {"full_document": BSON_EXPECTED}))
    return pairs + [(raw, _expected(raw)) for raw in newer]


def _expected(raw: dict[str, Any]) -> dict[str, Any]:
    seconds = raw["clusterTime"]["$timestamp"]["t"]
    return {
        "operation": raw["operationType"],
        "database": raw["ns"].get("db"),
        "collection": raw["ns"].get("coll"),
        "cluster_time": datetime.fromtimestamp(seconds, UTC),
        "document_key": expected_json(raw.get("documentKey")),
        "full_document": expected_json(raw.get("fullDocument")),
        "update_description": expected_json(raw.get("updateDescription")),
        "resume_token": raw["_id"],
        "full_document_before_change": expected_json(raw.get("fullDocumentBeforeChange")),
        "wall_time": raw.get("wallTime"),
        "cluster_time_increment": raw["clusterTime"]["$timestamp"]["i"],
        "transaction": expected_json(
            {name: raw[name] for name in ("txnNumber", "lsid") if name in raw} or None
        ),
        "extra": expected_json({name: raw[name] for name in raw if name not in KNOWN} or None),
    }


KNOWN = {
    "_id",
    "operationType",
    "ns",
    "clusterTime",
    "documentKey",
    "fullDocument",
    "updateDescription",
    "fullDocumentBeforeChange",
    "wallTime",
    "txnNumber",
    "lsid",
}
"""Top-level fields the envelope has a column for."""


def _token(record: dict[str, Any]) -> str:
    token: str = record["resume_token"]["_data"]
    return token


async def _write(config: S3Config, events: list[dict[str, Any]]) -> None:
    async with S3Destination(config) as dest:
        await dest.write_batch(events)


def _all_records(client: Any, bucket: str, prefix: str) -> dict[str, list[dict[str, Any]]]:
    return {key: read_records(client, bucket, key) for key in list_keys(client, bucket, prefix)}


def _check_objects(
    client: Any,
    bucket: str,
    fmt: SerializationFormat,
    compression: Compression,
    expected: list[dict[str, Any]],
) -> dict[str, list[dict[str, Any]]]:
    """Every object has the right name and headers, and together they hold ``expected``."""
    objects = _all_records(client, bucket, "cdc/")
    outer = {Compression.NONE: "", Compression.GZIP: ".gz", Compression.ZSTD: ".zst"}[compression]
    suffix = "." + fmt.value + ("" if fmt in (PARQUET, AVRO) else outer)
    content_type = {
        CSV: "text/csv",
        PARQUET: "application/vnd.apache.parquet",
        AVRO: "application/avro",
    }[fmt]
    encoding = None if fmt in (PARQUET, AVRO) else {"": None, ".gz": "gzip", ".zst": "zstd"}[outer]
    for key, records in objects.items():
        assert key.endswith(suffix), key
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ContentType"] == content_type
        assert head.get("ContentEncoding") == encoding
        assert records == sorted(records, key=_token), "events keep their order within an object"
        assert len({r["collection"] for r in records}) == 1, "one collection per object"
    found = sorted((r for records in objects.values() for r in records), key=_token)
    assert found == sorted(expected, key=_token)
    return objects


# -- every format x codec, and every layout --------------------------------------------------


@pytest.mark.parametrize("compression", list(Compression))
@pytest.mark.parametrize("fmt", [CSV, PARQUET, AVRO])
async def test_every_format_and_codec_round_trips(
    make_config: Callable[..., S3Config],
    s3_client: Any,
    bucket: str,
    fmt: SerializationFormat,
    compression: Compression,
) -> None:
    """Each format and codec writes hive-partitioned objects that read back exactly."""
    pairs = change_events()
    config = make_config(prefix="cdc", format=fmt, compression=compression, key_strategy=HIVE)
    await _write(config, [raw for raw, _ in pairs])
    objects = _check_objects(s3_client, bucket, fmt, compression, [e for _, e in pairs])
    for key, records in objects.items():
        start = records[0]["cluster_time"].replace(minute=0, second=0)
        assert f"/year={start:%Y}/month={start:%m}/day={start:%d}/hour={start:%H}/" in key
        assert all(r["cluster_time"].replace(minute=0, second=0) == start for r in records)


LAYOUTS = {
    KeyGenerationStrategy.HIVE_PARTITIONED: r"cdc/collection=[^/]+/year=\d{4}/month=\d\d/day=\d\d/hour=\d\d/[^/]+",
    KeyGenerationStrategy.DATE_HOUR_PARTITIONED: r"cdc/[^/]+/\d{4}/\d\d/\d\d/\d\d/[^/]+",
    KeyGenerationStrategy.DATE_PARTITIONED: r"cdc/[^/]+/\d{4}/\d\d/\d\d/[^/]+",
    KeyGenerationStrategy.COLLECTION_BASED: r"cdc/[^/]+/[^/]+",
    KeyGenerationStrategy.FLAT: r"cdc/[^/]+_[^/]+",
}


@pytest.mark.parametrize("strategy", list(KeyGenerationStrategy))
@pytest.mark.parametrize(
    ("fmt", "compression"), [(PARQUET, Compression.ZSTD), (CSV, Compression.GZIP)]
)
async def test_every_key_layout_round_trips(
    make_config: Callable[..., S3Config],
    s3_client: Any,
    bucket: str,
    fmt: SerializationFormat,
    compression: Compression,
    strategy: KeyGenerationStrategy,
) -> None:
    """Every key strategy lays objects out as documented and loses no event."""
    pairs = change_events()
    config = make_config(prefix="cdc", format=fmt, compression=compression, key_strategy=strategy)
    await _write(config, [raw for raw, _ in pairs])
    objects = _check_objects(s3_client, bucket, fmt, compression, [e for _, e in pairs])
    for key in objects:
        assert re.fullmatch(LAYOUTS[strategy], key), key


# -- independent readers --------------------------------------------------------------------


def _s3fs(endpoint: S3Endpoint) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        access_key=endpoint.access_key_id,
        secret_key=endpoint.secret_access_key,
        endpoint_override=endpoint.url,
        region=endpoint.region,
    )


@pytest.mark.parametrize(
    ("fmt", "compression"), [(PARQUET, Compression.GZIP), (CSV, Compression.NONE)]
)
async def test_pyarrow_dataset_discovers_hive_partitions_over_s3(
    make_config: Callable[..., S3Config],
    s3_endpoint: S3Endpoint,
    bucket: str,
    fmt: SerializationFormat,
    compression: Compression,
) -> None:
    """pyarrow.dataset over the S3 prefix finds collection/year/month/day/hour and prunes on them."""
    pairs = change_events()
    config = make_config(prefix="cdc", format=fmt, compression=compression, key_strategy=HIVE)
    await _write(config, [raw for raw, _ in pairs])
    file_format: Any = (
        "parquet"
        if fmt is PARQUET
        else ds.CsvFileFormat(
            convert_options=pacsv.ConvertOptions(column_types=CSV_TYPES, strings_can_be_null=True)
        )
    )
    dataset = ds.dataset(
        f"{bucket}/cdc",
        filesystem=_s3fs(s3_endpoint),
        format=file_format,
        partitioning=PARTITIONING,
    )
    for name in ("collection", "year", "month", "day", "hour"):
        assert name in dataset.schema.names
    table = dataset.to_table()
    assert table.num_rows == len(pairs)
    assert sorted(table.column("collection").to_pylist(), key=str) == sorted(
        (e["collection"] for _, e in pairs), key=str
    ), "the partition value equals the collection written in the file, escaping undone"

    wanted = (ds.field("collection") == "users") & (ds.field("hour") == 10)
    fragments = list(dataset.get_fragments(filter=wanted))
    assert fragments
    assert all("/collection=users/" in f.path and "/hour=10/" in f.path for f in fragments)
    assert len(fragments) < len(list(dataset.get_fragments()))
    chosen = dataset.to_table(filter=wanted)
    expected = [e for _, e in pairs if e["collection"] == "users" and e["cluster_time"].hour == 10]
    assert sorted(chosen.column("operation").to_pylist()) == sorted(
        e["operation"] for e in expected
    )
    assert set(chosen.column("year").to_pylist()) == {2025}

    weird = dataset.to_table(filter=ds.field("collection") == WEIRD)
    assert weird.num_rows == sum(e["collection"] == WEIRD for _, e in pairs)
    dropped = dataset.to_table(filter=ds.field("collection").is_null())
    assert dropped.column("operation").to_pylist() == ["dropDatabase"]


def _download(client: Any, bucket: str, prefix: str, target: Path) -> Path:
    for key in list_keys(client, bucket, prefix):
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    return target / prefix


@pytest.mark.parametrize(
    ("fmt", "compression", "reader"),
    [
        (PARQUET, Compression.ZSTD, "read_parquet('{root}/**/*.parquet'"),
        (
            CSV,
            Compression.GZIP,
            "read_csv('{root}/**/*.csv.gz', header = true, quote = '\"', escape = '\"'",
        ),
        (
            CSV,
            Compression.ZSTD,
            "read_csv('{root}/**/*.csv.zst', header = true, quote = '\"', escape = '\"'",
        ),
    ],
)
async def test_duckdb_reads_the_files_with_hive_partitions(
    make_config: Callable[..., S3Config],
    s3_client: Any,
    bucket: str,
    tmp_path: Path,
    fmt: SerializationFormat,
    compression: Compression,
    reader: str,
) -> None:
    """The README's DuckDB query reads downloaded objects with partitions and JSON documents."""
    pairs = change_events()
    config = make_config(prefix="cdc", format=fmt, compression=compression, key_strategy=HIVE)
    await _write(config, [raw for raw, _ in pairs])
    root = _download(s3_client, bucket, "cdc/", tmp_path)
    source = (
        reader.format(root=root) + f", hive_partitioning = true, hive_types = {DUCKDB_HIVE_TYPES})"
    )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = con.execute(
        f"""
        SELECT operation, collection, year, month, day, hour, cluster_time,
               full_document ->> '$.name' AS name,
               CAST(document_key ->> '$._id' AS BIGINT) AS id
        FROM {source}
        WHERE collection = 'users' AND year = 2025 AND month = 1 AND day = 15 AND hour = 10
        ORDER BY id
        """
    ).fetchall()
    expected = sorted(
        (e for _, e in pairs if e["collection"] == "users" and e["cluster_time"].hour == 10),
        key=lambda e: e["document_key"]["_id"],
    )
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        (e["operation"], "users", 2025, 1, 15, 10) for e in expected
    ]
    assert [r[6] for r in rows] == [e["cluster_time"] for e in expected]
    assert [r[7] for r in rows] == [(e["full_document"] or {}).get("name") for e in expected]
    assert [r[8] for r in rows] == [e["document_key"]["_id"] for e in expected]
    types = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    assert types["cluster_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["collection"] == "VARCHAR"
    total = con.execute(f"SELECT count(*), count(collection) FROM {source}").fetchone()
    assert total == (len(pairs), len(pairs) - 1)


@pytest.mark.parametrize("fmt", [PARQUET, CSV, AVRO])
async def test_polars_reads_every_format(
    make_config: Callable[..., S3Config],
    s3_client: Any,
    bucket: str,
    tmp_path: Path,
    fmt: SerializationFormat,
) -> None:
    """Polars reads the downloaded objects of each format back to the same values."""
    pairs = change_events()
    compression = Compression.GZIP  # Polars reads deflate Avro, not zstandard
    config = make_config(prefix="cdc", format=fmt, compression=compression, key_strategy=HIVE)
    await _write(config, [raw for raw, _ in pairs])
    frames = []
    for key in list_keys(s3_client, bucket, "cdc/"):
        body = read_body(s3_client, bucket, key)
        if fmt is PARQUET:
            frames.append(pl.read_parquet(io.BytesIO(body)))
        elif fmt is CSV:
            frames.append(pl.read_csv(io.BytesIO(body), infer_schema=False))
        else:
            frames.append(pl.read_avro(io.BytesIO(body)))
    frame = pl.concat(frames).sort("resume_token")
    expected = sorted((e for _, e in pairs), key=_token)
    assert frame.columns == list(expected[0])
    assert frame["operation"].to_list() == [e["operation"] for e in expected]
    assert frame["collection"].to_list() == [e["collection"] for e in expected]
    for column in ("cluster_time", "wall_time"):
        times = frame[column].to_list()
        if fmt is CSV:
            times = [None if t is None else datetime.fromisoformat(t) for t in times]
        assert times == [e[column] for e in expected]
    increments = frame["cluster_time_increment"].to_list()
    if fmt is CSV:
        increments = [int(i) for i in increments]
    assert increments == [e["cluster_time_increment"] for e in expected]
    import json

    for column in JSON_COLUMNS:
        values = [None if v is None else json.loads(v) for v in frame[column].to_list()]
        assert values == [e[column] for e in expected], column


@pytest.mark.parametrize("compression", list(Compression))
async def test_fastavro_reads_the_embedded_schema(
    make_config: Callable[..., S3Config], s3_client: Any, bucket: str, compression: Compression
) -> None:
    """An Avro object is self-describing: fastavro needs no schema to read it back."""
    pairs = change_events()
    config = make_config(prefix="cdc", format=AVRO, compression=compression, key_strategy=HIVE)
    await _write(config, [raw for raw, _ in pairs])
    codecs = set()
    for key in list_keys(s3_client, bucket, "cdc/"):
        reader = fastavro.reader(
            io.BytesIO(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
        )
        codecs.add(reader.codec)
        for record in reader:
            assert isinstance(record, dict)
            assert record["cluster_time"] is None or record["cluster_time"].tzinfo is not None
    assert codecs == {
        {Compression.NONE: "null", Compression.GZIP: "deflate", Compression.ZSTD: "zstandard"}[
            compression
        ]
    }


async def test_parquet_file_metadata_from_s3(
    make_config: Callable[..., S3Config], s3_client: Any, bucket: str
) -> None:
    """pyarrow.parquet sees the UTC timestamp type and the zstd codec in an uploaded object."""
    pairs = change_events()
    config = make_config(
        prefix="cdc", format=PARQUET, compression=Compression.ZSTD, key_strategy=HIVE
    )
    await _write(config, [raw for raw, _ in pairs])
    key = list_keys(s3_client, bucket, "cdc/")[0]
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    parquet = pq.ParquetFile(io.BytesIO(body))
    assert parquet.schema_arrow.field("cluster_time").type == pa.timestamp("us", tz="UTC")
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"


# -- bad events -----------------------------------------------------------------------------


class NoMapping:
    """A value that no format can hold."""


@pytest.mark.parametrize("fmt", [CSV, PARQUET, AVRO])
async def test_unwritable_event_is_rejected_alone(
    make_config: Callable[..., S3Config], s3_client: Any, bucket: str, fmt: SerializationFormat
) -> None:
    """A value with no mapping rejects its event with SerializationError; the others are written."""
    pairs = change_events()[:3]
    bad = _raw(99, "insert", "users", T0, full={"_id": 99, "thing": NoMapping()})
    surrogate = _raw(98, "insert", "users\udc80", T0)
    config = make_config(prefix="cdc", format=fmt, compression=Compression.GZIP, key_strategy=HIVE)
    async with S3Destination(config) as dest:
        with pytest.raises(RejectedEventsError) as caught:
            await dest.write_batch([pairs[0][0], bad, pairs[1][0], surrogate, pairs[2][0]])
    errors = caught.value.errors
    assert caught.value.accepted == 3
    assert [type(e) for e in errors] == [SerializationError, SerializationError]
    assert [(e.index, e.field) for e in errors] == [(1, "full_document.thing"), (3, "collection")]
    assert errors[0].collection == "users"
    assert errors[0].document_key == {"_id": 99}
    found = sorted(
        (
            r
            for k in list_keys(s3_client, bucket, "cdc/")
            for r in read_records(s3_client, bucket, k)
        ),
        key=_token,
    )
    assert found == sorted((e for _, e in pairs), key=_token)


# -- generated documents through S3 --------------------------------------------------------

DOCUMENTS = st.dictionaries(
    st.text(max_size=6),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats()
        | st.text(max_size=12),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=4), children, max_size=3)
        ),
        max_leaves=12,
    ),
    max_size=5,
)


@pytest.mark.parametrize("fmt", [CSV, PARQUET, AVRO])
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(documents=st.lists(DOCUMENTS, min_size=1, max_size=5))
def test_generated_documents_round_trip_through_s3(
    make_config: Callable[..., S3Config],
    s3_client: Any,
    bucket: str,
    fmt: SerializationFormat,
    documents: list[dict[str, Any]],
) -> None:
    """Generated documents written through the destination read back equal, in every format."""
    prefix = f"gen-{uuid.uuid4().hex[:12]}"
    raws = [_raw(n, "insert", "users", T0, full=doc) for n, doc in enumerate(documents)]
    config = make_config(prefix=prefix, format=fmt, compression=Compression.ZSTD, key_strategy=HIVE)
    asyncio.run(_write(config, raws))
    found = [
        r
        for key in list_keys(s3_client, bucket, prefix + "/")
        for r in read_records(s3_client, bucket, key)
    ]
    assert sorted(found, key=_token) == [_expected(raw) for raw in raws]


# -- files of the eight-column envelope beside newer ones -----------------------------------

OLD_SCHEMA = pa.schema(
    [
        pa.field("operation", pa.string(), nullable=False),
        pa.field("database", pa.string()),
        pa.field("collection", pa.string()),
        pa.field("cluster_time", pa.timestamp("us", tz="UTC")),
        *(
            pa.field(name, pa.string())
            for name in ("document_key", "full_document", "update_description", "resume_token")
        ),
    ]
)
"""The Parquet schema written before the last five envelope columns existed."""


def _old_file(client: Any, bucket: str, key: str) -> dict[str, Any]:
    """Upload one Parquet object of the old eight columns; return its record as read back."""
    record = {
        "operation": "insert",
        "database": "shop",
        "collection": "users",
        "cluster_time": T0 + timedelta(minutes=1),
        "document_key": '{"_id":100}',
        "full_document": '{"_id":100,"name":"from before"}',
        "update_description": None,
        "resume_token": '{"_data":"8263000000000100"}',
    }
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([record], schema=OLD_SCHEMA), sink)
    client.put_object(Bucket=bucket, Key=key, Body=sink.getvalue())
    return record


async def test_old_and_new_parquet_files_read_together(
    make_config: Callable[..., S3Config],
    s3_client: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    """A prefix holding eight-column and thirteen-column files reads as one table: the old
    rows hold null in the new columns (pyarrow dataset with the new schema, DuckDB
    union_by_name)."""
    from rigatoni_s3.formats.parquet import SCHEMA

    pairs = change_events()
    config = make_config(
        prefix="cdc", format=PARQUET, compression=Compression.ZSTD, key_strategy=HIVE
    )
    await _write(config, [raw for raw, _ in pairs])
    old_key = "cdc/collection=users/year=2025/month=01/day=15/hour=10/old.parquet"
    old = _old_file(s3_client, bucket, old_key)
    new_columns = [name for name in SCHEMA.names if name not in OLD_SCHEMA.names]
    assert new_columns == [
        "full_document_before_change",
        "wall_time",
        "cluster_time_increment",
        "transaction",
        "extra",
    ]

    root = _download(s3_client, bucket, "cdc/", tmp_path)
    dataset = ds.dataset(root, format="parquet", schema=SCHEMA)
    table = dataset.to_table().sort_by("resume_token")
    assert table.num_rows == len(pairs) + 1
    rows = {row["resume_token"]: row for row in table.to_pylist()}
    was = rows[old["resume_token"]]
    assert {name: was[name] for name in OLD_SCHEMA.names} == old
    assert all(was[name] is None for name in new_columns)
    renamed = next(e for _, e in pairs if e["operation"] == "rename")
    again = next(r for r in rows.values() if r["operation"] == "rename")
    assert again["wall_time"] == renamed["wall_time"]
    assert again["cluster_time_increment"] == renamed["cluster_time_increment"]

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    found = con.execute(
        f"""
        SELECT resume_token ->> '$._data' AS token, wall_time, cluster_time_increment,
               transaction ->> '$.txnNumber' AS txn, extra ->> '$.to.coll' AS renamed_to,
               full_document_before_change ->> '$.name' AS before
        FROM read_parquet('{root}/**/*.parquet', union_by_name = true)
        ORDER BY token
        """
    ).fetchall()
    expected = sorted(
        [e for _, e in pairs] + [{"resume_token": {"_data": "8263000000000100"}}],
        key=_token,
    )
    assert [
        (token, wall, increment, txn, to, before)
        for token, wall, increment, txn, to, before in found
    ] == [
        (
            e["resume_token"]["_data"],
            e.get("wall_time"),
            e.get("cluster_time_increment"),
            None if not e.get("transaction") else str(e["transaction"]["txnNumber"]),
            ((e.get("extra") or {}).get("to") or {}).get("coll"),
            (e.get("full_document_before_change") or {}).get("name"),
        )
        for e in expected
    ]
