"""``make demo``: change events through every format, codec and key layout, then read back.

Starts an S3 server on 127.0.0.1 (or uses ``S3_ENDPOINT_URL``), writes a few
thousand MongoDB change events with :class:`rigatoni_s3.S3Destination`:

* once per key strategy (JSON Lines, uncompressed), drawing the keys as trees;
* once per format and compression (Hive layout), to compare sizes;
* once more as Parquet committed to an Apache Iceberg table (a SQL catalog on SQLite
  in a temporary directory), showing its snapshots, partitions, row count and the
  committed resume token.

Every object is then read back with the formats' own libraries and checked
against what was sent: every event exactly once and unchanged, in order within
its object, under the key its collection and ``clusterTime`` call for, with the
right extension and compression. Exits 1 if anything differs.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
from _common import (
    StoredObject,
    Target,
    argument_parser,
    batches,
    list_keys,
    normalized,
    open_target,
    read_objects,
    render_table,
    render_tree,
    run_main,
    sample_events,
)
from _common import compare as compare_records

from rigatoni_s3 import Compression, KeyGenerationStrategy, S3Destination, SerializationFormat

FORMATS = list(SerializationFormat)
CODECS = list(Compression)
STRATEGIES = list(KeyGenerationStrategy)

EXTENSION = {
    SerializationFormat.JSON: "jsonl",
    SerializationFormat.CSV: "csv",
    SerializationFormat.PARQUET: "parquet",
    SerializationFormat.AVRO: "avro",
}
WHOLE_OBJECT = {Compression.NONE: None, Compression.GZIP: "gzip", Compression.ZSTD: "zstd"}
"""Content-Encoding of JSON and CSV objects; the extension adds .gz or .zst."""
INTERNAL_CODEC = {
    SerializationFormat.PARQUET: {
        Compression.NONE: "UNCOMPRESSED",
        Compression.GZIP: "GZIP",
        Compression.ZSTD: "ZSTD",
    },
    SerializationFormat.AVRO: {
        Compression.NONE: "null",
        Compression.GZIP: "deflate",
        Compression.ZSTD: "zstandard",
    },
}
"""Parquet and Avro compress inside the file instead: column codec, block codec."""

COLUMNS = (
    "format",
    "compression",
    "strategy",
    "objects",
    "events",
    "bytes",
    "bytes/event",
    "check",
)


@attrs.frozen
class Run:
    """One destination: a format, a compression and a key strategy, under its own prefix."""

    format: SerializationFormat
    compression: Compression
    strategy: KeyGenerationStrategy

    @property
    def prefix(self) -> str:
        return f"demo/{self.format.value}-{self.compression.value}/{self.strategy.value}"

    @property
    def extension(self) -> str:
        base = EXTENSION[self.format]
        encoding = WHOLE_OBJECT[self.compression]
        if self.format in INTERNAL_CODEC or encoding is None:
            return base
        return f"{base}.{'gz' if encoding == 'gzip' else 'zst'}"


@attrs.frozen
class Outcome:
    """What one run left in the bucket, and what was wrong with it."""

    run: Run
    objects: list[StoredObject]
    problems: list[str]

    @property
    def events(self) -> int:
        return sum(len(obj.records) for obj in self.objects)

    @property
    def bytes(self) -> int:
        return sum(obj.size for obj in self.objects)


def plan(every_combination: bool) -> list[Run]:
    """Each strategy once, then each format x compression; or the full cross product."""
    if every_combination:
        return [Run(f, c, s) for f in FORMATS for c in CODECS for s in STRATEGIES]
    hive = KeyGenerationStrategy.HIVE_PARTITIONED
    by_strategy = [Run(SerializationFormat.JSON, Compression.NONE, s) for s in STRATEGIES]
    by_format = [Run(f, c, hive) for f in FORMATS for c in CODECS]
    return by_strategy + [run for run in by_format if run not in by_strategy]


async def write(target: Target, run: Run, events: Sequence[Mapping[str, Any]]) -> str:
    """Write ``events`` as ``run`` says; returns the writer id that names its objects."""
    config = (
        target.builder()
        .prefix(run.prefix)
        .format(run.format)
        .compression(run.compression)
        .key_strategy(run.strategy)
        .build()
    )
    async with S3Destination(config) as destination:
        for batch in batches(events, 500):
            await destination.write_batch(batch)
        await destination.flush()
        return destination.writer_id


def check(
    run: Run, objects: Sequence[StoredObject], events: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Content (via ``_common.compare``), order, key layout, extension and compression."""
    problems = compare_records(events, objects)
    position = {event["_id"]["_data"]: n for n, event in enumerate(events)}
    for obj in objects:
        records = [normalized(record) for record in obj.records]
        relative = obj.key.removeprefix(f"{run.prefix}/")
        folder, _, name = relative.rpartition("/")
        if not name.endswith(f".{run.extension}"):
            problems.append(f"{obj.key}: expected the extension .{run.extension}")
        places = {
            partition_path(run.strategy, r["collection"], r["cluster_time"])
            for r in records
            if r["cluster_time"] is not None  # compare() has reported it already
        }
        if places - {folder}:
            problems.append(f"{obj.key}: holds events of {sorted(places)}")
        collections = {r["collection"] for r in records}
        if run.strategy is KeyGenerationStrategy.FLAT and not all(
            name.startswith(f"{c}_") for c in collections
        ):
            problems.append(f"{obj.key}: holds events of {sorted(collections)}")
        order = [position.get((r["resume_token"] or {}).get("_data"), -1) for r in records]
        if order != sorted(order):
            problems.append(f"{obj.key}: events are out of order")
        expected_encoding = None if run.format in INTERNAL_CODEC else WHOLE_OBJECT[run.compression]
        if obj.content_encoding != expected_encoding:
            problems.append(
                f"{obj.key}: Content-Encoding {obj.content_encoding!r}, "
                f"expected {expected_encoding!r}"
            )
        if run.format in INTERNAL_CODEC and obj.error is None:
            codec = internal_codec(run.format, obj.body)
            expected_codec = INTERNAL_CODEC[run.format][run.compression]
            if codec != expected_codec:
                problems.append(f"{obj.key}: codec {codec!r}, expected {expected_codec!r}")
    return problems


