"""One consumer of a change stream split among several processes (tests/test_scale_out.py).

The README's recipe gives consumer ``i`` of ``n`` the changes whose document key hashes
to ``i`` (``$toHashedIndexKey`` of ``documentKey._id``, remainder by ``n``). Here the hash
is computed the way the server computes it, so this process takes exactly the share a
``$match`` would give it from one generated stream, and writes it to S3::

    python -m tests.share_writer --bucket B --prefix P --share 1/4 --seed 7 --format json

The server comes from ``S3_ENDPOINT_URL`` and ``AWS_*``. The process talks to its parent
in JSON lines: on stdout a ``ready`` line, then a ``durable`` line at each checkpoint and
a ``closed`` line at the end; after ``ready`` and after every ``durable`` line it waits for
a line on stdin before going on, so the parent can read the bucket while this process is
stopped. End of stdin (the parent is gone) ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import random
import struct
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from rigatoni_s3 import (
    Compression,
    KeyGenerationStrategy,
    S3Destination,
    SerializationFormat,
)
from rigatoni_s3.testing import S3Endpoint

STREAM_START = datetime(2025, 1, 15, 9, 50, tzinfo=UTC)
COLLECTIONS = ("orders", "users", "carts")
FORMATS = {
    "json": (SerializationFormat.JSON, Compression.GZIP),
    "parquet": (SerializationFormat.PARQUET, Compression.ZSTD),
}


class _Missing:
    """A field the change does not have, which ``$toHashedIndexKey`` hashes like null."""


MISSING = _Missing()

# BSON types as the server's hash orders them (canonical types), for the values keys take here.
_NULL, _NUMBER, _STRING, _OBJECT_ID, _BOOL = 5, 10, 15, 35, 40


def hashed_index_key(value: Any) -> int:
    """``$toHashedIndexKey`` of ``value``: the hash a hashed index stores, a signed 64-bit int.

    The server feeds MD5 with the seed (0), the value's canonical BSON type and the value's
    bytes (numbers as a little-endian int64), and reads the first 8 bytes of the digest as a
    little-endian integer. Covers the key types used here; others raise TypeError.
    """
    if value is None or value is MISSING:
        canonical, payload = _NULL, b""
    elif isinstance(value, bool):
        canonical, payload = _BOOL, b"\x01" if value else b"\x00"
    elif isinstance(value, int):
        canonical, payload = _NUMBER, struct.pack("<q", value)
    elif isinstance(value, str):
        text = value.encode()
        canonical, payload = _STRING, struct.pack("<i", len(text) + 1) + text + b"\x00"
    elif isinstance(value, ObjectId):
        canonical, payload = _OBJECT_ID, value.binary
    else:
        raise TypeError(f"no hash for a {type(value).__name__} here")
    digest = hashlib.md5(struct.pack("<ii", 0, canonical) + payload).digest()
    hashed: int = struct.unpack("<q", digest[:8])[0]
    return hashed


def remainder(dividend: int, divisor: int) -> int:
    """``$mod``: the remainder takes the sign of the dividend (Python's ``%`` takes the divisor's)."""
    magnitude = abs(dividend) % abs(divisor)
    return -magnitude if dividend < 0 else magnitude


def share_of(change: Mapping[str, Any], n: int) -> int:
    """The consumer of ``n`` that the recipe's ``$match`` hands ``change`` to."""
    document_key = change.get("documentKey")
    key = document_key.get("_id", MISSING) if isinstance(document_key, Mapping) else MISSING
    return abs(remainder(hashed_index_key(key), n))


