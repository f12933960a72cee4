"""Typed columns: what they cost to write, and what they save a query.

Two measurements, on the generator's events (BSON types put back, as in ``bsonjson.py``):

* ``costs``: µs per event of reading the typed values out of decoded events and out of
  raw BSON, and of ``Encoder.prepare`` with and without the columns (dicts, and raw BSON
  with the core that ``RIGATONI_S3_NO_EXTENSIONS`` selects). Min of ``--repeat`` runs on
  one thread, so load on the machine inflates the numbers less.
* ``query``: the events written as Parquet + zstd with Hive keys through S3Destination to
  the embedded S3 server, downloaded, then one DuckDB filter asked twice: on a typed column
  and on the same field in the JSON document. Rows must agree; reported are the median
  wall time of ``--repeat`` runs (a fresh connection each) and the bytes DuckDB read from
  the files (its ``io.total_bytes_read`` profiling metric).

    .venv/bin/python benchmarks/typed_columns.py [--events 100000] [--repeat 7] [--only costs|query]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import duckdb
from bson import Timestamp
from bson.raw_bson import RawBSONDocument
from bsonjson import bsonify
from generator import build_pool

from rigatoni_s3 import Column, KeyGenerationStrategy, S3Destination
from rigatoni_s3._bsonjson import NATIVE
from rigatoni_s3._encoder import Encoder
from rigatoni_s3._projection import Projection
from rigatoni_s3.compression import codec_for
from rigatoni_s3.config import Compression, SerializationFormat
from rigatoni_s3.events import fields_of
from rigatoni_s3.formats import serializer_for
from rigatoni_s3.testing import EmbeddedS3Server

COLUMNS = {
    "status": Column("full_document.status", "string"),
    "placed_at": Column("full_document.placed_at", "timestamp"),
    "subtotal": Column("full_document.totals.subtotal", "decimal(12,2)"),
    "customer_id": Column("full_document.customer_id", "string"),
}
"""Four fields of the orders (the other collections leave them null)."""

BATCH = 1000
HIVE = "hive_partitioning = true, hive_types = {'collection': VARCHAR, 'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER}"
QUERIES = {
    "typed column": "SELECT count(*), sum(subtotal) FROM {source} WHERE status = 'refunded'",
    "JSON column": (
        "SELECT count(*), sum(CAST(full_document ->> '$.totals.subtotal' AS DECIMAL(12,2))) "
        "FROM {source} WHERE full_document ->> '$.status' = 'refunded'"
    ),
}
"""One question asked of the typed column and of the JSON document."""


def events(count: int) -> list[dict[str, Any]]:
    """``count`` decoded change events with BSON types, cycling through the pool."""
    pool = build_pool(min(count, 20_000))
    out = []
    for batch in pool.batches(count, BATCH):
        for event in batch:
            event = bsonify(event)
            if not isinstance(event["clusterTime"], Timestamp):
                seconds = int(event["clusterTime"].replace(tzinfo=UTC).timestamp())
                event["clusterTime"] = Timestamp(seconds, 1)
            out.append(event)
    return out


def best(step: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def costs(count: int, repeat: int) -> dict[str, float]:
    """µs per event of each step, typed columns or not."""
    decoded = events(count)
    raws = [bson.encode(event) for event in decoded]
    fields = [fields_of(event) for event in decoded]
    projection = Projection(COLUMNS)
    now = datetime.now(UTC)

    def encoder(columns: dict[str, Column]) -> Encoder:
        return Encoder(
            serializer_for(SerializationFormat.PARQUET, Compression.NONE, columns),
            codec_for(Compression.NONE),
            KeyGenerationStrategy.HIVE_PARTITIONED,
        )

    def prepare(enc: Encoder, batch_of: Sequence[Any]) -> Callable[[], None]:
        def step() -> None:
            for start in range(0, len(batch_of), BATCH):
                enc.prepare(batch_of[start : start + BATCH], now)

        return step

    raw_documents = [RawBSONDocument(raw) for raw in raws]
    steps: dict[str, Callable[[], object]] = {
        "typed values, decoded events": lambda: projection.values_of(fields),
        "typed values, raw BSON": lambda: projection.values_of_raw(raws),
        "bson.decode (for scale)": lambda: [bson.decode(raw) for raw in raws],
        "prepare, decoded, no columns": prepare(encoder({}), decoded),
        "prepare, decoded, 4 columns": prepare(encoder(COLUMNS), decoded),
        "prepare, raw, no columns": prepare(encoder({}), raw_documents),
        "prepare, raw, 4 columns": prepare(encoder(COLUMNS), raw_documents),
    }
    return {name: best(step, repeat) / count * 1e6 for name, step in steps.items()}


async def write(endpoint: Any, bucket: str, decoded: list[dict[str, Any]]) -> None:
    config = endpoint.config(
        bucket,
        prefix="cdc",
        format="parquet",
        compression="zstd",
        key_strategy="hive_partitioned",
        columns=COLUMNS,
        max_batch_events=50_000,
    )
    async with S3Destination(config) as destination:
        for start in range(0, len(decoded), BATCH):
            await destination.write_batch(decoded[start : start + BATCH])


def profiled(query: str, directory: Path) -> tuple[Any, float, int]:
    """Rows, seconds and bytes read of one run of ``query`` on a fresh connection."""
    output = directory / "profile.json"
    connection = duckdb.connect()
    try:
        connection.execute("PRAGMA enable_profiling = 'json'")
        connection.execute(f"PRAGMA profiling_output = '{output}'")
        start = time.perf_counter()
        rows = connection.execute(query).fetchall()
        seconds = time.perf_counter() - start
    finally:
        connection.close()
    profile = json.loads(output.read_text())
    return rows, seconds, int(profile["io"]["total_bytes_read"])


def query(count: int, repeat: int) -> dict[str, Any]:
    """Rows, median seconds and bytes read of each query, over ``count`` events written."""
    decoded = events(count)
    with EmbeddedS3Server() as endpoint, tempfile.TemporaryDirectory() as scratch:
        asyncio.run(write(endpoint, "typed-bench", decoded))
        client = endpoint.client()
        root = Path(scratch)
        files = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="typed-bench"):
            for item in page.get("Contents", []):
                path = root / item["Key"]
                path.parent.mkdir(parents=True, exist_ok=True)
                client.download_file("typed-bench", item["Key"], str(path))
                files += 1
        source = f"read_parquet('{root}/cdc/**/*.parquet', {HIVE})"
        size = sum(path.stat().st_size for path in root.rglob("*.parquet"))
        results: dict[str, Any] = {"files": files, "parquet_bytes": size}
        answers = []
        for name, text in QUERIES.items():
            runs = [profiled(text.format(source=source), root) for _ in range(repeat)]
            answers.append(runs[0][0])
            results[name] = {
                "rows": runs[0][0],
                "median_seconds": statistics.median(run[1] for run in runs),
                "bytes_read": statistics.median(run[2] for run in runs),
            }
        if answers[0] != answers[1]:
            raise AssertionError(f"the queries disagree: {answers}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["costs", "query"], help="one of the two measurements")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    args.what = [args.only] if args.only else ["costs", "query"]
    if "costs" in args.what:
        print(f"µs per event ({'compiled' if NATIVE else 'pure-Python'} core for raw BSON):")
        for name, micros in costs(min(args.events, 20_000), args.repeat).items():
            print(f"  {name:<32} {micros:7.2f}")
    if "query" in args.what:
        results = query(args.events, args.repeat)
        print(
            f"DuckDB over {args.events} events in {results['files']} Parquet files "
            f"({results['parquet_bytes'] / 1e6:.1f} MB):"
        )
        for name in QUERIES:
            result = results[name]
            print(
                f"  {name:<13} {result['median_seconds'] * 1000:8.1f} ms  "
                f"{result['bytes_read'] / 1e6:8.2f} MB read  rows {result['rows']}"
            )


if __name__ == "__main__":
    main()