def partition_path(strategy: KeyGenerationStrategy, collection: str, t: datetime) -> str:
    """The folder an event belongs in, worked out independently of rigatoni_s3.keys."""
    if strategy is KeyGenerationStrategy.HIVE_PARTITIONED:
        return f"collection={collection}/year={t:%Y}/month={t:%m}/day={t:%d}/hour={t:%H}"
    if strategy is KeyGenerationStrategy.DATE_HOUR_PARTITIONED:
        return f"{collection}/{t:%Y/%m/%d/%H}"
    if strategy is KeyGenerationStrategy.DATE_PARTITIONED:
        return f"{collection}/{t:%Y/%m/%d}"
    if strategy is KeyGenerationStrategy.COLLECTION_BASED:
        return collection
    return ""  # FLAT: the collection is the start of the file name


def internal_codec(fmt: SerializationFormat, body: bytes) -> str:
    """The codec of a Parquet file's first column chunk, or of an Avro file's blocks."""
    if fmt is SerializationFormat.PARQUET:
        import pyarrow.parquet

        metadata = pyarrow.parquet.ParquetFile(io.BytesIO(body)).metadata
        return str(metadata.row_group(0).column(0).compression)
    import fastavro

    return str(fastavro.reader(io.BytesIO(body)).codec)


