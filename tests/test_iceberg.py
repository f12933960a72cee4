"""Iceberg tables: what the destination commits, and what readers then see.

Everything runs against the embedded S3 server, with a SQL catalog on SQLite in the
test's temporary directory. Readers are pyiceberg, Polars and DuckDB (through pyiceberg).
Typed columns are columns of the table, with Iceberg types, and evolve it when added.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from bson import Decimal128, Int64, Timestamp
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import CommitStateUnknownException
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.update import AddSnapshotUpdate, SetPropertiesUpdate
from pyiceberg.transforms import DayTransform, HourTransform, IdentityTransform
from pyiceberg.types import (
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from rigatoni_s3 import Column, KeyGenerationStrategy, S3Config, S3Destination
from rigatoni_s3.config import IcebergConfig
from rigatoni_s3.errors import ConfigError
from rigatoni_s3.testing import S3Endpoint
from tests.helpers import BASE_TIME, DOCUMENT_COLUMNS, raw_event

IcebergConfigs = Callable[..., S3Config]


def open_catalog(endpoint: S3Endpoint, catalog_uri: str) -> Catalog:
    """The SQL catalog as an independent pyiceberg reader opens it."""
    return load_catalog(
        "default",
        type="sql",
        uri=catalog_uri,
        **{
            "s3.endpoint": endpoint.url,
            "s3.region": endpoint.region,
            "s3.access-key-id": endpoint.access_key_id,
            "s3.secret-access-key": endpoint.secret_access_key,
        },
    )


def open_table(endpoint: S3Endpoint, catalog_uri: str) -> Table:
    """The table as an independent pyiceberg reader loads it."""
    return open_catalog(endpoint, catalog_uri).load_table("cdc.events")


def stream(count: int, start: int = 0) -> list[dict[str, Any]]:
    """Events over three collections and two hours: ids and tokens numbered from ``start``."""
    assert count > 0
    collections = ("users", "orders", "items")
    return [
        raw_event(n, collections[n % 3], BASE_TIME + timedelta(seconds=(n - start) * 7200 // count))
        for n in range(start, start + count)
    ]


def ids_in(table: Table) -> Counter[int]:
    rows = table.scan(selected_fields=("document_key",)).to_arrow().column("document_key")
    return Counter(json.loads(key)["_id"] for key in rows.to_pylist())


async def test_every_event_lands_once_with_its_types(
    make_iceberg_config: IcebergConfigs, s3_endpoint: S3Endpoint, catalog_uri: str
) -> None:
    """pyiceberg reads each event once, with timestamptz, long and string columns."""
    events = stream(600)
    async with S3Destination(make_iceberg_config()) as destination:
        for first in range(0, 600, 100):
            await destination.write_batch(events[first : first + 100])
        await destination.flush()
        assert destination.durable_resume_token == events[-1]["_id"]
    table = open_table(s3_endpoint, catalog_uri)
    assert ids_in(table) == Counter(range(600))
    schema = table.schema()
    assert schema.find_field("operation").required
    assert isinstance(schema.find_field("cluster_time").field_type, TimestamptzType)
    assert isinstance(schema.find_field("wall_time").field_type, TimestamptzType)
    assert isinstance(schema.find_field("cluster_time_increment").field_type, LongType)
    assert isinstance(schema.find_field("full_document").field_type, StringType)
    rows = table.scan(row_filter="document_key == '{\"_id\":7}'").to_arrow().to_pylist()
    assert len(rows) == 1
    seconds = events[7]["clusterTime"]["$timestamp"]["t"]
    assert rows[0]["cluster_time"] == datetime.fromtimestamp(seconds, UTC)
    assert json.loads(rows[0]["full_document"])["name"] == "user 7"
    summary = table.current_snapshot().summary  # type: ignore[union-attr]
    assert summary is not None
    assert summary["rigatoni-s3.consumer"] == "default"
    assert summary["rigatoni-s3.writer-id"] == destination.writer_id
    assert json.loads(str(summary["rigatoni-s3.resume-token"])) == events[-1]["_id"]


async def test_polars_and_duckdb_read_the_table(
    make_iceberg_config: IcebergConfigs,
    s3_endpoint: S3Endpoint,
    catalog_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Polars' scan_iceberg and DuckDB over pyiceberg's scan see every event once."""
    import polars as pl

    async with S3Destination(make_iceberg_config()) as destination:
        await destination.write_batch(stream(300))
    table = open_table(s3_endpoint, catalog_uri)
    monkeypatch.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")  # the planner plugin is optional
    frame = (
        pl.scan_iceberg(
            table,
            storage_options={
                "aws_endpoint_url": s3_endpoint.url,
                "aws_region": s3_endpoint.region,
                "aws_access_key_id": s3_endpoint.access_key_id,
                "aws_secret_access_key": s3_endpoint.secret_access_key,
                "aws_allow_http": "true",
            },
        )
        .filter(pl.col("collection") == "users")
        .collect()
    )
    assert frame.height == 100
    assert frame.schema["cluster_time"] == pl.Datetime("us", "UTC")
    assert sorted(json.loads(key)["_id"] for key in frame["document_key"]) == list(range(0, 300, 3))
    connection = table.scan().to_duckdb("events")
    assert connection.execute(
        "SELECT count(*), count(DISTINCT document_key) FROM events"
    ).fetchall() == [(300, 300)]


