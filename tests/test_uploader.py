"""S3Uploader against a real S3 server: conditional writes, conflicts, multipart uploads."""

from __future__ import annotations

import os
from typing import Any

import aioboto3
import pytest

from rigatoni_s3 import S3Destination
from rigatoni_s3._encoder import EncodedObject
from rigatoni_s3._retry import RetryPolicy
from rigatoni_s3._uploader import S3Uploader, client_options
from rigatoni_s3.errors import ObjectConflictError, RetriesExhaustedError
from rigatoni_s3.testing import S3Endpoint
from tests.faultproxy import FaultProxy
from tests.helpers import MakeConfig, ids_in, iter_jsonl, list_keys, raw_event

MiB = 1024 * 1024


async def test_different_content_at_the_key_is_a_conflict(
    s3_endpoint: S3Endpoint, bucket: str, s3_client: Any
) -> None:
    """A key that already holds other bytes is never overwritten; the error says so."""
    s3_client.put_object(Bucket=bucket, Key="taken.jsonl", Body=b"someone else's data\n")
    config = s3_endpoint.config(bucket, create_bucket=False)
    async with aioboto3.Session().client("s3", **client_options(config)) as client:
        uploader = S3Uploader(
            client,
            bucket,
            RetryPolicy(1, 0.01, 0.02).run,
            multipart_threshold=MiB * 64,
            part_size=5 * MiB,
        )
        obj = EncodedObject(b"our data\n", "application/x-ndjson", None, 1, 9)
        with pytest.raises(ObjectConflictError) as info:
            await uploader.write("taken.jsonl", obj)
        assert (info.value.key, info.value.events) == ("taken.jsonl", 1)
        same = EncodedObject(b"someone else's data\n", "application/x-ndjson", None, 1, 20)
        assert await uploader.write("taken.jsonl", same) == 2  # refused, then HEAD finds our bytes
    assert (
        s3_client.get_object(Bucket=bucket, Key="taken.jsonl")["Body"].read()
        == b"someone else's data\n"
    )


def big_events(count: int, size: int) -> list[dict[str, Any]]:
    """Events whose documents hold ``size`` bytes of text that compresses poorly."""
    events = []
    for n in range(count):
        event = raw_event(n)
        seed = os.urandom(size // 2).hex()
        event["fullDocument"]["blob"] = seed[:size]
        events.append(event)
    return events


async def test_large_objects_use_multipart_with_5_mib_parts(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """An object above the threshold goes up in 5 MiB parts and reads back whole."""
    events = big_events(3, 4 * MiB)
    config = make_config(multipart_threshold=5 * MiB, multipart_part_size=5 * MiB)
    async with S3Destination(config) as dest:
        await dest.write_batch(events)
    [key] = list_keys(s3_client, bucket)
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # 12 MiB in three parts
    records = [r for _, r in iter_jsonl(s3_client, bucket)]
    assert [r["full_document"]["blob"] for r in records] == [
        e["fullDocument"]["blob"] for e in events
    ]
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_failed_multipart_upload_is_aborted(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """A part that keeps failing aborts the upload: no orphan parts are left, events are kept."""
    config = make_proxied_config(
        multipart_threshold=5 * MiB, multipart_part_size=5 * MiB, max_retries=0
    )
    async with S3Destination(config) as dest:
        await dest.write_batch(big_events(3, 4 * MiB))
        fault_proxy.fail_next(["forward", "500"])  # create succeeds, the first part fails
        with pytest.raises(RetriesExhaustedError):
            await dest.flush()
        assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        await dest.flush()
    assert sorted(ids_in(s3_client, bucket)) == [0, 1, 2]


async def test_a_16_mib_document_is_written(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """Documents at MongoDB's 16 MiB limit go through like any other."""
    [event] = big_events(1, 16 * MiB - 1024)
    async with S3Destination(make_config()) as dest:
        await dest.write_batch([event])
    [(_, record)] = list(iter_jsonl(s3_client, bucket))
    assert record["full_document"]["blob"] == event["fullDocument"]["blob"]
