"""The upload stage: aioboto3 calls and nothing else (retry policy lives in ``_retry``).

This is also the boundary where botocore's errors become
:mod:`rigatoni_s3.errors` types.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore import exceptions as boto_errors

from rigatoni_s3._encoder import EncodedObject
from rigatoni_s3._retry import error_code, is_transient
from rigatoni_s3.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ObjectConflictError,
    RetriesExhaustedError,
    UploadError,
)

log = logging.getLogger(__name__)


class S3Uploader:
    """Writes object bodies to one bucket through one aioboto3 S3 client."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    async def put(self, key: str, obj: EncodedObject) -> None:
        """One PutObject of ``obj`` at ``key``."""
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": obj.body,
            "ContentType": obj.content_type,
        }
        if obj.content_encoding:
            params["ContentEncoding"] = obj.content_encoding
        await self._client.put_object(**params)

    def translate(self, exc: BaseException, key: str, attempts: int, events: int) -> UploadError:
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
        elif code == "PreconditionFailed" or status == 412:
            error = ObjectConflictError(
                self.bucket, key, attempts, events, "the key already exists"
            )
        elif is_transient(exc):
            error = RetriesExhaustedError(
                self.bucket, key, attempts, events, _describe(exc, code, status)
            )
        else:
            error = UploadError(self.bucket, key, attempts, events, _describe(exc, code, status))
        error.__cause__ = exc
        return error


def _describe(exc: BaseException, code: str | None, status: int | None) -> str:
    if code is not None:
        return f"{code} (HTTP {status})"
    return f"{type(exc).__name__}: {exc}"
