"""Scaling out: several processes, each consuming its share of one change stream, write to
one bucket and prefix at once, with no coordination between them.

Each process is ``tests/share_writer.py``; it takes its share exactly as the README's
``$match`` stage would (the server's hash is reproduced, and the README block is
evaluated against it here), and stops at each checkpoint until the bucket was read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import pytest
from bson import json_util
from bson.objectid import ObjectId

from rigatoni_s3.testing import S3Endpoint
from tests.helpers import iter_jsonl, list_keys, read_records
from tests.share_writer import (
    MISSING,
    generate_stream,
    hashed_index_key,
    remainder,
    share_of,
)

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "data" / "change_stream.jsonl"
PREFIX = "cdc/events"
SEED = 20250115
MESSAGE_TIMEOUT = 60.0
"""Seconds a consumer may take to its next line before the test gives up on it."""


# -- the server's hash, and the README's stages evaluated with it ---------------------------


def test_hash_is_the_one_the_server_computes() -> None:
    """hashed_index_key gives the server's values: the manual's and the server's self-check."""
    # The manual's $toHashedIndexKey example, and the value the server checks its hash
    # function against at start-up (the element 42).
    assert hashed_index_key("string to hash") == 763543691661428748
    assert hashed_index_key(42) == -944302157085130861
    assert remainder(-7, 3) == -1  # $mod keeps the dividend's sign, hence the recipe's $abs
    assert remainder(7, -3) == 1


