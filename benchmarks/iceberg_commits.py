"""Iceberg commits: how many one destination makes per minute, and what one costs.

Parquet + zstd with Hive keys through S3Destination to the embedded S3 server, committed
to an Iceberg table in a SQL catalog on SQLite (a fresh bucket and catalog per run).
Events come from ``generator.py``; a batch of 1 000 spans several collections and hours,
so it makes several objects. Two scenarios, each row the median of ``--repeat`` runs:

* ``commit loop``: ``write_batch`` then ``flush()``, ``--commits`` times; each flush seals,
  uploads and commits (the background round is kept out with a long ``commit_interval``).
  Commits per minute of wall time, objects per commit, and ``stats().commit_latency``
  against ``stats().upload_latency``: ``commit ≈ uploads`` is commit p50 / upload p50.
* ``steady state``: the same stream written as fast as ``write_batch`` takes it for
  ``--duration`` seconds, then ``close()``, once as plain Parquet + zstd and once with
  Iceberg and ``commit_interval`` = ``--interval``; the clock stops when ``close()``
  returns (everything durable). ``vs plain`` is the Iceberg run's events/s over the plain
  run's of the same round.

Each row also shows the event-loop lag p99 (``measure.LoopLagMonitor``) and the peak RSS
of its measured window; the last line gives the process's ``getrusage`` peak.

    .venv/bin/python benchmarks/iceberg_commits.py [--commits 60] [--batch 1000]
        [--duration 10] [--interval 1] [--repeat 3] [--only loop|steady]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from generator import EventPool, build_pool
from measure import Distribution, LoopLagMonitor, reset_peak_rss, rss_kib, ru_maxrss_kib
from run import _host_line
from worker import _stored_objects

from rigatoni_s3 import S3Destination
from rigatoni_s3.config import IcebergConfig
from rigatoni_s3.stats import DestinationStats, LatencySummary
from rigatoni_s3.testing import EmbeddedS3Server, S3Endpoint

TABLE = "bench.events"
FLUSH_WINDOW = 10
"""The loop's footer compares the first and the last this many flushes."""


def make_config(
    endpoint: S3Endpoint, bucket: str, catalog_dir: str | None, commit_interval: float
) -> Any:
    """Parquet + zstd, Hive keys; with ``catalog_dir``, committed to an Iceberg table there."""
    iceberg = None
    if catalog_dir is not None:
        iceberg = IcebergConfig(
            catalog={"type": "sql", "uri": f"sqlite:///{catalog_dir}/catalog.db"},
            table=TABLE,
            consumer="bench",
            commit_interval=commit_interval,
        )
    return endpoint.config(
        bucket,
        prefix="cdc",
        format="parquet",
        compression="zstd",
        key_strategy="hive_partitioned",
        iceberg=iceberg,
    )


async def measured(
    config: Any, batches: Iterator[list[dict[str, Any]]], step: Callable[..., Any]
) -> dict[str, Any]:
    """Run ``step(destination, batches, flushes)`` in a measured window, then ``close()``."""
    destination = S3Destination(config)
    await destination.start()  # opening the client and the table is a one-off
    monitor = LoopLagMonitor()
    gc.collect()  # not while the ticker runs: a full collection would read as loop lag
    monitor.start()
    await asyncio.sleep(0.01)
    reset_peak_rss()
    flushes: list[float] = []
    start = time.perf_counter()
    try:
        await step(destination, batches, flushes)
        await destination.close()
        wall = time.perf_counter() - start
    finally:
        await monitor.stop()
    stats = destination.stats()
    lag = Distribution.of(monitor.lags)
    return {
        "wall_s": wall,
        "stats": stats,
        "flushes": flushes,
        "lag_p99_ms": lag.p99_ms if lag else 0.0,
        "peak_rss_mib": rss_kib()[1] / 1024,
    }


async def flush_each(
    destination: S3Destination, batches: Iterator[list[dict[str, Any]]], flushes: list[float]
) -> None:
    """Write a batch, then flush: one commit per batch."""
    for batch in batches:
        start = time.perf_counter()
        await destination.write_batch(batch)
        await destination.flush()
        flushes.append(time.perf_counter() - start)


