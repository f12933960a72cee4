"""Dead letters: objects saved to disk when S3 is out of reach, and their replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import rigatoni_s3
from rigatoni_s3 import S3Destination
from rigatoni_s3._encoder import EncodedObject
from rigatoni_s3.deadletter import load_dead_letters, replay_dead_letters, save_dead_letter
from rigatoni_s3.errors import DeadLetteredError, RetriesExhaustedError
from rigatoni_s3.testing import S3Endpoint
from tests.faultproxy import FaultProxy
from tests.helpers import MakeConfig, ids_in, list_keys, raw_event, raw_events


def save_one(directory: Path, bucket: str, key: str) -> bytes:
    """Save a one-event JSON Lines object as a dead letter; returns its body."""
    body = b'{"operation":"insert"}\n'
    save_dead_letter(
        directory,
        bucket,
        key,
        EncodedObject(body, "application/x-ndjson", None, 1, len(body)),
        "test",
    )
    return body


async def test_replay_applies_the_configs_object_options(
    s3_endpoint: S3Endpoint, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    """A replayed object gets the same encryption, KMS key, storage class, tags and
    checksum as the destination would have given it."""
    save_one(tmp_path, bucket, "replayed/one.jsonl")
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


async def test_dead_letters_are_saved_and_replayed(
    make_proxied_config: MakeConfig,
    fault_proxy: FaultProxy,
    s3_endpoint: S3Endpoint,
    s3_client: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    """With the server unreachable, objects land in dead_letter_dir; a replay uploads them once."""
    config = make_proxied_config(dead_letter_dir=tmp_path, max_retries=1, max_batch_events=25)
    async with S3Destination(config) as dest:
        fault_proxy.down = True
        await dest.write_batch(raw_events(100))
        with pytest.raises(DeadLetteredError) as info:
            await dest.flush()
        assert info.value.events == 100
        assert isinstance(info.value.__cause__, RetriesExhaustedError)
        assert dest.durable_resume_token == raw_event(99)["_id"]
        fault_proxy.down = False
    letters = load_dead_letters(tmp_path)
    assert len(letters) == 4
    assert sum(letter.events for letter in letters) == 100
    sidecar = json.loads(letters[0].object_path.with_suffix(".json").read_text())
    assert set(sidecar) >= {"bucket", "key", "content_type", "error"}
    assert list_keys(s3_client, bucket) == []

    result = await replay_dead_letters(tmp_path, s3_endpoint.config(bucket, create_bucket=False))
    assert (result.uploaded, result.failed) == (4, ())
    assert list(tmp_path.iterdir()) == []
    assert sorted(ids_in(s3_client, bucket)) == list(range(100))
    assert sorted(list_keys(s3_client, bucket)) == sorted(letter.key for letter in letters)


def test_replay_command_line(
    s3_endpoint: S3Endpoint, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    """python -m rigatoni_s3 replay DIR uploads saved objects and reports the count."""

    body = save_one(tmp_path, bucket, "cli/one.jsonl")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": s3_endpoint.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3_endpoint.secret_access_key,
    }
    command = [
        sys.executable,
        "-m",
        "rigatoni_s3",
        "replay",
        str(tmp_path),
        "--region",
        s3_endpoint.region,
        "--endpoint-url",
        s3_endpoint.url,
        "--force-path-style",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "uploaded 1 object(s)" in done.stdout
    assert s3_client.get_object(Bucket=bucket, Key="cli/one.jsonl")["Body"].read() == body