async def test_filters_prune_partitions(
    make_iceberg_config: IcebergConfigs, s3_endpoint: S3Endpoint, catalog_uri: str
) -> None:
    """A filter on collection or on cluster_time plans only the files of matching partitions."""
    async with S3Destination(make_iceberg_config()) as destination:
        await destination.write_batch(stream(600))
    table = open_table(s3_endpoint, catalog_uri)
    everything = list(table.scan().plan_files())
    assert len(everything) == 6  # three collections in two hours
    users = list(table.scan(row_filter="collection == 'users'").plan_files())
    assert len(users) == 2
    assert all("/users/" in task.file.file_path for task in users)
    second_hour = BASE_TIME + timedelta(hours=1)
    late = list(table.scan(row_filter=f"cluster_time >= '{second_hour.isoformat()}'").plan_files())
    assert len(late) == 3
    assert all("/2025/01/15/11/" in task.file.file_path for task in late)


@pytest.mark.parametrize(
    ("strategy", "transforms"),
    [
        (KeyGenerationStrategy.HIVE_PARTITIONED, ["identity", "hour"]),
        (KeyGenerationStrategy.DATE_HOUR_PARTITIONED, ["identity", "hour"]),
        (KeyGenerationStrategy.DATE_PARTITIONED, ["identity", "day"]),
        (KeyGenerationStrategy.COLLECTION_BASED, ["identity"]),
        (KeyGenerationStrategy.FLAT, []),
    ],
)
async def test_the_table_is_partitioned_like_the_keys(
    make_iceberg_config: IcebergConfigs,
    s3_endpoint: S3Endpoint,
    catalog_uri: str,
    strategy: KeyGenerationStrategy,
    transforms: list[str],
) -> None:
    """A table created at start has the partition spec of the key strategy, and reads back."""
    async with S3Destination(make_iceberg_config(key_strategy=strategy)) as destination:
        await destination.write_batch(stream(60))
    table = open_table(s3_endpoint, catalog_uri)
    assert [str(field.transform) for field in table.spec().fields] == transforms
    assert ids_in(table) == Counter(range(60))


async def test_durable_means_committed(make_iceberg_config: IcebergConfigs) -> None:
    """Uploaded objects do not move durable_resume_token or call on_durable; the commit does."""
    seen: list[Any] = []
    config = make_iceberg_config(
        max_batch_events=10, on_durable=seen.append, iceberg={"commit_interval": 3600}
    )
    events = [raw_event(n) for n in range(50)]
    async with S3Destination(config) as destination:
        await destination.write_batch(events)
        while destination.stats().objects_written < 5:
            await asyncio.sleep(0.01)
        assert destination.durable_resume_token is None
        assert seen == []
        assert destination.stats().commits == 0
        await destination.flush()
        assert destination.durable_resume_token == events[-1]["_id"]
        assert seen == [events[-1]["_id"]]
        assert await destination.committed_resume_token() == events[-1]["_id"]
        stats = destination.stats()
    assert (stats.commits, stats.objects_committed, stats.events_committed) == (1, 5, 50)
    assert stats.objects_written == 5
    assert stats.commit_latency is not None
    assert stats.commit_latency.count == 1


async def test_commits_happen_every_commit_interval(make_iceberg_config: IcebergConfigs) -> None:
    """Without flush(), the background round commits what was written."""
    config = make_iceberg_config(iceberg={"commit_interval": 0.05})
    events = stream(40)
    async with S3Destination(config) as destination:
        await destination.write_batch(events)
        for _ in range(500):
            if destination.durable_resume_token is not None:
                break
            await asyncio.sleep(0.01)
        assert destination.durable_resume_token == events[-1]["_id"]
        assert destination.stats().events_committed == 40


async def test_commit_max_files_starts_a_commit_early(
    make_iceberg_config: IcebergConfigs,
) -> None:
    """Once commit_max_files objects wait, a commit starts before the interval is over."""
    config = make_iceberg_config(
        max_batch_events=10, iceberg={"commit_interval": 3600, "commit_max_files": 3}
    )
    events = [raw_event(n) for n in range(35)]
    async with S3Destination(config) as destination:
        await destination.write_batch(events)
        for _ in range(500):
            if destination.stats().commits:
                break
            await asyncio.sleep(0.01)
        stats = destination.stats()
        # the cut seals the open buffer too: every event so far is in the commit
        assert (stats.commits, stats.events_committed) == (1, 35)
        assert destination.durable_resume_token == events[-1]["_id"]


