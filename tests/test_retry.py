"""Retry classification and the backoff policy."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError, SSLError

from rigatoni_s3._retry import GaveUp, RetryPolicy, is_transient


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


@pytest.mark.parametrize(
    "exc",
    [
        client_error("SlowDown", 503),
        client_error("InternalError", 500),
        client_error("RequestTimeout", 400),
        client_error("ThrottlingException", 400),
        client_error("Whatever", 502),
        client_error("TooManyRequests", 429),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ConnectionResetError(),
        TimeoutError(),
    ],
)
def test_transient_errors_are_retried(exc: BaseException) -> None:
    """Throttling, 5xx, timeouts and connection failures are worth another try."""
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        client_error("AccessDenied", 403),
        client_error("NoSuchBucket", 404),
        client_error("InvalidRequest", 400),
        client_error("PreconditionFailed", 412),
        SSLError(endpoint_url="https://x", error="bad cert"),
        ValueError("bug"),
    ],
)
def test_fatal_errors_are_not_retried(exc: BaseException) -> None:
    """Permissions, missing buckets, bad requests and bugs fail at once."""
    assert not is_transient(exc)


async def test_policy_retries_transient_then_succeeds() -> None:
    """Two SlowDowns then success: three attempts, result returned."""
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise client_error("SlowDown", 503)
        return "ok"

    result, attempts = await RetryPolicy(3, 0.001, 0.002).run(flaky)
    assert (result, attempts, calls) == ("ok", 3, 3)


async def test_policy_gives_up_after_max_retries() -> None:
    """max_retries=2 means three attempts, then the last error with the count."""

    async def always() -> None:
        raise client_error("SlowDown", 503)

    with pytest.raises(GaveUp) as info:
        await RetryPolicy(2, 0.001, 0.002).run(always)
    assert info.value.attempts == 3
    assert isinstance(info.value.cause, ClientError)


async def test_policy_does_not_retry_fatal_errors() -> None:
    """AccessDenied is tried exactly once."""

    async def denied() -> None:
        raise client_error("AccessDenied", 403)

    with pytest.raises(GaveUp) as info:
        await RetryPolicy(5, 0.001, 0.002).run(denied)
    assert info.value.attempts == 1