def for_seconds(seconds: float) -> Callable[..., Any]:
    async def write(
        destination: S3Destination, batches: Iterator[list[dict[str, Any]]], _: list[float]
    ) -> None:
        """Write batches as fast as the destination takes them, for ``seconds``."""
        deadline = time.perf_counter() + seconds
        for batch in batches:
            await destination.write_batch(batch)
            if time.perf_counter() >= deadline:
                return

    return write


def one_run(
    endpoint: S3Endpoint,
    batches: Iterator[list[dict[str, Any]]],
    step: Callable[..., Any],
    *,
    iceberg: bool,
    commit_interval: float = 3600.0,
) -> dict[str, Any]:
    """A fresh bucket (and catalog); the result of ``step``; the bucket emptied and deleted."""
    bucket = f"bench-{uuid.uuid4().hex[:16]}"
    with tempfile.TemporaryDirectory() as catalog_dir:
        config = make_config(endpoint, bucket, catalog_dir if iceberg else None, commit_interval)
        result = asyncio.run(measured(config, batches, step))
    result["stored"] = _stored_objects(endpoint, bucket)
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs of what a row shows."""

    def median(value: Callable[[dict[str, Any]], float | None]) -> float | None:
        values = [v for v in map(value, runs) if v is not None]
        return statistics.median(values) if values else None

    def latency(name: str, field: str) -> Callable[[dict[str, Any]], float | None]:
        def get(run: dict[str, Any]) -> float | None:
            summary: LatencySummary | None = getattr(run["stats"], name)
            return None if summary is None else float(getattr(summary, field)) * 1000

        return get

    def stats(run: dict[str, Any]) -> DestinationStats:
        result: DestinationStats = run["stats"]
        return result

    def in_uploads(run: dict[str, Any]) -> float | None:
        commit, upload = stats(run).commit_latency, stats(run).upload_latency
        return None if commit is None or upload is None else commit.p50 / upload.p50

    rates = [stats(run).events_committed or stats(run).events_uploaded for run in runs]
    rates = [events / run["wall_s"] for events, run in zip(rates, runs, strict=True)]
    row = {
        "events_per_s": statistics.median(rates),
        "events_per_s_min": min(rates),
        "events_per_s_max": max(rates),
        "commits": median(lambda r: stats(r).commits),
        "commits_per_min": median(lambda r: stats(r).commits / r["wall_s"] * 60),
        "objects": median(lambda r: stats(r).objects_written),
        "objects_per_commit": median(
            lambda r: stats(r).objects_committed / stats(r).commits if stats(r).commits else None
        ),
        "commit_p50_ms": median(latency("commit_latency", "p50")),
        "commit_p99_ms": median(latency("commit_latency", "p99")),
        "upload_p50_ms": median(latency("upload_latency", "p50")),
        "upload_p99_ms": median(latency("upload_latency", "p99")),
        "commit_in_uploads": median(in_uploads),
        "bytes_per_object": median(
            lambda r: r["stored"]["stored_bytes"] / max(1, r["stored"]["objects"])
        ),
        "lag_p99_ms": median(lambda r: r["lag_p99_ms"]),
        "peak_rss_mib": median(lambda r: r["peak_rss_mib"]),
    }
    firsts = [r["flushes"][:FLUSH_WINDOW] for r in runs if len(r["flushes"]) >= 2 * FLUSH_WINDOW]
    lasts = [r["flushes"][-FLUSH_WINDOW:] for r in runs if len(r["flushes"]) >= 2 * FLUSH_WINDOW]
    if firsts:
        row["flush_first_ms"] = statistics.median(statistics.median(f) for f in firsts) * 1000
        row["flush_last_ms"] = statistics.median(statistics.median(f) for f in lasts) * 1000
    return row


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pair(row: dict[str, Any], name: str) -> str:
    p50, p99 = row.get(f"{name}_p50_ms"), row.get(f"{name}_p99_ms")
    return "-" if p50 is None else f"{p50:.0f} / {p99:.0f}"


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    label_width = max(12, *map(len, rows))
    columns: list[tuple[str, int, Callable[[dict[str, Any]], str]]] = [
        ("events/s", 9, lambda r: _num(r["events_per_s"])),
        ("(min-max)", 13, lambda r: f"{r['events_per_s_min'] / 1000:.1f}-{r['events_per_s_max'] / 1000:.1f}k"),
        ("vs plain", 8, lambda r: "-" if r.get("vs_plain") is None else f"{r['vs_plain']:.2f}x"),
        ("commits", 7, lambda r: _num(r["commits"])),
        ("commits/min", 11, lambda r: _num(r["commits_per_min"])),
        ("objs", 5, lambda r: _num(r["objects"])),
        ("objs/commit", 11, lambda r: _num(r["objects_per_commit"], 1)),
        ("KB/obj", 6, lambda r: _num(r["bytes_per_object"] / 1000)),
        ("commit ms p50/p99", 17, lambda r: _pair(r, "commit")),
        ("upload ms p50/p99", 17, lambda r: _pair(r, "upload")),
        ("commit ≈ uploads", 16, lambda r: _num(r["commit_in_uploads"], 1)),
        ("lag p99 ms", 10, lambda r: _num(r["lag_p99_ms"], 1)),
        ("peak RSS MiB", 12, lambda r: _num(r["peak_rss_mib"])),
    ]  # fmt: skip
    print()
    print(f"{'run':<{label_width}}  " + "  ".join(f"{name:>{width}}" for name, width, _ in columns))
    for label, row in rows.items():
        cells = "  ".join(f"{cell(row):>{width}}" for _, width, cell in columns)
        print(f"{label:<{label_width}}  {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["loop", "steady"], help="one of the two scenarios")
    parser.add_argument("--commits", type=int, default=60, help="flushes in the commit loop")
    parser.add_argument("--batch", type=int, default=1000, help="events per write_batch")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of steady state")
    parser.add_argument("--interval", type=float, default=1.0, help="commit_interval, steady")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pool: EventPool = build_pool()
    gc.collect()
    gc.freeze()  # the pool lives for the whole run: keep the collector from walking it
    rows: dict[str, dict[str, Any]] = {}
    loop_row: dict[str, Any] = {}
    with EmbeddedS3Server() as endpoint:
        print(f"S3: moto server at {endpoint.url}, {_host_line()}")
        print(f"Parquet + zstd, Hive keys, {args.batch} events per write_batch")
        if args.only in (None, "loop"):
            runs = [
                one_run(
                    endpoint,
                    pool.batches(args.commits * args.batch, args.batch),
                    flush_each,
                    iceberg=True,
                )
                for _ in range(args.repeat)
            ]
            rows[f"commit loop ({args.commits} flushes)"] = loop_row = summarize(runs)
        if args.only in (None, "steady"):
            plain: list[dict[str, Any]] = []
            iceberg: list[dict[str, Any]] = []
            volume = 10**9  # the clock, not the pool, ends the writing
            for _ in range(args.repeat):  # alternated, so drift on the machine hits both
                plain.append(
                    one_run(
                        endpoint,
                        pool.batches(volume, args.batch),
                        for_seconds(args.duration),
                        iceberg=False,
                    )
                )
                iceberg.append(
                    one_run(
                        endpoint,
                        pool.batches(volume, args.batch),
                        for_seconds(args.duration),
                        iceberg=True,
                        commit_interval=args.interval,
                    )
                )
            ratios = [
                (i["stats"].events_committed / i["wall_s"])
                / (p["stats"].events_uploaded / p["wall_s"])
                for p, i in zip(plain, iceberg, strict=True)
            ]
            rows[f"plain, {args.duration:g}s"] = summarize(plain)
            rows[f"iceberg every {args.interval:g}s, {args.duration:g}s"] = row = summarize(iceberg)
            row["vs_plain"] = statistics.median(ratios)
            row["vs_plain_range"] = (min(ratios), max(ratios))
    print_table(rows)
    print()
    if "flush_first_ms" in loop_row:
        print(
            f"commit loop: write_batch + flush p50 {loop_row['flush_first_ms']:.0f} ms over the "
            f"first {FLUSH_WINDOW} commits, {loop_row['flush_last_ms']:.0f} ms over the last "
            f"{FLUSH_WINDOW}"
        )
    for label, row in rows.items():
        if "vs_plain_range" in row:
            low, high = row["vs_plain_range"]
            print(f"{label}: vs plain per round {low:.2f}x-{high:.2f}x")
    print(f"process peak RSS (getrusage): {ru_maxrss_kib() / 1024:.0f} MiB")
    print(
        "events/s: events durable (committed with Iceberg) / wall time until close() returned; "
        "commit and upload latencies from stats(); lag: how late a 1 ms ticker wakes"
    )


if __name__ == "__main__":
    main()
