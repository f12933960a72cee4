"""The upload stage: aioboto3 calls and nothing else.

Every request goes through the ``run`` function it is given (the retry policy),
so this module knows which requests to make, not how often to try them. It is
also the one boundary where botocore's and aiohttp's errors become
:mod:`rigatoni_s3.errors` types: every public method raises those, and callers
never see the retry policy's internal ``GaveUp``.

Writes are conditional (``If-None-Match: *``): S3 refuses to replace an existing
key. When a retry meets its own earlier attempt (the first request landed but its
response was lost), the key already holds exactly our bytes and the write counts
as done; different bytes mean another writer used the key, which is an error.

Hashing a body is done off the event loop. Each object, and each part of a large one,
carries a checksum this module computes in a worker thread (CRC32 unless
``checksum_algorithm`` names SHA1 or SHA256), sent as a header, so botocore does not
compute it on the loop. Over HTTPS that header and TLS guard the body, so the payload
is not hashed again for the signature either (botocore's own default there), nor sent
in aws-chunked encoding. Over plain HTTP botocore still signs the payload, as it must:
there only the signature protects the body from tampering.

Objects above ``multipart_threshold`` go up in parts, several at once; each part
is sliced from the body only while it is being sent (botocore does not take
memoryviews), so an object is never held twice. A failed multipart upload is
aborted so no orphan parts are left behind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

from aiobotocore.config import AioConfig
from botocore import exceptions as boto_errors

from rigatoni_s3._encoder import EncodedObject
from rigatoni_s3._retry import GaveUp, error_code, is_transient
from rigatoni_s3.config import S3Config
from rigatoni_s3.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ObjectConflictError,
    RetriesExhaustedError,
    UploadError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

PART_CONCURRENCY = 4
"""Parts of one multipart upload sent at once; memory per upload is at most this many parts."""


class Runner(Protocol):
    """Runs one request, retrying as it sees fit; returns the result and the attempts made."""

    async def __call__(
        self, operation: Callable[[], Awaitable[T]], *, describe: str = ""
    ) -> tuple[T, int]: ...


def client_options(config: S3Config) -> dict[str, Any]:
    """aioboto3 client arguments. botocore's own retries are off: ``_retry`` owns that policy."""
    return {
        "region_name": config.region,
        "endpoint_url": config.endpoint_url,
        "aws_access_key_id": config.aws_access_key_id,
        "aws_secret_access_key": config.aws_secret_access_key,
        "aws_session_token": config.aws_session_token,
        "config": AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=config.request_timeout,
            read_timeout=config.request_timeout,
            # uploads at once, each with up to PART_CONCURRENCY parts in flight
            max_pool_connections=config.max_concurrent_uploads * PART_CONCURRENCY,
            s3=_s3_options(config),
            # With MD5 we send Content-MD5 ourselves and no newer checksum on top.
            request_checksum_calculation=(
                "when_required" if config.checksum_algorithm == "MD5" else "when_supported"
            ),
        ),
    }


@contextlib.asynccontextmanager
async def open_client(session: Any, config: S3Config) -> AsyncIterator[Any]:
    """An aioboto3 S3 client for ``config``, which resolves its endpoint once per bucket."""
    async with session.client("s3", **client_options(config)) as client:
        await _resolve_endpoints_per_bucket(client)
        yield client


UNREAD_ENDPOINT_PARAMS = frozenset({"Key", "Prefix", "CopySource"})
"""Parameters S3's endpoint ruleset declares but, so far, never reads."""


async def _resolve_endpoints_per_bucket(client: Any) -> None:
    """Let botocore's endpoint cache serve every key of a bucket.

    botocore caches the endpoint ruleset's answer keyed by all of its parameters, and
    the ruleset declares ``Key``: each new object key misses the cache and the whole
    ruleset is evaluated again, about 0.16 ms of the event loop per request. Dropping
    the parameters no rule reads cannot change the answer; botocore releases after
    boto/botocore#3692 drop them themselves, and aiobotocore pins an older one. The
    ruleset loaded is checked first, and the client's private attributes are read
    defensively: where either says no, the client is left as botocore made it. Reading
    the ruleset takes a few milliseconds, in a worker thread.
    """
    try:
        provider = client._ruleset_resolver._provider
        ruleset = client._loader.load_service_model(
            "s3", "endpoint-rule-set-1", api_version=client.meta.service_model.api_version
        )
        resolve = provider.resolve_endpoint
    except Exception:  # another botocore layout: keep its behaviour
        return
    unread = await asyncio.to_thread(unread_params, ruleset) & UNREAD_ENDPOINT_PARAMS
    if not unread:
        return

    def resolve_endpoint(**params: Any) -> Any:
        for name in unread:
            params.pop(name, None)
        return resolve(**params)

    provider.resolve_endpoint = resolve_endpoint


