"""Dead letters: objects that could not be uploaded, saved on local disk for later.

With ``dead_letter_dir`` set, an object whose upload exhausts its retries is written
there as two files named by a digest of its key:

- ``<digest>.object``: the exact object bytes that would have been uploaded;
- ``<digest>.json``: ``bucket``, ``key``, ``content_type``, ``content_encoding``,
  ``events``, ``error`` and ``saved_at``.

Both are fsynced and renamed into place, the sidecar last, so a sidecar always has
its complete object. :func:`replay_dead_letters` (or ``python -m rigatoni_s3 replay
DIR``) uploads them with the same conditional write as the destination and deletes
each pair once it is in S3, so running a replay twice never writes anything twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aioboto3
import attrs

from rigatoni_s3._encoder import EncodedObject
from rigatoni_s3._retry import RetryPolicy
from rigatoni_s3._uploader import S3Uploader, open_client
from rigatoni_s3.config import S3Config
from rigatoni_s3.errors import UploadError

log = logging.getLogger(__name__)


@attrs.frozen
class DeadLetter:
    """One saved object and its metadata."""

    object_path: Path
    bucket: str
    key: str
    content_type: str
    content_encoding: str | None
    events: int
    error: str


@attrs.frozen
class ReplayResult:
    """What a replay did: objects uploaded, and the errors of those still on disk."""

    uploaded: int
    failed: tuple[UploadError, ...]


def save_dead_letter(
    directory: Path, bucket: str, key: str, obj: EncodedObject, error: str
) -> Path:
    """Write an object and its sidecar durably into ``directory``; returns the sidecar path."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()[:40]
    sidecar = {
        "bucket": bucket,
        "key": key,
        "content_type": obj.content_type,
        "content_encoding": obj.content_encoding,
        "events": obj.events,
        "error": error,
        "saved_at": datetime.now(UTC).isoformat(),
    }
    _write_durably(directory / f"{stem}.object", obj.body)
    sidecar_path = directory / f"{stem}.json"
    _write_durably(sidecar_path, json.dumps(sidecar, indent=2).encode())
    return sidecar_path


def load_dead_letters(directory: Path) -> list[DeadLetter]:
    """Every complete dead letter in ``directory``, oldest file first."""
    letters = []
    for sidecar in sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime):
        meta: dict[str, Any] = json.loads(sidecar.read_text())
        letters.append(
            DeadLetter(
                object_path=sidecar.with_suffix(".object"),
                bucket=meta["bucket"],
                key=meta["key"],
                content_type=meta["content_type"],
                content_encoding=meta.get("content_encoding"),
                events=meta["events"],
                error=meta.get("error", ""),
            )
        )
    return letters


async def replay_dead_letters(
    directory: str | Path, config: S3Config, *, session: aioboto3.Session | None = None
) -> ReplayResult:
    """Upload every dead letter in ``directory``; each is deleted once it is in S3.

    ``config`` supplies the endpoint, region, credentials and retry settings, and the
    object options every object of the destination carries (encryption, KMS key,
    storage class, tags, checksum); each object goes to the bucket and key recorded
    in its sidecar.
    """
    directory = Path(directory)
    retry = RetryPolicy(config.max_retries, config.retry_base_delay, config.retry_max_delay)
    uploaded, failed = 0, []
    session = session or aioboto3.Session()
    async with open_client(session, config) as client:
        for letter in load_dead_letters(directory):
            uploader = S3Uploader.for_config(client, letter.bucket, retry.run, config)
            body = await asyncio.to_thread(letter.object_path.read_bytes)
            obj = EncodedObject(
                body, letter.content_type, letter.content_encoding, letter.events, len(body)
            )
            try:
                await uploader.write(letter.key, obj)
            except UploadError as error:
                failed.append(error)
                continue
            await asyncio.to_thread(_remove, letter)
            uploaded += 1
            log.info(
                "dead letter replayed",
                extra={"bucket": letter.bucket, "key": letter.key, "events": letter.events},
            )
    return ReplayResult(uploaded, tuple(failed))


def _remove(letter: DeadLetter) -> None:
    letter.object_path.with_suffix(".json").unlink()  # the sidecar first: no orphan sidecars
    letter.object_path.unlink()


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
