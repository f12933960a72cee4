"""S3Uploader against a real S3 server: conditional writes, conflicts, multipart uploads."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import threading
import zlib
from types import SimpleNamespace
from typing import Any

import aioboto3
import pytest

from rigatoni_s3 import S3Config, S3Destination, _uploader
from rigatoni_s3._encoder import EncodedObject
from rigatoni_s3._retry import RetryPolicy
from rigatoni_s3._uploader import (
    UNREAD_ENDPOINT_PARAMS,
    S3Uploader,
    client_options,
    computed_checksum,
    object_options,
    open_client,
    unread_params,
)
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
    async with open_client(aioboto3.Session(), config) as client:
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


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        (None, lambda body: zlib.crc32(body).to_bytes(4, "big")),
        ("SHA1", lambda body: hashlib.sha1(body).digest()),
        ("SHA256", lambda body: hashlib.sha256(body).digest()),
    ],
)
async def test_checksums_are_computed_off_the_event_loop(
    make_config: MakeConfig,
    s3_client: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    algorithm: str | None,
    digest: Any,
) -> None:
    """Each object carries the checksum of its bytes (CRC32 by default), hashed in a
    worker thread, and the server stores the one it verified."""
    threads: list[threading.Thread] = []
    computed = _uploader.body_checksum

    def recording(name: str, body: bytes) -> dict[str, str]:
        threads.append(threading.current_thread())
        return computed(name, body)

    monkeypatch.setattr(_uploader, "body_checksum", recording)
    async with S3Destination(make_config(checksum_algorithm=algorithm)) as dest:
        await dest.write_batch([raw_event(n) for n in range(20)])
        loop_thread = threading.current_thread()
    [key] = list_keys(s3_client, bucket)
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    head = s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    name = algorithm or "CRC32"
    assert head[f"Checksum{name}"] == _b64(digest(body))
    assert threads
    assert loop_thread not in threads


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        (None, lambda part: zlib.crc32(part).to_bytes(4, "big")),
        ("SHA256", lambda part: hashlib.sha256(part).digest()),
    ],
)
async def test_multipart_parts_carry_their_checksums(
    s3_endpoint: S3Endpoint, bucket: str, s3_client: Any, algorithm: str | None, digest: Any
) -> None:
    """Every part is sent with its own checksum, computed here (CRC32 by default, as
    botocore would), and the object reads back whole."""
    body = os.urandom(11 * MiB)
    sent: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sent.append(dict(params))

    config = s3_endpoint.config(bucket, create_bucket=False, checksum_algorithm=algorithm)
    async with open_client(aioboto3.Session(), config) as client:
        client.meta.events.register("provide-client-params.s3.UploadPart", record)
        uploader = S3Uploader(
            client,
            bucket,
            RetryPolicy(1, 0.01, 0.02).run,
            multipart_threshold=5 * MiB,
            part_size=5 * MiB,
            options=object_options(config),
            checksum=computed_checksum(config),
        )
        obj = EncodedObject(body, "application/octet-stream", None, 1, len(body))
        await uploader.write("parts.bin", obj)
    parts = [body[start : start + 5 * MiB] for start in range(0, len(body), 5 * MiB)]
    sent.sort(key=lambda params: int(params["PartNumber"]))  # sent concurrently
    assert [params["PartNumber"] for params in sent] == [1, 2, 3]
    name = f"Checksum{algorithm or 'CRC32'}"
    assert [params[name] for params in sent] == [_b64(digest(part)) for part in parts]
    assert s3_client.get_object(Bucket=bucket, Key="parts.bin")["Body"].read() == body


class _Stopped(Exception):
    """Raised before a request leaves, once it is signed."""


@pytest.mark.parametrize(
    ("endpoint", "signed"),
    [(None, False), ("https://s3.example.test", False), ("http://127.0.0.1:9", True)],
)
async def test_payload_is_hashed_for_the_signature_only_without_tls(
    endpoint: str | None, signed: bool
) -> None:
    """The signed request carries our checksum as a plain header. Over HTTPS that header
    and TLS guard the body, so it is not hashed again for the signature (nor sent in
    aws-chunked encoding); over plain HTTP botocore still signs the payload, the only
    guard against tampering there. The request is stopped before it is sent."""
    config = S3Config(
        bucket="my-bucket",
        region="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="key",
        aws_secret_access_key="secret",
    )
    body = b"some rows\n" * 1000
    sent: list[Any] = []

    def stop(request: Any, **_: Any) -> None:
        sent.append(request)
        raise _Stopped

    async with open_client(aioboto3.Session(), config) as client:
        client.meta.events.register("before-send.s3.PutObject", stop)
        with pytest.raises(_Stopped):
            await client.put_object(
                Bucket="my-bucket", Key="k", Body=body, **_uploader.body_checksum("CRC32", body)
            )
    [request] = sent
    headers = {
        name.lower(): value.decode() if isinstance(value, bytes) else value
        for name, value in request.headers.items()
    }
    assert headers["x-amz-checksum-crc32"] == _b64(zlib.crc32(body).to_bytes(4, "big"))
    assert "aws-chunked" not in str(headers.get("content-encoding", ""))
    expected = hashlib.sha256(body).hexdigest() if signed else "UNSIGNED-PAYLOAD"
    assert headers["x-amz-content-sha256"] == expected


@pytest.mark.parametrize(
    ("endpoint", "path_style"),
    [(None, False), (None, True), ("https://s3.example.test", True), ("http://127.0.0.1:9", False)],
)
async def test_endpoint_is_resolved_once_per_bucket_to_the_same_url(
    endpoint: str | None, path_style: bool
) -> None:
    """Every key goes where botocore alone would send it, but the endpoint ruleset is
    evaluated once for the bucket, not again for each new key. Requests are stopped
    before they are sent."""
    config = S3Config(
        bucket="my-bucket",
        region="eu-west-1",
        endpoint_url=endpoint,
        force_path_style=path_style,
        aws_access_key_id="key",
        aws_secret_access_key="secret",
    )
    keys = ["shop/orders/1.jsonl", "shop/orders/2.jsonl", "shop/users/3 + 4.jsonl"]

    async def urls(client: Any) -> list[str]:
        sent: list[str] = []

        def stop(request: Any, **_: Any) -> None:
            sent.append(request.url)
            raise _Stopped

        client.meta.events.register("before-send.s3.PutObject", stop)
        for key in keys:
            with pytest.raises(_Stopped):
                await client.put_object(Bucket="my-bucket", Key=key, Body=b"rows\n")
        return sent

    session = aioboto3.Session()
    async with session.client("s3", **client_options(config)) as plain:
        expected = await urls(plain)
    evaluated: list[dict[str, Any]] = []
    async with open_client(session, config) as client:
        ruleset = client._ruleset_resolver._provider.ruleset
        evaluate = ruleset.evaluate

        def counting(params: dict[str, Any]) -> Any:
            evaluated.append(dict(params))
            return evaluate(params)

        ruleset.evaluate = counting
        assert await urls(client) == expected
    assert len(evaluated) == 1
    assert evaluated[0]["Bucket"] == "my-bucket"
    assert not UNREAD_ENDPOINT_PARAMS & evaluated[0].keys()


def test_unread_params_are_those_no_rule_names() -> None:
    """A parameter counts as read when a rule refers to it or names it in a template."""
    ruleset = {
        "parameters": {"Bucket": {}, "Region": {}, "Key": {}, "Prefix": {}, "CopySource": {}},
        "rules": [
            {
                "conditions": [{"fn": "isSet", "argv": [{"ref": "Region"}]}],
                "rules": [{"endpoint": {"url": "https://{Bucket}.example/{Key#tail}"}}],
            }
        ],
    }
    assert unread_params(ruleset) == {"Prefix", "CopySource"}


@pytest.mark.parametrize(("key_is_read", "kept"), [(False, False), (True, True)])
def test_only_parameters_the_ruleset_never_reads_are_dropped(key_is_read: bool, kept: bool) -> None:
    """``Key`` is still passed to a ruleset that reads it; ``Prefix``, unread, is not."""
    url = "https://{Bucket}.example/{Key}" if key_is_read else "https://{Bucket}.example"
    ruleset = {
        "parameters": {"Bucket": {}, "Key": {}, "Prefix": {}},
        "rules": [{"endpoint": {"url": url}}],
    }
    seen: list[dict[str, Any]] = []
    provider = SimpleNamespace(resolve_endpoint=lambda **params: seen.append(params))
    client = SimpleNamespace(
        _ruleset_resolver=SimpleNamespace(_provider=provider),
        _loader=SimpleNamespace(load_service_model=lambda *_, **__: ruleset),
        meta=SimpleNamespace(service_model=SimpleNamespace(api_version="2006-03-01")),
    )
    asyncio.run(_uploader._resolve_endpoints_per_bucket(client))
    provider.resolve_endpoint(Bucket="b", Key="k", Prefix="p")
    assert seen == [{"Bucket": "b", "Key": "k"} if kept else {"Bucket": "b"}]


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