_TEMPLATE_REF = re.compile(r"\{([^{}#]+)(?:#[^{}]*)?\}")
"""A parameter named inside a ruleset string: ``{Bucket}`` or ``{bucketArn#region}``."""


def unread_params(ruleset: dict[str, Any]) -> frozenset[str]:
    """The declared parameters of an endpoint ruleset that none of its rules reads,
    by ``{"ref": name}`` or in a ``{name}`` template."""
    read: set[str] = set()
    pending: list[Any] = [ruleset.get("rules", [])]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("ref")
            if isinstance(ref, str):
                read.add(ref)
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, str):
            read.update(match.group(1) for match in _TEMPLATE_REF.finditer(node))
    return frozenset(ruleset.get("parameters", {})) - read


def _s3_options(config: S3Config) -> dict[str, Any] | None:
    options: dict[str, Any] = {}
    if config.force_path_style:
        options["addressing_style"] = "path"
    if config.endpoint_url is None or config.endpoint_url.startswith("https://"):
        # A checksum header (ours, or botocore's trailer) and TLS guard the body; a
        # payload hash in the signature would only hash it again on the event loop.
        options["payload_signing_enabled"] = False
    return options or None


COMPUTED_CHECKSUMS = ("CRC32", "SHA1", "SHA256", "MD5")
"""Checksums the uploader computes itself, off the event loop (MD5 as Content-MD5)."""


def computed_checksum(config: S3Config) -> str | None:
    """The checksum the uploader computes for ``config``'s objects; None leaves it to
    botocore (CRC32C and CRC64NVME need the AWS CRT)."""
    algorithm = config.checksum_algorithm or "CRC32"  # botocore's default, made here
    return algorithm if algorithm in COMPUTED_CHECKSUMS else None


def body_checksum(algorithm: str, body: bytes) -> dict[str, str]:
    """PutObject / UploadPart parameters carrying ``body``'s checksum (zlib and hashlib
    release the GIL while they hash a large body)."""
    if algorithm == "CRC32":
        digest = zlib.crc32(body).to_bytes(4, "big")
    else:
        digest = hashlib.new(algorithm.lower(), body, usedforsecurity=False).digest()
    value = base64.b64encode(digest).decode("ascii")
    if algorithm == "MD5":
        return {"ContentMD5": value}
    return {"ChecksumAlgorithm": algorithm, f"Checksum{algorithm}": value}


def object_options(config: S3Config) -> dict[str, Any]:
    """PutObject / CreateMultipartUpload parameters that every object of ``config`` carries."""
    options: dict[str, Any] = {}
    if config.server_side_encryption:
        options["ServerSideEncryption"] = config.server_side_encryption
    if config.sse_kms_key_id:
        options["SSEKMSKeyId"] = config.sse_kms_key_id
    if config.storage_class:
        options["StorageClass"] = config.storage_class
    if config.object_tags:
        options["Tagging"] = urlencode(dict(config.object_tags))
    if config.checksum_algorithm and config.checksum_algorithm != "MD5":
        options["ChecksumAlgorithm"] = config.checksum_algorithm
    return options


def is_precondition_failed(exc: BaseException) -> bool:
    code, status = error_code(exc)
    return code == "PreconditionFailed" or status == 412


