"""A consumer in its own process, for the Iceberg tests that kill or run several of them.

``python -m tests.iceberg_worker '<json>'`` with ``endpoint``, ``bucket``, ``catalog``
(the SQL catalog URI), ``consumer``, ``events`` (the stream's length), ``collections``
and optionally ``commit_interval``, ``flush_every`` (batches between flushes) and
``crash_after`` (events accepted before ``os._exit``).

It resumes the way a change-stream consumer does: right after the event whose token
``committed_resume_token()`` returns (the tokens of :func:`tests.helpers.raw_event`
hold the event's number). It writes the rest of the stream in batches of 25, and
prints its stats as JSON when it finishes. With ``crash_after`` it dies instead, once
some objects are uploaded that no commit holds yet.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import attrs

from rigatoni_s3 import S3Destination
from rigatoni_s3.config import IcebergConfig
from rigatoni_s3.testing import S3Endpoint
from tests.helpers import raw_event

BATCH = 25


def position_after(token: Any) -> int:
    """The number of the first event after ``token`` (0 for no token)."""
    return 0 if token is None else int(token["_data"][4:]) + 1


async def run(options: dict[str, Any]) -> dict[str, Any]:
    endpoint = S3Endpoint(options["endpoint"])
    consumer = options["consumer"]
    config = endpoint.config(
        options["bucket"],
        create_bucket=False,
        prefix="events",
        format="parquet",
        max_batch_events=40,
        retry_base_delay=0.01,
        retry_max_delay=0.1,
        max_retries=8,
        iceberg=IcebergConfig(
            catalog={"type": "sql", "uri": options["catalog"]},
            table="cdc.events",
            consumer=consumer,
            commit_interval=options.get("commit_interval", 0.2),
        ),
    )
    collections = options["collections"]
    crash_after = options.get("crash_after")
    flush_every = options.get("flush_every")
    async with S3Destination(config) as destination:
        start = position_after(await destination.committed_resume_token())
        for first in range(start, options["events"], BATCH):
            last = min(first + BATCH, options["events"])
            batch = [raw_event(n, collections[n % len(collections)]) for n in range(first, last)]
            for event in batch:
                event["_id"]["consumer"] = consumer  # tokens of different consumers differ
            await destination.write_batch(batch)
            if flush_every is not None and (first // BATCH + 1) % flush_every == 0:
                await destination.flush()
            if crash_after is not None and last - start >= crash_after:
                await _until_uncommitted_objects(destination)
                os._exit(17)  # no flush, no close: what a killed process leaves
        await destination.flush()
        stats = destination.stats()
    return {"start": start, **attrs.asdict(stats, filter=lambda a, _: "latency" not in a.name)}


async def _until_uncommitted_objects(destination: S3Destination) -> None:
    """Wait until some uploaded objects wait for a commit (at most a few seconds)."""
    for _ in range(500):
        stats = destination.stats()
        if stats.objects_written > stats.objects_committed and stats.objects_committed > 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no uncommitted objects before the crash: {destination.stats()}")


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))