async def test_each_consumer_reads_its_own_token(make_iceberg_config: IcebergConfigs) -> None:
    """Consumers sharing a table keep their tokens apart; a new one has none."""
    first, second = stream(30), stream(30, start=1000)
    async with S3Destination(make_iceberg_config(iceberg={"consumer": "shop"})) as destination:
        await destination.write_batch(first)
    async with S3Destination(make_iceberg_config(iceberg={"consumer": "crm"})) as destination:
        await destination.write_batch(second)
        assert await destination.committed_resume_token() is None  # nothing committed yet
        await destination.flush()
        assert await destination.committed_resume_token() == second[-1]["_id"]
    async with S3Destination(make_iceberg_config(iceberg={"consumer": "shop"})) as destination:
        assert await destination.committed_resume_token() == first[-1]["_id"]
    async with S3Destination(make_iceberg_config(iceberg={"consumer": "new"})) as destination:
        assert await destination.committed_resume_token() is None


def expire_all_but_current(table: Table) -> None:
    """Routine maintenance: every snapshot that is not a branch head goes."""
    table.maintenance.expire_snapshots().older_than(datetime.now(UTC) + timedelta(days=1)).commit()


async def test_a_token_outlives_the_expiry_of_its_snapshot(
    make_iceberg_config: IcebergConfigs, s3_endpoint: S3Endpoint, catalog_uri: str
) -> None:
    """Snapshots expired while another consumer commits: the first one's token stays."""
    first, second = stream(30), stream(30, start=1000)
    async with S3Destination(make_iceberg_config(iceberg={"consumer": "shop"})) as destination:
        await destination.write_batch(first[:15])
        await destination.flush()
        await destination.write_batch(first[15:])
    async with S3Destination(make_iceberg_config(iceberg={"consumer": "crm"})) as destination:
        await destination.write_batch(second)
    table = open_table(s3_endpoint, catalog_uri)
    expire_all_but_current(table)
    table.refresh()
    summaries = [snapshot.summary for snapshot in table.snapshots()]
    assert [summary["rigatoni-s3.consumer"] for summary in summaries if summary] == ["crm"]
    assert json.loads(table.properties["rigatoni-s3.resume-token.shop"]) == first[-1]["_id"]
    async with S3Destination(make_iceberg_config(iceberg={"consumer": "shop"})) as destination:
        assert await destination.committed_resume_token() == first[-1]["_id"]
    async with S3Destination(make_iceberg_config(iceberg={"consumer": "crm"})) as destination:
        assert await destination.committed_resume_token() == second[-1]["_id"]
    assert ids_in(open_table(s3_endpoint, catalog_uri)) == Counter([*range(30), *range(1000, 1030)])


async def test_a_rolled_back_table_resumes_from_the_data_it_holds(
    make_iceberg_config: IcebergConfigs, s3_endpoint: S3Endpoint, catalog_uri: str
) -> None:
    """Rolled back to an earlier commit, the table's history holds an earlier token than
    the property: the history wins, so the events rolled away are read again."""
    events = stream(30)
    async with S3Destination(make_iceberg_config(iceberg={"consumer": "shop"})) as destination:
        await destination.write_batch(events[:15])
        await destination.flush()
        await destination.write_batch(events[15:])
    table = open_table(s3_endpoint, catalog_uri)
    assert len(table.snapshots()) == 2
    (first,) = [snapshot for snapshot in table.snapshots() if snapshot.parent_snapshot_id is None]
    table.manage_snapshots().rollback_to_snapshot(first.snapshot_id).commit()
    assert json.loads(table.properties["rigatoni-s3.resume-token.shop"]) == events[-1]["_id"]
    assert ids_in(open_table(s3_endpoint, catalog_uri)) == Counter(range(15))
    async with S3Destination(make_iceberg_config(iceberg={"consumer": "shop"})) as destination:
        assert await destination.committed_resume_token() == events[14]["_id"]


async def test_a_table_without_token_properties_is_read_from_its_snapshots(
    make_iceberg_config: IcebergConfigs, s3_endpoint: S3Endpoint, catalog_uri: str
) -> None:
    """A table last written before the property existed: the summaries still hold the token."""
    events = stream(30)
    async with S3Destination(make_iceberg_config(iceberg={"consumer": "shop"})) as destination:
        await destination.write_batch(events)
    table = open_table(s3_endpoint, catalog_uri)
    with table.transaction() as tx:
        tx.remove_properties("rigatoni-s3.resume-token.shop")
    assert "rigatoni-s3.resume-token.shop" not in table.properties
    async with S3Destination(make_iceberg_config(iceberg={"consumer": "shop"})) as destination:
        assert await destination.committed_resume_token() == events[-1]["_id"]