async def write_iceberg(
    target: Target, events: Sequence[Mapping[str, Any]], catalog: dict[str, str]
) -> Any:
    """Write ``events`` to an Iceberg table in three commits; returns the committed token."""
    config = (
        target.builder()
        .prefix("demo/iceberg")
        .format(SerializationFormat.PARQUET)
        .compression(Compression.ZSTD)
        .key_strategy(KeyGenerationStrategy.HIVE_PARTITIONED)
        .iceberg(catalog=catalog, table="demo.events", consumer="demo")
        .build()
    )
    async with S3Destination(config) as destination:
        third = -(-len(events) // 3)
        for start in range(0, len(events), third):
            await destination.write_batch(events[start : start + third])
            await destination.flush()  # one commit each
        return await destination.committed_resume_token()


def show_iceberg(target: Target, events: Sequence[Mapping[str, Any]]) -> list[str]:
    """Write the events to an Iceberg table, print what a reader sees, and check it."""
    from pyiceberg.catalog import load_catalog

    with tempfile.TemporaryDirectory() as directory:
        catalog = {"type": "sql", "uri": f"sqlite:///{directory}/catalog.db"}
        token = asyncio.run(write_iceberg(target, events, catalog))
        reader: dict[str, str] = {**catalog, "s3.region": target.region}
        if target.endpoint is not None:
            reader["s3.endpoint"] = target.endpoint.url
            reader["s3.access-key-id"] = target.endpoint.access_key_id
            reader["s3.secret-access-key"] = target.endpoint.secret_access_key
        table = load_catalog("default", **reader).load_table("demo.events")
        print(f"\nIceberg table demo.events at {table.location()}:")
        snapshots = [
            (
                str(snapshot.snapshot_id),
                *(
                    str(snapshot.summary[key]) if snapshot.summary is not None else ""
                    for key in (
                        "added-data-files",
                        "added-records",
                        "rigatoni-s3.consumer",
                        "rigatoni-s3.resume-token",
                    )
                ),
            )
            for snapshot in table.snapshots()
        ]
        print(render_table(("snapshot", "files", "records", "consumer", "resume token"), snapshots))
        partitions = table.inspect.partitions().sort_by("partition").to_pylist()
        print(
            render_table(
                ("partition", "records", "files"),
                [
                    (
                        ", ".join(
                            f"{name}={partition_label(name, value)}"
                            for name, value in row["partition"].items()
                        ),
                        row["record_count"],
                        row["file_count"],
                    )
                    for row in partitions
                ],
            )
        )
        rows = table.scan().to_arrow()
        print(f"rows: {rows.num_rows:,}; committed resume token: {json.dumps(token)}")
    problems = []
    if rows.num_rows != len(events):
        problems.append(f"iceberg: {rows.num_rows} rows, expected {len(events)}")
    ids = rows.column("resume_token").to_pylist()
    if len(set(ids)) != len(ids):
        problems.append("iceberg: some events are in the table twice")
    if token != events[-1]["_id"]:
        problems.append(f"iceberg: committed token {token!r}, expected {events[-1]['_id']!r}")
    return problems


def partition_label(name: str, value: Any) -> str:
    """An hour partition's value (hours since 1970) as the hour it stands for."""
    if name.endswith("_hour") and isinstance(value, int):
        return f"{datetime.fromtimestamp(value * 3600, UTC):%Y-%m-%d %H:00}"
    return str(value)


def describe(events: Sequence[Mapping[str, Any]]) -> str:
    operations = Counter(event["operationType"] for event in events)
    collections = {event["ns"]["coll"] for event in events}
    first, last = (
        datetime.fromtimestamp(e["clusterTime"]["$timestamp"]["t"], UTC)
        for e in (events[0], events[-1])
    )
    mix = ", ".join(f"{count:,} {op}s" for op, count in operations.most_common())
    return (
        f"{len(events):,} change events in {len(collections)} collections "
        f"({mix}), {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"
    )


def main() -> int:
    parser = argument_parser(__doc__, events=3000)
    parser.add_argument(
        "--every-combination",
        action="store_true",
        help="write every format x compression x strategy (60 runs) instead of 16",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    events = sample_events(args.events)
    outcomes: list[Outcome] = []
    with open_target(args) as target:
        print(f"writing to {target}")
        print(describe(events))
        client = target.client()
        for run in plan(args.every_combination):
            try:
                writer_id = asyncio.run(write(target, run, events))
            except Exception as exc:  # report it with the rest rather than stop
                outcomes.append(Outcome(run, [], [f"{run.prefix}: writing failed: {exc!r}"]))
                continue
            objects = read_objects(
                client, target.bucket, list_keys(client, target.bucket, run.prefix, writer_id)
            )
            outcomes.append(Outcome(run, objects, check(run, objects, events)))
        iceberg_problems = show_iceberg(target, events)

    print("\nkeys per strategy (JSON Lines, uncompressed):")
    for outcome in outcomes:
        if (
            outcome.run.format is SerializationFormat.JSON
            and outcome.run.compression is Compression.NONE
        ):
            print(render_tree([obj.key for obj in outcome.objects], f"{outcome.run.prefix}/"))

    rows = [
        (
            o.run.format.name,
            o.run.compression.name,
            o.run.strategy.name,
            len(o.objects),
            o.events,
            o.bytes,
            o.bytes / o.events if o.events else 0.0,
            "ok" if not o.problems else "FAILED",
        )
        for o in outcomes
    ]
    print()
    print(render_table(COLUMNS, rows))

    problems = [problem for o in outcomes for problem in o.problems] + iceberg_problems
    elapsed = time.perf_counter() - started
    if problems:
        print(f"\n{len(problems)} problems; the first ones:", file=sys.stderr)
        for problem in problems[:10]:
            print(f"  {problem}", file=sys.stderr)
        return 1
    written = sum(o.events for o in outcomes)
    print(
        f"\nall {len(outcomes)} runs and the Iceberg table verified: {written:,} events written and read back intact "
        f"({elapsed:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
