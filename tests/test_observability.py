"""stats(), health_check(), structured logs, and S3 object options."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from rigatoni_s3 import Column, S3Config, S3Destination
from rigatoni_s3.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ConfigError,
    RejectedEventsError,
)
from rigatoni_s3.testing import S3Endpoint
from tests.faultproxy import FaultProxy
from tests.helpers import MakeConfig, list_keys, raw_events


async def test_stats_count_events_bytes_objects_and_retries(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy
) -> None:
    """The snapshot adds up: accepted = uploaded, retries as injected, latency measured."""
    async with S3Destination(make_proxied_config(compression="gzip", max_batch_events=50)) as dest:
        fault_proxy.fail_next(["503", "503"])
        events = raw_events(200)
        events[7] = {"bad": "event"}
        with pytest.raises(RejectedEventsError):
            await dest.write_batch(events)
        before = dest.stats()
        assert before.events_accepted == 199
        assert before.events_rejected == 1
        await dest.flush()
        stats = dest.stats()
    assert stats.events_uploaded == 199
    assert stats.events_buffered == 0
    assert stats.bytes_buffered == 0
    assert stats.objects_written == 4
    assert stats.retries == 2
    assert stats.failures == 0
    assert 0 < stats.bytes_uploaded < stats.bytes_uploaded_raw  # gzip made it smaller
    assert stats.upload_latency is not None
    assert stats.upload_latency.count == 4
    assert 0 < stats.upload_latency.p50 <= stats.upload_latency.max


async def test_health_check_passes_for_a_reachable_bucket(make_config: MakeConfig) -> None:
    """HeadBucket succeeds when the bucket exists."""
    async with S3Destination(make_config()) as dest:
        await dest.health_check()


async def test_health_check_names_a_missing_bucket(s3_endpoint: S3Endpoint) -> None:
    """A missing bucket gives BucketNotFoundError that says what to fix."""
    config = s3_endpoint.config(
        "absent-bucket-for-health", create_bucket=False, check_conditional_writes=False
    )
    dest = S3Destination(config)
    with pytest.raises(BucketNotFoundError, match="Create the bucket"):
        await dest.health_check()
    await dest.close()


async def test_health_check_maps_403_to_access_denied(
    make_proxied_config: MakeConfig, fault_proxy: FaultProxy
) -> None:
    """A 403 from HeadBucket becomes AccessDeniedError naming the permissions to grant."""
    dest = S3Destination(make_proxied_config(check_conditional_writes=False))
    await dest.start()
    fault_proxy.fail_next(["403"])
    with pytest.raises(AccessDeniedError, match="s3:ListBucket"):
        await dest.health_check()
    await dest.close()


async def test_object_options_are_applied(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """Encryption, storage class, tags and a SHA-256 checksum reach the stored object."""
    config = make_config(
        server_side_encryption="AES256",
        storage_class="STANDARD_IA",
        object_tags={"team": "data", "source": "mongodb"},
        checksum_algorithm="SHA256",
    )
    async with S3Destination(config) as dest:
        await dest.write_batch(raw_events(10))
    [key] = list_keys(s3_client, bucket)
    head = s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["StorageClass"] == "STANDARD_IA"
    assert "ChecksumSHA256" in head
    tags = s3_client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"team": "data", "source": "mongodb"}


async def test_content_md5_mode_uploads(
    make_config: MakeConfig, s3_client: Any, bucket: str
) -> None:
    """checksum_algorithm='MD5' sends Content-MD5, which the server verifies."""
    async with S3Destination(make_config(checksum_algorithm="MD5")) as dest:
        await dest.write_batch(raw_events(10))
    assert len(list_keys(s3_client, bucket)) == 1


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"server_side_encryption": "rot13"}, "server_side_encryption"),
        ({"sse_kms_key_id": "key-1"}, "sse_kms_key_id"),
        ({"storage_class": "COLD"}, "storage_class"),
        ({"object_tags": {f"k{n}": "v" for n in range(11)}}, "object_tags"),
        ({"object_tags": {"": "v"}}, "object_tags"),
        ({"checksum_algorithm": "CRC16"}, "checksum_algorithm"),
        ({"checksum_algorithm": "CRC32C"}, "checksum_algorithm"),  # needs awscrt
    ],
)
def test_object_options_are_validated(options: dict[str, Any], field: str) -> None:
    """Invalid S3 object options fail when the config is built, naming the field."""
    with pytest.raises(ConfigError, match=field):
        S3Config(bucket="my-bucket", region="us-east-1", **options)


async def test_logs_carry_structured_fields(
    make_config: MakeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Each written object is logged with bucket, key, events and bytes as extra fields."""
    caplog.set_level(logging.DEBUG, logger="rigatoni_s3")
    async with S3Destination(make_config()) as dest:
        await dest.write_batch(raw_events(5))
    written = [r for r in caplog.records if r.getMessage() == "object written"]
    assert len(written) == 1
    record: Any = written[0]
    assert record.name == "rigatoni_s3.destination"
    assert (record.events, record.bucket) == (5, dest.config.bucket)
    assert record.key.endswith(".jsonl")
    assert record.bytes == record.raw_bytes > 0


async def test_prometheus_collector_exposes_the_stats(make_config: MakeConfig) -> None:
    """A scrape shows the same counters as stats(), labelled with bucket and writer id."""
    from prometheus_client import CollectorRegistry, generate_latest

    from rigatoni_s3.metrics import PrometheusCollector

    registry = CollectorRegistry()
    names_as_numbers = {"name": Column("full_document.name", "int64")}  # "user 7": a mismatch
    async with S3Destination(make_config(columns=names_as_numbers)) as dest:
        registry.register(PrometheusCollector(dest))
        await dest.write_batch(raw_events(30))
        await dest.flush()
        text = generate_latest(registry).decode()
    labels = f'bucket="{dest.config.bucket}",writer_id="{dest.writer_id}"'
    assert f"rigatoni_s3_events_uploaded_total{{{labels}}} 30.0" in text
    assert f"rigatoni_s3_objects_written_total{{{labels}}} 1.0" in text
    assert f"rigatoni_s3_events_buffered{{{labels}}} 0.0" in text
    assert f"rigatoni_s3_type_mismatches_total{{{labels}}} 30.0" in text
    assert "rigatoni_s3_upload_latency_p99_seconds" in text