def generate_stream(seed: int, count: int = 600) -> list[dict[str, Any]]:
    """One change stream as pymongo decodes it: changes to a few hundred documents in three
    collections over two and a half hours, with a drop, a rename, a dropDatabase and, last, an
    invalidate, none of which has a ``documentKey``."""
    rng = random.Random(seed)
    keys: list[Any] = [ObjectId(rng.randbytes(12)) for _ in range(150)]
    keys += list(range(1, 40)) + [f"sku-{n}" for n in range(20)]
    keyless = {count // 4: "drop", count // 2: "rename", 3 * count // 4: "dropDatabase"}
    stream: list[dict[str, Any]] = []
    for n in range(count):
        when = STREAM_START + timedelta(seconds=15 * n)
        change: dict[str, Any] = {
            "_id": {"_data": f"82{int(when.timestamp()):08X}{n:06X}2B042C0100296E5A1004"},
            "clusterTime": Timestamp(int(when.timestamp()), 1 + n % 3),
            "wallTime": when.replace(tzinfo=None),
            "ns": {"db": "shop", "coll": rng.choices(COLLECTIONS, (6, 3, 1))[0]},
        }
        operation = keyless.get(n, "invalidate" if n == count - 1 else None)
        if operation is None:
            key = rng.choice(keys)
            operation = rng.choice(("insert", "insert", "update", "replace", "delete"))
            change["documentKey"] = {"_id": key}
            if operation == "update":
                change["updateDescription"] = {
                    "updatedFields": {"qty": rng.randint(1, 9)},
                    "removedFields": [],
                    "truncatedArrays": [],
                }
            if operation in ("insert", "replace", "update"):
                change["fullDocument"] = {"_id": key, "n": n, "qty": rng.randint(1, 9)}
        elif operation == "rename":
            change["to"] = {"db": "shop", "coll": "orders_old"}
        elif operation == "dropDatabase":
            change["ns"] = {"db": "shop"}
        elif operation == "invalidate":
            del change["ns"]
        change["operationType"] = operation
        stream.append(change)
    return stream


def report(kind: str, **fields: Any) -> None:
    """One JSON line to the parent."""
    print(json.dumps({"kind": kind, **fields}), flush=True)


def wait_for_parent() -> None:
    """Block until the parent answers, event loop included: while the parent reads the
    bucket, this process starts no upload and settles none."""
    if not sys.stdin.readline():
        os._exit(2)  # the parent is gone: stop at once, as a killed consumer would


class WrittenKeys(logging.Handler):
    """The key of every object the destination reports written (its DEBUG log)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.keys: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "object written":
            self.keys.append(record.__dict__["key"])  # an `extra=` field of the record


async def consume(args: argparse.Namespace) -> None:
    """Write this process's share in batches of random sizes, checkpointing now and then."""
    i, n = (int(part) for part in args.share.split("/"))
    mine = [change for change in generate_stream(args.seed) if share_of(change, n) == i]
    rng = random.Random(f"{args.seed}/{i}")
    endpoint = S3Endpoint.from_env()
    assert endpoint is not None, "S3_ENDPOINT_URL is not set"
    fmt, compression = FORMATS[args.format]
    written_keys = WrittenKeys()
    to_stderr = logging.StreamHandler()
    to_stderr.setLevel(logging.WARNING)  # retries and failures, for a failing test to show
    library_log = logging.getLogger("rigatoni_s3")
    library_log.addHandler(written_keys)
    library_log.addHandler(to_stderr)
    library_log.setLevel(logging.DEBUG)
    config = endpoint.config(
        args.bucket,
        create_bucket=False,
        prefix=args.prefix,
        format=fmt,
        compression=compression,
        key_strategy=KeyGenerationStrategy.HIVE_PARTITIONED,
        # One share named, the next left to the random default: the recipe allows both.
        writer_id=f"share-{i}-of-{n}" if i % 2 == 0 else None,
        max_batch_events=rng.randint(2, 12),  # objects go up between checkpoints
        retry_base_delay=0.01,
        retry_max_delay=0.05,
    )
    raw = rng.random() < 0.5  # the driver's raw BSON, or decoded documents

    async with S3Destination(config) as destination:  # started: the probe write is done
        report("ready", writer_id=destination.writer_id, events=len(mine), raw=raw)
        wait_for_parent()

        def checkpoint(written: int, flushed: bool) -> None:
            token = destination.durable_resume_token
            report(
                "durable",
                token=None if token is None else dict(token),
                written=written,
                flushed=flushed,
            )
            wait_for_parent()

        written = 0
        while written < len(mine):
            batch = mine[written : written + rng.choice((1, 2, 3, rng.randint(4, 30)))]
            await destination.write_batch(
                [RawBSONDocument(bson.encode(change)) for change in batch] if raw else batch
            )
            written += len(batch)
            roll = rng.random()
            if roll < 0.25:
                await destination.flush()
                checkpoint(written, flushed=True)
            elif roll < 0.6:
                await asyncio.sleep(rng.choice((0, 0, 0.01, 0.05)))  # let some uploads finish
                checkpoint(written, flushed=False)
        await destination.flush()
        checkpoint(written, flushed=True)
    stats = destination.stats()
    report(
        "closed",
        keys=written_keys.keys,
        objects_written=stats.objects_written,
        events_accepted=stats.events_accepted,
        events_uploaded=stats.events_uploaded,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--share", required=True, metavar="I/N")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--format", choices=sorted(FORMATS), default="json")
    asyncio.run(consume(parser.parse_args()))


if __name__ == "__main__":
    main()