def two_consumers(make_iceberg_config: IcebergConfigs) -> tuple[S3Destination, S3Destination]:
    """Consumers "shop" and "crm" of one table, committing only when flushed."""
    return (
        S3Destination(make_iceberg_config(iceberg={"consumer": "shop", "commit_interval": 3600})),
        S3Destination(make_iceberg_config(iceberg={"consumer": "crm", "commit_interval": 3600})),
    )


def committing_table(destination: S3Destination) -> Any:
    """The pyiceberg table a started destination commits through, to watch its requests."""
    assert destination._committer is not None
    assert destination._committer._table is not None
    return destination._committer._table._table


async def test_a_commit_retried_after_a_conflict_keeps_both_tokens(
    make_iceberg_config: IcebergConfigs,
    s3_endpoint: S3Endpoint,
    catalog_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another consumer commits between our refresh and our request: pyiceberg refreshes
    and sends again, and the retried request still sets our token, beside theirs."""
    first, second = stream(30), stream(30, start=1000)
    shop, crm = two_consumers(make_iceberg_config)
    async with shop, crm:
        await shop.write_batch(first)
        await crm.write_batch(second)
        loop = asyncio.get_running_loop()
        ours = committing_table(shop)
        send = ours._do_commit
        requests: list[tuple[Any, ...]] = []

        def race_then_send(updates: tuple[Any, ...], requirements: tuple[Any, ...]) -> None:
            requests.append(updates)
            if len(requests) == 1:  # crm's commit lands first: ours is now stale
                asyncio.run_coroutine_threadsafe(crm.flush(), loop).result(timeout=30)
            send(updates, requirements)

        monkeypatch.setattr(ours, "_do_commit", race_then_send)
        await shop.flush()
        assert shop.stats().commit_retries == 1
        assert shop.stats().commits == 1
    assert len(requests) == 2
    for updates in requests:  # the refused request and its retry: snapshot and property
        assert sum(isinstance(update, AddSnapshotUpdate) for update in updates) == 1
        properties = [u.updates for u in updates if isinstance(u, SetPropertiesUpdate)]
        assert [sorted(p) for p in properties] == [
            ["rigatoni-s3.commit-id.shop", "rigatoni-s3.resume-token.shop"]
        ]
    table = open_table(s3_endpoint, catalog_uri)
    assert json.loads(table.properties["rigatoni-s3.resume-token.shop"]) == first[-1]["_id"]
    assert json.loads(table.properties["rigatoni-s3.resume-token.crm"]) == second[-1]["_id"]
    consumers = [s.summary and s.summary["rigatoni-s3.consumer"] for s in table.snapshots()]
    assert consumers == ["crm", "shop"]
    assert ids_in(table) == Counter([*range(30), *range(1000, 1030)])


@pytest.mark.parametrize("expired", [False, True])
async def test_a_commit_whose_answer_was_lost_is_not_made_twice(
    make_iceberg_config: IcebergConfigs,
    s3_endpoint: S3Endpoint,
    catalog_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    expired: bool,
) -> None:
    """The catalog applies our commit but the answer never arrives, so the commit is
    tried again: the retry finds its earlier attempt in the table and commits nothing.
    ``expired``: meanwhile another consumer commits and every older snapshot is expired,
    ours included; the commit-id property still tells."""
    first, second = stream(30), stream(30, start=1000)
    shop, crm = two_consumers(make_iceberg_config)
    async with shop, crm:
        await shop.write_batch(first)
        await crm.write_batch(second)
        loop = asyncio.get_running_loop()
        ours = committing_table(shop)
        send = ours._do_commit
        sent: list[int] = []

        def send_then_lose_the_answer(
            updates: tuple[Any, ...], requirements: tuple[Any, ...]
        ) -> None:
            sent.append(1)
            send(updates, requirements)
            if len(sent) == 1:
                if expired:
                    asyncio.run_coroutine_threadsafe(crm.flush(), loop).result(timeout=30)
                    expire_all_but_current(open_table(s3_endpoint, catalog_uri))
                raise CommitStateUnknownException("the connection dropped before the answer")

        monkeypatch.setattr(ours, "_do_commit", send_then_lose_the_answer)
        await shop.flush()
        assert shop.durable_resume_token == first[-1]["_id"]
        assert await shop.committed_resume_token() == first[-1]["_id"]
        await crm.flush()
    assert len(sent) == 1  # the retry found the landed attempt: no second request
    table = open_table(s3_endpoint, catalog_uri)
    if expired:
        consumers = [s.summary and s.summary["rigatoni-s3.consumer"] for s in table.snapshots()]
        assert consumers == ["crm"]
    assert ids_in(table) == Counter([*range(30), *range(1000, 1030)])


def _old_table(
    catalog_uri: str, s3_endpoint: S3Endpoint, bucket: str, schema: Schema, spec: PartitionSpec
) -> None:
    """A table made by someone else, before this destination starts."""
    catalog = open_catalog(s3_endpoint, catalog_uri)
    catalog.create_namespace_if_not_exists("cdc")
    catalog.create_table(
        "cdc.events", schema, location=f"s3://{bucket}/tables/cdc", partition_spec=spec
    )


EIGHT_COLUMNS = [
    NestedField(1, "operation", StringType(), required=True),
    NestedField(2, "database", StringType()),
    NestedField(3, "collection", StringType()),
    NestedField(4, "cluster_time", TimestamptzType()),
    NestedField(5, "document_key", StringType()),
    NestedField(6, "full_document", StringType()),
    NestedField(7, "update_description", StringType()),
    NestedField(8, "resume_token", StringType()),
]
HOURLY = PartitionSpec(
    PartitionField(3, 1000, IdentityTransform(), "collection"),
    PartitionField(4, 1001, HourTransform(), "cluster_time_hour"),
)


async def test_an_older_table_gains_the_new_columns(
    make_iceberg_config: IcebergConfigs, s3_endpoint: S3Endpoint, catalog_uri: str, bucket: str
) -> None:
    """A table of the eight-column envelope (plus a column of its own) is evolved and written."""
    schema = Schema(*EIGHT_COLUMNS, NestedField(9, "note", StringType()))
    _old_table(catalog_uri, s3_endpoint, bucket, schema, HOURLY)
    async with S3Destination(make_iceberg_config()) as destination:
        await destination.write_batch(stream(30))
    table = open_table(s3_endpoint, catalog_uri)
    names = [field.name for field in table.schema().fields]
    assert names[:9] == [field.name for field in schema.fields]
    assert names[9:] == [
        "full_document_before_change",
        "wall_time",
        "cluster_time_increment",
        "transaction",
        "extra",
    ]
    rows = table.scan().to_arrow()
    assert rows.num_rows == 30
    assert rows.column("note").null_count == 30
    assert rows.schema.field("wall_time").type == pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize(
    ("columns", "spec", "strategy", "named"),
    [
        (
            [*EIGHT_COLUMNS[:3], NestedField(4, "cluster_time", StringType()), *EIGHT_COLUMNS[4:]],
            PartitionSpec(),
            KeyGenerationStrategy.FLAT,
            "column 'cluster_time' is string in the table, timestamptz in our objects",
        ),
        (
            [*EIGHT_COLUMNS, NestedField(9, "tenant", StringType(), required=True)],
            PartitionSpec(),
            KeyGenerationStrategy.FLAT,
            "required column 'tenant' is not written by rigatoni-s3",
        ),
        (
            EIGHT_COLUMNS,
            HOURLY,
            KeyGenerationStrategy.DATE_PARTITIONED,
            "partition field 'cluster_time_hour' (hour) is finer than the objects of key_strategy DATE_PARTITIONED",
        ),
    ],
)
async def test_an_incompatible_table_fails_at_start(
    make_iceberg_config: IcebergConfigs,
    s3_endpoint: S3Endpoint,
    catalog_uri: str,
    bucket: str,
    columns: list[NestedField],
    spec: PartitionSpec,
    strategy: KeyGenerationStrategy,
    named: str,
) -> None:
    """start() raises ConfigError naming what differs, and writes nothing to the table."""
    _old_table(catalog_uri, s3_endpoint, bucket, Schema(*columns), spec)
    destination = S3Destination(make_iceberg_config(key_strategy=strategy))
    with pytest.raises(ConfigError, match=r"^iceberg\.table: ") as caught:
        await destination.start()
    assert named in str(caught.value)
    await destination.close()
    assert open_table(s3_endpoint, catalog_uri).current_snapshot() is None


def test_a_day_partitioned_table_takes_hourly_objects() -> None:
    """A coarser time partition than the keys' is compatible; the value is the object's day."""
    from rigatoni_s3.formats.parquet import SCHEMA
    from rigatoni_s3.iceberg._schema import check_table, partition_value, table_schema
    from rigatoni_s3.keys import partition_of

    ours = table_schema(SCHEMA)
    daily = PartitionSpec(PartitionField(4, 1000, DayTransform(), "cluster_time_day"))
    table = Schema(*EIGHT_COLUMNS)
    missing = check_table(table, daily, ours, KeyGenerationStrategy.HIVE_PARTITIONED)
    assert [field.name for field in missing][:2] == ["full_document_before_change", "wall_time"]
    partition = partition_of(KeyGenerationStrategy.HIVE_PARTITIONED, "users", BASE_TIME, BASE_TIME)
    days = (BASE_TIME - datetime(1970, 1, 1, tzinfo=UTC)).days
    assert partition_value(table, daily, partition, has_time=True)[0] == days
    assert partition_value(table, daily, partition, has_time=False)[0] is None


def test_iceberg_needs_parquet_and_no_dead_letters(make_config: Callable[..., S3Config]) -> None:
    """Iceberg with another format, or with dead_letter_dir, fails when the config is built."""
    iceberg = IcebergConfig(catalog={"type": "sql", "uri": "sqlite://"}, table="cdc.events")
    with pytest.raises(ConfigError, match=r"^iceberg: needs format=PARQUET"):
        make_config(format="json", iceberg=iceberg)
    with pytest.raises(ConfigError, match=r"^dead_letter_dir: cannot be used with iceberg"):
        make_config(format="parquet", iceberg=iceberg, dead_letter_dir="/tmp/letters")
    with pytest.raises(ConfigError, match=r"^iceberg\.table: 'events' must be 'namespace.table'"):
        IcebergConfig(catalog={}, table="events")


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("commit_interval", 0, "must be a number > 0"),
        ("commit_interval", -1.5, "must be a number > 0"),
        ("commit_interval", float("nan"), "must be a number > 0"),
        ("commit_interval", True, "must be a number > 0"),
        ("commit_interval", "60", "must be a number > 0"),
        ("commit_max_files", 0, "must be an integer > 0"),
        ("commit_max_files", 2.5, "must be an integer > 0"),
        ("commit_max_files", 10.0, "must be an integer > 0"),
        ("commit_max_files", True, "must be an integer > 0"),
        ("commit_max_files", "10", "must be an integer > 0"),
    ],
)
def test_commit_limits_are_checked(field: str, value: Any, rule: str) -> None:
    """commit_interval is a positive number of seconds, commit_max_files a positive integer."""
    with pytest.raises(ConfigError, match=rf"^iceberg\.{field}: {rule}, got "):
        IcebergConfig(catalog={}, table="cdc.events", **{field: value})


def test_commit_limits_take_good_values() -> None:
    """Whole and fractional seconds, and a single file, are valid limits."""
    iceberg = IcebergConfig(catalog={}, table="cdc.events", commit_interval=2, commit_max_files=1)
    assert (iceberg.commit_interval, iceberg.commit_max_files) == (2, 1)
    assert (
        IcebergConfig(catalog={}, table="cdc.events", commit_interval=0.25).commit_interval == 0.25
    )


def test_the_builder_takes_iceberg_keywords() -> None:
    """.iceberg(catalog=..., table=...) builds the same config as an IcebergConfig."""
    catalog = {"type": "sql", "uri": "sqlite:///catalog.db"}
    built = (
        S3Config.builder()
        .bucket("lake")
        .region("us-east-1")
        .format("parquet")
        .iceberg(catalog=catalog, table="cdc.events", consumer="shop", commit_interval=10)
        .build()
    )
    assert built.iceberg == IcebergConfig(
        catalog=catalog, table="cdc.events", consumer="shop", commit_interval=10
    )
    assert built.iceberg.identifier == ("cdc", "events")


def test_s3_properties_come_from_the_destination() -> None:
    """Missing s3.* catalog properties are the destination's; given ones are kept."""
    from rigatoni_s3.iceberg._table import catalog_properties, default_location

    config = S3Config(
        bucket="lake",
        region="eu-west-1",
        prefix="cdc",
        format="parquet",
        endpoint_url="http://127.0.0.1:9000",
        force_path_style=True,
        aws_access_key_id="key",
        aws_secret_access_key="secret",
        iceberg=IcebergConfig(
            catalog={"type": "sql", "uri": "sqlite://", "s3.region": "us-east-1"},
            table="db.cdc.events",
        ),
    )
    assert catalog_properties(config) == {
        "type": "sql",
        "uri": "sqlite://",
        "s3.region": "us-east-1",
        "s3.endpoint": "http://127.0.0.1:9000",
        "s3.force-virtual-addressing": "false",
        "s3.access-key-id": "key",
        "s3.secret-access-key": "secret",
    }
    assert default_location(config) == "s3://lake/cdc/_iceberg/db/cdc/events"


async def test_prometheus_exposes_the_commit_counters(make_iceberg_config: IcebergConfigs) -> None:
    """With Iceberg the collector adds commits, objects committed and commit retries."""
    from prometheus_client import CollectorRegistry, generate_latest

    from rigatoni_s3.metrics import PrometheusCollector

    registry = CollectorRegistry()
    async with S3Destination(make_iceberg_config()) as destination:
        registry.register(PrometheusCollector(destination))
        await destination.write_batch(stream(30))
        await destination.flush()
        text = generate_latest(registry).decode()
    labels = f'bucket="{destination.config.bucket}",writer_id="{destination.writer_id}"'
    assert f"rigatoni_s3_commits_total{{{labels}}} 1.0" in text
    assert f"rigatoni_s3_objects_committed_total{{{labels}}} 6.0" in text
    assert f"rigatoni_s3_commit_retries_total{{{labels}}} 0.0" in text


SEEN = datetime(2025, 1, 15, 9, 30)
"""Naive UTC, as pymongo decodes BSON dates."""


def typed_event(n: int, **document: Any) -> dict[str, Any]:
    """A change-stream document as pymongo decodes it, with the fields of DOCUMENT_COLUMNS (or ``document``)."""
    fields = document or {
        "status": "paid" if n % 2 else "open",
        "age": Int64(20 + n),
        "score": n / 4,
        "vip": n % 3 == 0,
        "seen": SEEN + timedelta(seconds=n, milliseconds=n),
        "born": datetime(1990, 1, 1) + timedelta(days=n),
        "total": Decimal128(f"{n}.25"),
        "tags": ["t", {"n": n}],
    }
    return {
        "_id": {"_data": f"8263{n:012d}"},
        "operationType": "insert",
        "clusterTime": Timestamp(int(BASE_TIME.timestamp()) + n, 1),
        "ns": {"db": "shop", "coll": "users"},
        "documentKey": {"_id": Int64(n)},
        "fullDocument": {"_id": Int64(n), **fields},
    }


def typed_rows(table: Table, names: list[str]) -> dict[int, dict[str, Any]]:
    """The typed columns of each row, by document id."""
    rows = table.scan(selected_fields=("document_key", *names)).to_arrow().to_pylist()
    return {json.loads(row.pop("document_key"))["_id"]: row for row in rows}


async def test_typed_columns_are_table_columns(
    make_iceberg_config: IcebergConfigs, s3_endpoint: S3Endpoint, catalog_uri: str
) -> None:
    """Typed columns follow the envelope with their Iceberg types; scans read and filter them."""
    events = [typed_event(n) for n in range(39)]
    events.append(typed_event(39, age="forty", total=Decimal128("0.001")))  # two mismatches
    config = make_iceberg_config(columns=DOCUMENT_COLUMNS, max_batch_events=10)
    async with S3Destination(config) as destination:
        await destination.write_batch(events)
        await destination.flush()
        assert destination.stats().type_mismatches == 2
    table = open_table(s3_endpoint, catalog_uri)
    schema = table.schema()
    assert [field.name for field in schema.fields[13:]] == list(DOCUMENT_COLUMNS)
    assert {name: schema.find_field(name).field_type for name in DOCUMENT_COLUMNS} == {
        "status": StringType(),
        "age": LongType(),
        "score": DoubleType(),
        "vip": BooleanType(),
        "seen": TimestamptzType(),
        "born": DateType(),
        "total": DecimalType(12, 2),
        "tags": StringType(),
    }
    assert not any(schema.find_field(name).required for name in DOCUMENT_COLUMNS)

    rows = typed_rows(table, list(DOCUMENT_COLUMNS))
    assert sorted(rows) == list(range(40))
    assert rows[7] == {
        "status": "paid",
        "age": 27,
        "score": 1.75,
        "vip": False,
        "seen": datetime(2025, 1, 15, 9, 30, 7, 7000, tzinfo=UTC),
        "born": date(1990, 1, 8),
        "total": Decimal("7.25"),
        "tags": '["t",{"n":7}]',
    }
    assert (rows[39]["age"], rows[39]["total"], rows[39]["status"]) == (None, None, None)

    # Filters on typed columns: right rows, and files pruned by the typed columns' metrics.
    old = table.scan(row_filter="age >= 50", selected_fields=("age",)).to_arrow()
    assert sorted(old.column("age").to_pylist()) == list(range(50, 59))
    assert len(list(table.scan(row_filter="age >= 50").plan_files())) == 1  # of four files
    assert len(list(table.scan().plan_files())) == 4
    cheap = table.scan(row_filter="total < 3 and vip == true", selected_fields=("total",))
    assert sorted(cheap.to_arrow().column("total").to_pylist()) == [Decimal("0.25")]
    seen = table.scan(row_filter=f"seen >= '{(SEEN + timedelta(seconds=38)).isoformat()}+00:00'")
    assert seen.to_arrow().num_rows == 1  # event 38; event 39 has no seen
    data_file = next(iter(table.scan().plan_files())).file
    ids = {name: schema.find_field(name).field_id for name in DOCUMENT_COLUMNS}
    assert ids["age"] in data_file.lower_bounds
    assert ids["tags"] not in data_file.lower_bounds  # json columns have no statistics


async def test_a_new_typed_column_evolves_the_table(
    make_iceberg_config: IcebergConfigs, s3_endpoint: S3Endpoint, catalog_uri: str
) -> None:
    """A typed column added to the config later becomes an optional column; older rows read null."""
    first = {"status": DOCUMENT_COLUMNS["status"]}
    async with S3Destination(make_iceberg_config(columns=first)) as destination:
        await destination.write_batch([typed_event(n) for n in range(20)])
    table = open_table(s3_endpoint, catalog_uri)
    assert "age" not in table.schema().column_names
    both = {"status": DOCUMENT_COLUMNS["status"], "age": DOCUMENT_COLUMNS["age"]}
    async with S3Destination(make_iceberg_config(columns=both)) as destination:
        await destination.write_batch([typed_event(n) for n in range(20, 40)])
    table = open_table(s3_endpoint, catalog_uri)
    schema = table.schema()
    assert [field.name for field in schema.fields[13:]] == ["status", "age"]
    assert schema.find_field("age").field_type == LongType()
    assert not schema.find_field("age").required
    rows = typed_rows(table, ["status", "age"])
    assert sorted(rows) == list(range(40))
    assert all(
        rows[n] == {"status": "open" if n % 2 == 0 else "paid", "age": None} for n in range(20)
    )
    assert all(rows[n]["age"] == 20 + n for n in range(20, 40))
    late = table.scan(row_filter="age is null", selected_fields=("document_key",)).to_arrow()
    assert late.num_rows == 20


async def test_a_typed_column_of_another_type_fails_at_start(
    make_iceberg_config: IcebergConfigs, s3_endpoint: S3Endpoint, catalog_uri: str
) -> None:
    """Changing a typed column's type against the table is a ConfigError naming both types."""
    async with S3Destination(
        make_iceberg_config(columns={"age": DOCUMENT_COLUMNS["age"]})
    ) as destination:
        await destination.write_batch([typed_event(1)])
    retyped = {"age": Column("full_document.age", "string")}
    destination = S3Destination(make_iceberg_config(columns=retyped))
    with pytest.raises(ConfigError, match=r"^iceberg\.table: ") as caught:
        await destination.start()
    await destination.close()
    assert (
        "typed column 'age' is long in the table, string in our objects "
        "(declared string at full_document.age)" in str(caught.value)
    )
    assert len(list(open_table(s3_endpoint, catalog_uri).snapshots())) == 1


def test_a_column_differing_only_in_case_is_a_conflict() -> None:
    """Engines that ignore case would see two columns 'Age' and 'age' as one."""
    from rigatoni_s3.formats.parquet import ParquetSerializer
    from rigatoni_s3.iceberg._schema import check_table, table_schema

    columns = {"age": DOCUMENT_COLUMNS["age"]}
    ours = table_schema(ParquetSerializer(columns=columns).schema)
    table = Schema(*EIGHT_COLUMNS, NestedField(9, "Age", LongType()))
    with pytest.raises(
        ConfigError, match="column 'age' differs from the table's 'Age' only in case"
    ):
        check_table(table, PartitionSpec(), ours, KeyGenerationStrategy.FLAT, columns)


def _http_error(status: int) -> Exception:
    import requests

    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    error: Exception = ClientError(response, "UpdateTable")
    return error


def _transient_cases() -> list[tuple[Exception, bool]]:
    import requests
    import sqlalchemy.exc
    from botocore.exceptions import EndpointConnectionError
    from pyiceberg.exceptions import (
        CommitFailedException,
        CommitStateUnknownException,
        ForbiddenError,
        NoSuchTableError,
        ServiceUnavailableError,
        ValidationException,
    )

    return [
        (CommitFailedException("Table has been updated by another process"), True),
        (CommitStateUnknownException("504 Gateway Timeout"), True),
        (ServiceUnavailableError("503"), True),
        (sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("database is locked")), True),
        (requests.ConnectionError("connection refused"), True),
        (_http_error(503), True),
        (EndpointConnectionError(endpoint_url="https://glue.us-east-1.amazonaws.com"), True),
        (_client_error("ThrottlingException", 400), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (OSError("AWS Error NETWORK_CONNECTION during PutObject operation"), True),
        (_http_error(404), False),
        (_client_error("AccessDeniedException", 400), False),
        (ForbiddenError("not allowed"), False),
        (NoSuchTableError("cdc.events"), False),
        (ValidationException("Cannot commit: conflicting files"), False),
        (sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint")), False),
        (FileNotFoundError("metadata/00001.metadata.json"), False),
        (KeyError("cluster_time"), False),
        (TypeError("unsupported operand"), False),
        (ValueError("Could not find field with name cluster_time"), False),
    ]


@pytest.mark.parametrize(("error", "expected"), _transient_cases(), ids=repr)
def test_only_failures_that_may_pass_are_transient(error: Exception, expected: bool) -> None:
    """Conflicts and connection or server errors are retried; bugs and refusals are not."""
    from rigatoni_s3.iceberg._table import transient

    assert transient(error) is expected