def field_of(change: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path``, or MISSING."""
    value: Any = change
    for name in path.split("."):
        if not isinstance(value, Mapping) or name not in value:
            return MISSING
        value = value[name]
    return value


def evaluate(expression: Any, change: Mapping[str, Any]) -> Any:
    """An aggregation expression's value for one change (the operators the recipe uses)."""
    if isinstance(expression, str) and expression.startswith("$"):
        return field_of(change, expression[1:])
    if not isinstance(expression, dict):
        return expression  # a literal
    ((operator, operand),) = expression.items()
    if operator == "$toHashedIndexKey":
        return hashed_index_key(evaluate(operand, change))
    if operator == "$abs":
        return abs(evaluate(operand, change))
    values = [evaluate(item, change) for item in operand]
    if operator == "$mod":
        return remainder(*values)
    if operator == "$eq":
        return values[0] == values[1]
    raise AssertionError(f"the recipe uses {operator}, which this check does not evaluate")


def matches(query: Mapping[str, Any], change: Mapping[str, Any]) -> bool:
    """Whether a ``$match`` query keeps ``change`` (``$expr``, ``$in``, ``$nin``)."""
    for path, condition in query.items():
        if path == "$expr":
            kept = evaluate(condition, change) is True
        else:
            value = field_of(change, path)
            value = None if value is MISSING else value  # as in MongoDB, null matches missing
            ((operator, operand),) = condition.items()
            if operator == "$in":
                kept = value in operand
            elif operator == "$nin":
                kept = value not in operand
            else:
                raise AssertionError(f"the recipe uses {operator}, which this check does not know")
        if not kept:
            return False
    return True


class RecordedShareStream:
    """A change stream opened with a pipeline, played from tests/data/change_stream.jsonl:
    the changes after ``resume_after`` that every ``$match`` stage keeps."""

    def __init__(self, pipeline: list[dict[str, Any]], resume_after: Any) -> None:
        assert all(set(stage) == {"$match"} for stage in pipeline), pipeline
        changes = [json_util.loads(line) for line in RECORDED.read_text().splitlines()]
        if resume_after is not None:
            tokens = [change["_id"] for change in changes]
            changes = changes[tokens.index(resume_after) + 1 :]
        self.changes = [c for c in changes if all(matches(s["$match"], c) for s in pipeline)]

    async def __aenter__(self) -> RecordedShareStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        for change in self.changes:
            yield change


class RecordedShareDatabase:
    async def watch(
        self, pipeline: list[dict[str, Any]], resume_after: Any = None
    ) -> RecordedShareStream:
        return RecordedShareStream(pipeline, resume_after)


class RecordedShareClient:
    """Stands for the README's pymongo client: ``client.shop.watch(pipeline, ...)``."""

    shop = RecordedShareDatabase()


class JsonCheckpoint:
    """Stands for the README's FileCheckpoint: a resume token in a JSON file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def load(self) -> Any:
        return json.loads(self.path.read_text()) if self.path.exists() else None

    def save(self, token: Mapping[str, Any]) -> None:
        self.path.write_text(json.dumps(dict(token)))


SHARE_RECIPE_NAMES = {"client": RecordedShareClient(), "FileCheckpoint": JsonCheckpoint}
"""What the README's scale-out block uses besides rigatoni_s3 (see tests/test_readme.py)."""


def check_share_recipe(names: Mapping[str, Any], client: Any, bucket: str) -> None:
    """The README's stages split a stream into disjoint shares that cover it, the shares
    share_writer takes, and the block wrote its share under its own writer id."""
    hash_share = names["hash_share"]
    recorded = [json_util.loads(line) for line in RECORDED.read_text().splitlines()]
    generated = generate_stream(SEED)
    for n in (1, 2, 3, 4, 7):
        for change in recorded + generated:
            owners = [i for i in range(n) if matches(hash_share(i, n)["$match"], change)]
            assert owners == [share_of(change, n)], (n, change["_id"])
        keyless = {share_of(change, n) for change in generated if "documentKey" not in change}
        assert len(keyless) == 1  # drop, rename, dropDatabase, invalidate: one consumer

    taken = ["orders", "users", "carts"]
    stages = [
        names["namespace_share"](["orders"]),
        names["namespace_share"](["users", "carts"]),
        names["namespace_rest"](taken),
    ]
    for change in generated:
        owners = [n for n, stage in enumerate(stages) if matches(stage["$match"], change)]
        coll = change.get("ns", {}).get("coll")
        assert owners == [0 if coll == "orders" else 1 if coll in taken else 2], change

    i, n = names["i"], names["n"]
    assert names["pipeline"] == [hash_share(i, n)]
    mine = [change for change in recorded if share_of(change, n) == i]
    assert 0 < len(mine) < len(recorded)
    stored = Counter(
        record["resume_token"]["_data"] for _, record in iter_jsonl(client, bucket, "mongodb/")
    )
    assert stored == Counter(change["_id"]["_data"] for change in mine)
    assert {writer_of(key) for key in list_keys(client, bucket, "mongodb/")} == {
        f"share-{i}-of-{n}"
    }
    assert names["checkpoint"].load() == mine[-1]["_id"]


# -- the consumers, each in its own process ------------------------------------------------


@dataclass
class Consumer:
    """One ``share_writer`` process and its share of the stream."""

    share: int
    changes: list[dict[str, Any]]
    process: asyncio.subprocess.Process
    stderr: IO[bytes]
    stderr_path: Path
    writer_id: str = ""
    checkpoints: int = 0
    lagging: int = 0
    """Checkpoints whose durable token was behind the last change written."""

    @cached_property
    def positions(self) -> dict[str, int]:
        """The place of each change in this share, by its resume token."""
        return {change["_id"]["_data"]: n for n, change in enumerate(self.changes)}

    async def receive(self, kind: str | None = None) -> dict[str, Any]:
        """The next line from the process; fails with its stderr if it ended instead."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), MESSAGE_TIMEOUT)
        if not line:
            await self.process.wait()
            pytest.fail(
                f"consumer {self.share} exited {self.process.returncode}:\n"
                + self.stderr_path.read_text(errors="replace")[-4000:]
            )
        message: dict[str, Any] = json.loads(line)
        if kind is not None:
            assert message["kind"] == kind, message
        return message

    async def go_on(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        await self.process.stdin.drain()

    async def stop(self) -> None:
        """Kill the process if it still runs; wait for it either way."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()
        self.stderr.close()


async def start_consumer(
    endpoint: S3Endpoint,
    bucket: str,
    share: int,
    consumers: int,
    fmt: str,
    changes: list[dict[str, Any]],
    tmp_path: Path,
) -> Consumer:
    env = {
        **os.environ,
        "S3_ENDPOINT_URL": endpoint.url,
        "AWS_ACCESS_KEY_ID": endpoint.access_key_id,
        "AWS_SECRET_ACCESS_KEY": endpoint.secret_access_key,
        "AWS_DEFAULT_REGION": endpoint.region,
    }
    stderr_path = tmp_path / f"consumer-{share}.stderr"
    stderr = stderr_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.share_writer",
        *("--bucket", bucket, "--prefix", PREFIX, "--share", f"{share}/{consumers}"),
        *("--seed", str(SEED), "--format", fmt),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        cwd=ROOT,
        env=env,
    )
    return Consumer(share, changes, process, stderr, stderr_path)