class S3Uploader:
    """Writes object bodies to one bucket through one aioboto3 S3 client."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        run: Runner,
        *,
        multipart_threshold: int,
        part_size: int,
        part_concurrency: int = PART_CONCURRENCY,
        options: dict[str, Any] | None = None,
        checksum: str | None = None,
    ) -> None:
        self._client = client
        self.bucket = bucket
        self._run = run
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._part_concurrency = part_concurrency
        self._options = options or {}
        self._checksum = checksum
        """One of :data:`COMPUTED_CHECKSUMS`, computed here for every body; or None."""

    @classmethod
    def for_config(cls, client: Any, bucket: str, run: Runner, config: S3Config) -> S3Uploader:
        """An uploader to ``bucket`` with ``config``'s multipart sizes, object options and
        checksum."""
        return cls(
            client,
            bucket,
            run,
            multipart_threshold=config.multipart_threshold,
            part_size=config.multipart_part_size,
            options=object_options(config),
            checksum=computed_checksum(config),
        )

    async def write(self, key: str, obj: EncodedObject, *, attempts_before: int = 0) -> int:
        """Store ``obj`` at ``key`` unless it is already there.

        ``attempts_before`` counts the requests earlier rounds made for this object;
        the result, and the ``attempts`` of an error, include them. Raises an
        :class:`~rigatoni_s3.errors.UploadError` subclass with the library error as
        ``__cause__``.
        """
        try:
            return attempts_before + await self._write(key, obj)
        except GaveUp as gave_up:
            attempts, cause = attempts_before + gave_up.attempts, gave_up.cause
        except Exception as exc:  # not a request error: a bug below us, say; still typed
            attempts, cause = attempts_before + 1, exc
        raise self._translate(cause, key, attempts, obj.events) from cause

    async def _write(self, key: str, obj: EncodedObject) -> int:
        """Store ``obj`` at ``key``; returns requests made or raises GaveUp."""
        if len(obj.body) >= self._multipart_threshold:
            return await self._write_multipart(key, obj)
        params = self._object_params(key, obj)
        if self._checksum:  # hashing on the loop would stall it
            params.update(await asyncio.to_thread(body_checksum, self._checksum, obj.body))
        try:
            _, attempts = await self._run(
                lambda: self._client.put_object(Body=obj.body, IfNoneMatch="*", **params),
                describe=f"PutObject s3://{self.bucket}/{key}",
            )
        except GaveUp as gave_up:
            if is_precondition_failed(gave_up.cause):
                etag = await asyncio.to_thread(_md5_etag, obj.body)
                return await self._reconcile(key, obj.body, etag, gave_up)
            raise
        return attempts

    async def _write_multipart(self, key: str, obj: EncodedObject) -> int:
        body, size = obj.body, self._part_size
        created, attempts = await self._run(
            lambda: self._client.create_multipart_upload(**self._object_params(key, obj)),
            describe=f"CreateMultipartUpload s3://{self.bucket}/{key}",
        )
        upload_id: str = created["UploadId"]
        offsets = range(0, len(body), size)
        slots = asyncio.Semaphore(self._part_concurrency)

        async def send_part(number: int, start: int) -> tuple[dict[str, Any], int]:
            async with slots:
                part_body = body[start : start + size]  # one copy per part, only while it is sent
                checksum = await asyncio.to_thread(self._part_checksum, part_body)
                response, tries = await self._run(
                    lambda: self._client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=part_body,
                        **checksum,
                    ),
                    describe=f"UploadPart {number} s3://{self.bucket}/{key}",
                )
            part = {"PartNumber": number, "ETag": response["ETag"]}
            part.update(
                {
                    k: v
                    for k, v in response.items()
                    if k.startswith("Checksum") and k != "ChecksumType"
                }
            )
            return part, tries

        try:
            sent = await asyncio.gather(
                *(send_part(n, start) for n, start in enumerate(offsets, 1))
            )
            attempts += sum(tries for _, tries in sent)
            parts = [part for part, _ in sent]
            _, tries = await self._run(
                lambda: self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    IfNoneMatch="*",
                ),
                describe=f"CompleteMultipartUpload s3://{self.bucket}/{key}",
            )
            return attempts + tries
        except GaveUp as gave_up:
            await asyncio.shield(self._abort(key, upload_id))
            if is_precondition_failed(gave_up.cause):
                return attempts + await self._reconcile(
                    key, body, await asyncio.to_thread(_multipart_etag, body, size), gave_up
                )
            raise
        except BaseException:
            await asyncio.shield(self._abort(key, upload_id))
            raise

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except Exception as exc:  # the bucket's lifecycle rule is the backstop
            log.warning(
                "could not abort multipart upload: %s",
                type(exc).__name__,
                extra={"key": key, "upload_id": upload_id},
            )

    async def _reconcile(self, key: str, body: bytes, etag: str, refused: GaveUp) -> int:
        """After a 412: succeed if ``key`` already holds ``body`` (an earlier attempt of ours
        landed), else re-raise the refusal. Returns the requests made."""
        try:
            same, tries = await self._run(
                lambda: self._holds(key, body, etag),
                describe=f"HeadObject s3://{self.bucket}/{key}",
            )
        except GaveUp as gave_up:
            raise GaveUp(gave_up.cause, refused.attempts + gave_up.attempts) from gave_up.cause
        if not same:
            raise refused
        log.info("object was already written by an earlier attempt", extra={"key": key})
        return refused.attempts + tries

    async def _holds(self, key: str, body: bytes, etag: str) -> bool:
        """True if ``key`` already stores exactly ``body`` (checked by ETag, else by content)."""
        head = await self._client.head_object(Bucket=self.bucket, Key=key)
        if head.get("ETag", "").strip('"') == etag:
            return True
        if head.get("ContentLength") != len(body):
            return False
        stored = await self._client.get_object(Bucket=self.bucket, Key=key)  # e.g. SSE-KMS ETags
        async with stored["Body"] as stream:
            return bool(await stream.read() == body)

    async def honours_conditional_writes(self, probe_key: str) -> bool:
        """Write ``probe_key`` twice with ``If-None-Match: *``; True if the second is refused.

        Raises the :class:`~rigatoni_s3.errors.UploadError` subclass of a probe that
        cannot be written at all (a missing bucket, denied access).
        """
        try:
            return await self._probe(probe_key)
        except GaveUp as gave_up:
            cause = gave_up.cause
            raise self._translate(cause, probe_key, gave_up.attempts, 0) from cause

    async def _probe(self, probe_key: str) -> bool:

        async def put_probe() -> Any:
            return await self._client.put_object(
                Bucket=self.bucket, Key=probe_key, Body=b"", IfNoneMatch="*"
            )

        await self._run(put_probe, describe=f"probe s3://{self.bucket}/{probe_key}")
        try:
            await self._run(put_probe, describe=f"probe s3://{self.bucket}/{probe_key}")
        except GaveUp as gave_up:
            if is_precondition_failed(gave_up.cause):
                return True
            raise
        finally:
            # Writers may lack s3:DeleteObject; the probe is empty and engines skip "_" paths.
            with contextlib.suppress(boto_errors.ClientError):
                await self._client.delete_object(Bucket=self.bucket, Key=probe_key)
        return False

    def _object_params(self, key: str, obj: EncodedObject) -> dict[str, Any]:
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "ContentType": obj.content_type,
            **self._options,
        }
        if obj.content_encoding:
            params["ContentEncoding"] = obj.content_encoding
        return params

    def _part_checksum(self, part: bytes) -> dict[str, str]:
        """A part's checksum, made here like a whole body's: the upload's algorithm, or
        CRC32 (botocore's default for parts) when the upload was created without one.
        CRC32C and CRC64NVME are named for botocore to compute."""
        if self._checksum:
            return body_checksum(self._checksum, part)
        if "ChecksumAlgorithm" in self._options:
            return {"ChecksumAlgorithm": self._options["ChecksumAlgorithm"]}
        return {}

    async def check_bucket(self) -> None:
        """HeadBucket once; raises the typed error of a missing or forbidden bucket."""
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self._translate(exc, "", 1, 0) from exc

    def _translate(self, exc: BaseException, key: str, attempts: int, events: int) -> UploadError:
        """The typed error for a failed upload; the library error becomes ``__cause__``."""
        code, status = error_code(exc)
        error: UploadError
        if code == "NoSuchBucket" or (status == 404 and code in (None, "404", "NotFound")):
            error = BucketNotFoundError(
                self.bucket, key, attempts, events, f"bucket {self.bucket!r} does not exist"
            )
        elif (
            code
            in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch")
            or status == 403
        ):
            error = AccessDeniedError(
                self.bucket, key, attempts, events, f"access denied ({code or status})"
            )
        elif isinstance(exc, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError):
            error = AccessDeniedError(
                self.bucket,
                key,
                attempts,
                events,
                "no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or a role",
            )
        elif is_precondition_failed(exc):
            error = ObjectConflictError(
                self.bucket, key, attempts, events, "the key already holds different content"
            )
        elif is_transient(exc):
            error = RetriesExhaustedError(
                self.bucket, key, attempts, events, _describe(exc, code, status)
            )
        else:
            error = UploadError(self.bucket, key, attempts, events, _describe(exc, code, status))
        error.__cause__ = exc
        return error


def _md5_etag(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def _multipart_etag(body: bytes, part_size: int) -> str:
    """S3's ETag of a multipart object: MD5 of the parts' MD5 digests, then ``-count``."""
    digests = [
        hashlib.md5(body[i : i + part_size], usedforsecurity=False).digest()
        for i in range(0, len(body), part_size)
    ]
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def _describe(exc: BaseException, code: str | None, status: int | None) -> str:
    if code is not None:
        return f"{code} (HTTP {status})"
    return f"{type(exc).__name__}: {exc}"
