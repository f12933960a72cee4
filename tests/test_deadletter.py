"""Dead letters: objects saved to disk when S3 is out of reach, and their replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rigatoni_s3
from rigatoni_s3._encoder import EncodedObject
from rigatoni_s3.deadletter import load_dead_letters, save_dead_letter
from rigatoni_s3.testing import S3Endpoint


async def test_replay_applies_the_configs_object_options(
    s3_endpoint: S3Endpoint, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    """A replayed object gets the same encryption, KMS key, storage class, tags and
    checksum as the destination would have given it."""
    body = b'{"operation":"insert"}\n'
    save_dead_letter(
        tmp_path,
        bucket,
        "replayed/one.jsonl",
        EncodedObject(body, "application/x-ndjson", None, 1, len(body)),
        "test",
    )
    config = s3_endpoint.config(
        bucket,
        create_bucket=False,
        server_side_encryption="aws:kms",
        sse_kms_key_id="alias/cdc-events",
        storage_class="STANDARD_IA",
        object_tags={"team": "data"},
        checksum_algorithm="SHA256",
    )
    result = await rigatoni_s3.replay_dead_letters(tmp_path, config)
    assert (result.uploaded, result.failed) == (1, ())
    head = s3_client.head_object(Bucket=bucket, Key="replayed/one.jsonl", ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/cdc-events")
    assert head["StorageClass"] == "STANDARD_IA"
    assert "ChecksumSHA256" in head
    tags = s3_client.get_object_tagging(Bucket=bucket, Key="replayed/one.jsonl")["TagSet"]
    assert tags == [{"Key": "team", "Value": "data"}]
    assert load_dead_letters(tmp_path) == []