@dataclass
class BucketView:
    """What the prefix holds, read object by object as new ones appear.

    An object is read once, when first listed; its ETag must never change afterwards.
    """

    client: Any
    bucket: str
    etags: dict[str, str] = field(default_factory=dict)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def refresh(self) -> None:
        new: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=PREFIX + "/"):
            for obj in page.get("Contents", []):
                key, etag = obj["Key"], obj["ETag"]
                if key.startswith(f"{PREFIX}/_rigatoni_s3/"):
                    continue  # the start-up probes, deleted again
                if key in self.etags:
                    assert self.etags[key] == etag, f"{key} was overwritten"
                    continue
                self.etags[key] = etag
                new.append(key)
        with ThreadPoolExecutor(4) as pool:  # boto3 clients may be shared between threads
            read = pool.map(lambda key: read_records(self.client, self.bucket, key), new)
            self.records.update(zip(new, read, strict=True))

    def tokens(self) -> Counter[str]:
        """How many times each resume token's change is in the bucket now."""
        self.refresh()
        return Counter(
            record["resume_token"]["_data"]
            for records in self.records.values()
            for record in records
        )


def check_durable(consumer: Consumer, message: Mapping[str, Any], view: BucketView) -> None:
    """At a checkpoint, the consumer stopped: its durable token claims only what S3 holds."""
    written, token = message["written"], message["token"]
    position = (
        -1 if token is None else consumer.positions.get(token["_data"], len(consumer.changes))
    )
    assert position < written, f"consumer {consumer.share}: durable token {token} not written"
    if message["flushed"]:
        assert position == written - 1, f"consumer {consumer.share}: flush left events behind"
    present = view.tokens()
    claimed = [change["_id"]["_data"] for change in consumer.changes[: position + 1]]
    missing = [data for data in claimed if not present[data]]
    assert not missing, (
        f"consumer {consumer.share}: durable token {token} claims {len(missing)} changes "
        f"that are not in the bucket, first {missing[0] if missing else None}"
    )
    consumer.checkpoints += 1
    consumer.lagging += position < written - 1


async def follow(consumer: Consumer, view: BucketView) -> dict[str, Any]:
    """Check each checkpoint of ``consumer`` while it waits; its final report."""
    while True:
        message = await consumer.receive()
        if message["kind"] == "closed":
            return message
        assert message["kind"] == "durable", message
        check_durable(consumer, message, view)
        await consumer.go_on()


def writer_of(key: str) -> str:
    """The writer id in an object's file name ``{ms}-{writer_id}-{sequence}.{ext}``."""
    stem = key.rsplit("/", 1)[-1].split(".", 1)[0]
    return stem.split("-", 1)[1].rsplit("-", 1)[0]


def document_key_json(change: Mapping[str, Any]) -> Any:
    """The ``document_key`` column's JSON for a change."""
    key = change.get("documentKey")
    if key is None:
        return None
    value = key["_id"]
    return {"_id": str(value) if isinstance(value, ObjectId) else value}


