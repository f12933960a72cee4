"""Which failures are worth retrying, and how long to wait between attempts.

Transient: throttling (``SlowDown``, 503, 429), server errors (5xx), ``RequestTimeout``,
connection errors, resets and timeouts. Everything else (``AccessDenied``,
``NoSuchBucket``, malformed requests, a failed precondition) fails at once.

The wait before retry *n* (1-based) is drawn uniformly from
``[0, min(retry_max_delay, retry_base_delay * 2 ** (n - 1))]`` ("full jitter"), so
many writers hitting a throttled prefix spread out instead of retrying in step.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import attrs
import backoff
from botocore import exceptions as boto_errors

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_ERROR_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "PriorRequestNotComplete",
        "OperationAborted",  # a conflicting conditional operation is in progress
    }
)

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    boto_errors.EndpointConnectionError,
    boto_errors.ConnectTimeoutError,
    boto_errors.ReadTimeoutError,
    boto_errors.ConnectionClosedError,
    boto_errors.ResponseStreamingError,
    boto_errors.IncompleteReadError,
    boto_errors.HTTPClientError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    aiohttp.ServerDisconnectedError,
    TimeoutError,
    ConnectionError,
)


def error_code(exc: BaseException) -> tuple[str | None, int | None]:
    """The S3 error code and HTTP status of a ``ClientError`` (None, None otherwise)."""
    if not isinstance(exc, boto_errors.ClientError):
        return None, None
    response: dict[str, Any] = exc.response
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status


def is_transient(exc: BaseException) -> bool:
    """True when the same request may succeed if sent again."""
    if isinstance(exc, boto_errors.SSLError):
        return False  # a certificate problem does not go away by waiting
    if isinstance(exc, boto_errors.ClientError):
        code, status = error_code(exc)
        if code in TRANSIENT_ERROR_CODES:
            return True
        return status is not None and (status >= 500 or status in (408, 429))
    return isinstance(exc, _TRANSIENT_TYPES)


class GaveUp(Exception):
    """Internal: the last error of an operation, and how many attempts were made."""

    def __init__(self, cause: BaseException, attempts: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.attempts = attempts


@attrs.frozen
class RetryPolicy:
    """Exponential backoff with full jitter over transient failures (via ``backoff``)."""

    max_retries: int
    base_delay: float
    max_delay: float

    async def run(
        self, operation: Callable[[], Awaitable[T]], *, describe: str = ""
    ) -> tuple[T, int]:
        """Run ``operation`` until it succeeds; returns its result and the attempts made.

        Raises :class:`GaveUp` carrying the last error once retries are spent or the
        error is not transient.
        """
        attempts = 0

        async def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return await operation()

        def on_backoff(details: Any) -> None:
            log.warning(
                "retrying %s after %s (attempt %d, waiting %.2fs)",
                describe,
                type(details["exception"]).__name__,
                details["tries"],
                details["wait"],
                extra={"attempt": details["tries"], "wait": details["wait"]},
            )

        retrying = backoff.on_exception(
            backoff.expo,
            Exception,
            max_tries=self.max_retries + 1,
            giveup=lambda exc: not is_transient(exc),
            jitter=backoff.full_jitter,
            factor=self.base_delay,
            max_value=self.max_delay,
            on_backoff=on_backoff,
            logger=None,
        )(attempt)
        try:
            return await retrying(), attempts
        except Exception as exc:
            raise GaveUp(exc, attempts) from exc
