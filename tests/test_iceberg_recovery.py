"""Iceberg under failure: killed consumers, concurrent committers, a catalog that goes away.

The consumers that die or run side by side are processes of their own
(:mod:`tests.iceberg_worker`); every one is waited for, or killed, before a test ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rigatoni_s3 import S3Destination
from rigatoni_s3.config import IcebergConfig
from rigatoni_s3.errors import CommitError, UndeliveredError
from rigatoni_s3.iceberg import find_orphans
from rigatoni_s3.testing import S3Endpoint
from tests.helpers import list_keys, raw_event
from tests.test_iceberg import IcebergConfigs, ids_in, open_table

ROOT = Path(__file__).resolve().parent.parent


def start_worker(**options: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.iceberg_worker", json.dumps(options)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(worker: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str, str]:
    """Wait for ``worker`` (killing it if it overstays); its exit code, stdout, stderr."""
    try:
        out, err = worker.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        out, err = worker.communicate()
        pytest.fail(f"worker ran longer than {timeout} s\n{err}")
    return worker.returncode, out, err


def run_worker(**options: Any) -> dict[str, Any]:
    code, out, err = finish(start_worker(**options))
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def test_a_killed_consumer_restarts_from_the_committed_token(
    s3_endpoint: S3Endpoint, bucket: str, catalog_uri: str, s3_client: Any
) -> None:
    """os._exit mid-stream, then a restart from committed_resume_token: every event once."""
    options = {
        "endpoint": s3_endpoint.url,
        "bucket": bucket,
        "catalog": catalog_uri,
        "consumer": "shop",
        "events": 600,
        "collections": ["users", "orders"],
    }
    crashed = finish(start_worker(**options, crash_after=330, flush_every=5, commit_interval=3600))
    assert crashed[0] == 17, crashed[2]
    table = open_table(s3_endpoint, catalog_uri)
    committed = ids_in(table)
    assert set(committed.values()) == {1}
    written = len(list_keys(s3_client, bucket, "events/users")) + len(
        list_keys(s3_client, bucket, "events/orders")
    )
    assert written > len(list(table.scan().plan_files()))  # uploaded, never committed

    resumed = run_worker(**options)
    assert resumed["start"] == len(committed) == 250  # right after the committed token
    table.refresh()
    assert ids_in(table) == Counter(range(600))

    config = s3_endpoint.config(
        bucket,
        create_bucket=False,
        prefix="events",
        format="parquet",
        iceberg=IcebergConfig(catalog={"type": "sql", "uri": catalog_uri}, table="cdc.events"),
    )
    orphans = asyncio.run(find_orphans(config, older_than=0))
    referenced = {task.file.file_path for task in table.scan().plan_files()}
    assert orphans
    assert not {f"s3://{bucket}/{key}" for key in orphans} & referenced
    assert len(orphans) + len(referenced) == len(
        list_keys(s3_client, bucket, "events/users")
    ) + len(list_keys(s3_client, bucket, "events/orders"))

    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "rigatoni_s3",
            "iceberg-orphans",
            "--bucket",
            bucket,
            "--prefix",
            "events",
            "--table",
            "cdc.events",
            "--catalog",
            "type=sql",
            "--catalog",
            f"uri={catalog_uri}",
            "--older-than",
            "0",
            "--region",
            s3_endpoint.region,
            "--endpoint-url",
            s3_endpoint.url,
            "--force-path-style",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "AWS_ACCESS_KEY_ID": s3_endpoint.access_key_id,
            "AWS_SECRET_ACCESS_KEY": s3_endpoint.secret_access_key,
        },
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [f"s3://{bucket}/{key}" for key in orphans]


def test_three_consumers_commit_to_one_table_at_once(
    s3_endpoint: S3Endpoint, bucket: str, catalog_uri: str
) -> None:
    """Concurrent commits conflict, are refreshed and retried: none is lost."""
    common = {"endpoint": s3_endpoint.url, "bucket": bucket, "flush_every": 1}
    run_worker(**common, catalog=catalog_uri, consumer="setup", events=1, collections=["setup"])
    workers = [
        start_worker(
            **common,
            catalog=f"{catalog_uri}?timeout=30",
            consumer=f"c{n}",
            events=200,
            collections=[f"coll{n}"],
        )
        for n in range(3)
    ]
    try:
        results = []
        for worker in workers:
            code, out, err = finish(worker)
            assert code == 0, err
            results.append(json.loads(out))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    table = open_table(s3_endpoint, catalog_uri)
    rows = table.scan(selected_fields=("collection", "document_key")).to_arrow().to_pylist()
    seen = Counter((row["collection"], json.loads(row["document_key"])["_id"]) for row in rows)
    assert seen == Counter(
        {("setup", 0): 1} | {(f"coll{n}", i): 1 for n in range(3) for i in range(200)}
    )
    snapshots = table.snapshots()
    assert len(snapshots) == 1 + sum(result["commits"] for result in results)
    assert [result["commits"] for result in results] == [8, 8, 8]  # one per flush
    tokens = {
        key.removeprefix("rigatoni-s3.resume-token."): json.loads(value)
        for key, value in table.properties.items()
        if key.startswith("rigatoni-s3.resume-token.")
    }  # every consumer's own, none overwritten by a concurrent commit
    assert tokens == {
        "setup": {"_data": "8263000000000000", "consumer": "setup"},
        **{f"c{n}": {"_data": "8263000000000199", "consumer": f"c{n}"} for n in range(3)},
    }


async def test_a_catalog_down_for_a_while_loses_nothing(
    make_iceberg_config: IcebergConfigs, s3_endpoint: S3Endpoint, catalog_uri: str, tmp_path: Path
) -> None:
    """While the catalog is locked, flush() raises CommitError; once back, all commits once."""
    config = make_iceberg_config(
        iceberg={
            "catalog": {"type": "sql", "uri": f"{catalog_uri}?timeout=0.05"},
            "commit_interval": 3600,
        },
        max_retries=2,
    )
    async with S3Destination(config) as destination:
        await destination.write_batch([raw_event(n) for n in range(100)])
        await destination.flush()
        lock = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # every catalog request now fails: database is locked
        try:
            await destination.write_batch([raw_event(n) for n in range(100, 200)])
            with pytest.raises(CommitError) as caught:
                await destination.flush()
            assert caught.value.attempts == 3
            assert (caught.value.objects, caught.value.events) == (1, 100)
            await destination.write_batch([raw_event(n) for n in range(200, 300)])
            assert destination.durable_resume_token == raw_event(99)["_id"]
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        await destination.flush()
        assert destination.durable_resume_token == raw_event(299)["_id"]
        stats = destination.stats()
    assert (stats.commits, stats.objects_committed, stats.commit_retries) == (2, 3, 2)
    table = open_table(s3_endpoint, catalog_uri)
    assert ids_in(table) == Counter(range(300))


async def test_close_with_the_catalog_down_leaves_the_rest_to_a_restart(
    make_iceberg_config: IcebergConfigs, s3_endpoint: S3Endpoint, catalog_uri: str, tmp_path: Path
) -> None:
    """close() names what stayed outside the table; a restart from the token writes it once."""
    config = make_iceberg_config(
        iceberg={"catalog": {"type": "sql", "uri": f"{catalog_uri}?timeout=0.05"}},
        max_retries=1,
    )
    destination = S3Destination(config)
    await destination.write_batch([raw_event(n) for n in range(50)])
    await destination.flush()
    await destination.write_batch([raw_event(n) for n in range(50, 120)])
    lock = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(
            UndeliveredError, match=r"in S3 but not in Iceberg table cdc\.events"
        ) as caught:
            await destination.close()
        assert (caught.value.events, caught.value.objects) == (70, 1)
        assert isinstance(caught.value.__cause__, CommitError)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    async with S3Destination(config) as restarted:
        token = await restarted.committed_resume_token()
        assert token == raw_event(49)["_id"]
        await restarted.write_batch([raw_event(n) for n in range(50, 120)])
    assert ids_in(open_table(s3_endpoint, catalog_uri)) == Counter(range(120))


async def test_a_commit_that_cannot_succeed_fails_at_once(
    make_iceberg_config: IcebergConfigs, s3_endpoint: S3Endpoint, catalog_uri: str
) -> None:
    """A table changed under the writer so that its objects no longer fit: no retries, one
    CommitError; the objects stay pending and commit once the table fits again."""
    config = make_iceberg_config(iceberg={"commit_interval": 3600}, max_retries=3)
    async with S3Destination(config) as destination:
        await destination.write_batch([raw_event(n) for n in range(50)])
        await destination.flush()
        table = open_table(s3_endpoint, catalog_uri)
        with table.update_schema() as update:
            update.rename_column("cluster_time", "cluster_time_renamed")
        await destination.write_batch([raw_event(n) for n in range(50, 100)])
        with pytest.raises(CommitError) as caught:
            await destination.flush()
        assert caught.value.attempts == 1
        assert isinstance(caught.value.__cause__, KeyError)
        assert (caught.value.objects, caught.value.events) == (1, 50)
        assert destination.stats().commit_retries == 0
        assert destination.durable_resume_token == raw_event(49)["_id"]
        table.refresh()
        with table.update_schema() as update:
            update.rename_column("cluster_time_renamed", "cluster_time")
        await destination.flush()
        assert destination.durable_resume_token == raw_event(99)["_id"]
        assert destination.stats().commits == 2
    assert ids_in(open_table(s3_endpoint, catalog_uri)) == Counter(range(100))