def read_back(endpoint: S3Endpoint, client: Any, bucket: str, fmt: str) -> list[dict[str, Any]]:
    """Every row under the prefix, read by the format's own reader, not by rigatoni_s3.

    JSON Lines with ``json``; Parquet as one pyarrow dataset with Hive partitioning, whose
    ``collection`` and ``hour`` then come from the object keys.
    """
    if fmt == "json":
        records = [record for _, record in iter_jsonl(client, bucket, PREFIX + "/")]
        return [{**row, "resume_token": row["resume_token"]["_data"]} for row in records]
    import pyarrow as pa
    import pyarrow.dataset as ds
    from pyarrow import fs

    url = urlsplit(endpoint.url)
    filesystem = fs.S3FileSystem(
        access_key=endpoint.access_key_id,
        secret_key=endpoint.secret_access_key,
        region=endpoint.region,
        scheme=url.scheme,
        endpoint_override=url.netloc,
    )
    partitioning = ds.partitioning(
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
    dataset = ds.dataset(
        f"{bucket}/{PREFIX}", filesystem=filesystem, format="parquet", partitioning=partitioning
    )
    rows: list[dict[str, Any]] = dataset.to_table().to_pylist()
    for row in rows:
        for column in ("document_key", "resume_token"):
            row[column] = None if row[column] is None else json.loads(row[column])
        row["resume_token"] = row["resume_token"]["_data"]
    return rows


@pytest.mark.parametrize(("fmt", "consumers"), [("json", 4), ("parquet", 3)])
async def test_consumers_in_separate_processes_share_one_prefix(
    s3_endpoint: S3Endpoint,
    s3_client: Any,
    bucket: str,
    tmp_path: Path,
    fmt: str,
    consumers: int,
) -> None:
    """Processes writing their hash shares of one stream to one prefix at once: every change
    lands once, no object is overwritten, and every durable token is honest when reported."""
    stream = generate_stream(SEED)
    by_token = {change["_id"]["_data"]: change for change in stream}
    shares = [[c for c in stream if share_of(c, consumers) == i] for i in range(consumers)]
    assert all(shares)
    view = BucketView(s3_client, bucket)
    started: list[Consumer] = []
    follows: list[asyncio.Task[dict[str, Any]]] = []
    try:
        for share, changes in enumerate(shares):
            started.append(
                await start_consumer(s3_endpoint, bucket, share, consumers, fmt, changes, tmp_path)
            )
        for consumer in started:
            ready = await consumer.receive("ready")
            assert ready["events"] == len(consumer.changes)
            consumer.writer_id = ready["writer_id"]
        for consumer in started:  # all at once, from the same moment
            await consumer.go_on()
        follows = [asyncio.create_task(follow(consumer, view)) for consumer in started]
        reports = await asyncio.gather(*follows)
        for consumer in started:
            assert await asyncio.wait_for(consumer.process.wait(), MESSAGE_TIMEOUT) == 0
    finally:  # on a failure, the other consumers are killed, not left waiting
        for task in follows:
            task.cancel()
        await asyncio.gather(*follows, return_exceptions=True)
        for consumer in started:
            await consumer.stop()

    # Every consumer was checked more than once, some of them while uploads were pending.
    assert all(consumer.checkpoints >= 2 for consumer in started)
    assert sum(consumer.lagging for consumer in started) > 0

    # Writers and objects: distinct writer ids, each object reported by the one that wrote it.
    view.refresh()
    assert len({consumer.writer_id for consumer in started}) == consumers
    reported = [key for report in reports for key in report["keys"]]
    assert len(reported) == len(set(reported)) == sum(r["objects_written"] for r in reports)
    assert set(reported) == set(view.etags), "objects listed and objects written differ"
    for consumer, report in zip(started, reports, strict=True):
        assert report["events_accepted"] == report["events_uploaded"] == len(consumer.changes)
        assert {writer_of(key) for key in report["keys"]} == {consumer.writer_id}
        share_tokens = {change["_id"]["_data"] for change in consumer.changes}
        for key in report["keys"]:
            assert {r["resume_token"]["_data"] for r in view.records[key]} <= share_tokens, key

    # Partitions are prefixes the writers share; each object sits in its changes' partition.
    writers_by_partition: dict[str, set[str]] = {}
    for key, records in view.records.items():
        partition = key.rsplit("/", 1)[0]
        writers_by_partition.setdefault(partition, set()).add(writer_of(key))
        for record in records:
            change = by_token[record["resume_token"]["_data"]]
            collection = change.get("ns", {}).get("coll", "__HIVE_DEFAULT_PARTITION__")
            hour = change["clusterTime"].as_datetime().hour
            assert partition.endswith(
                f"/collection={collection}/year=2025/month=01/day=15/hour={hour:02d}"
            ), key
    assert max(len(writers) for writers in writers_by_partition.values()) == consumers

    # Read back independently: every change exactly once, as it was.
    rows = read_back(s3_endpoint, s3_client, bucket, fmt)
    assert Counter(row["resume_token"] for row in rows) == Counter(by_token.keys())
    for row in rows:
        change = by_token[row["resume_token"]]
        assert row["operation"] == change["operationType"]
        assert row["collection"] == change.get("ns", {}).get("coll")
        assert row["document_key"] == document_key_json(change)
        if fmt == "parquet":
            assert row["hour"] == change["clusterTime"].as_datetime().hour
