"""Fixtures: a real S3 server for the whole session, a fresh bucket per test.

The server is moto's, started on 127.0.0.1 in a child process, unless
``S3_ENDPOINT_URL`` names another one (MinIO, LocalStack from compose.yaml).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import attrs
import pytest

from rigatoni_s3 import S3Config
from rigatoni_s3.testing import EmbeddedS3Server, S3Endpoint
from tests.faultproxy import FaultProxy


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """The S3 server every integration test talks to over HTTP."""
    external = S3Endpoint.from_env()
    if external is not None:
        yield external
        return
    with EmbeddedS3Server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: S3Endpoint) -> Any:
    """A synchronous boto3 client: the independent reader of what was written."""
    return s3_endpoint.client()


@pytest.fixture
def bucket(s3_endpoint: S3Endpoint, s3_client: Any) -> Iterator[str]:
    """A new, empty bucket; emptied and deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_endpoint.create_bucket(name)
    yield name
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3_client.delete_object(Bucket=name, Key=obj["Key"])
    s3_client.delete_bucket(Bucket=name)


@pytest.fixture
def make_config(s3_endpoint: S3Endpoint, bucket: str) -> Callable[..., S3Config]:
    """Config for the test bucket; keyword options override defaults."""

    def make(**options: Any) -> S3Config:
        options.setdefault("retry_base_delay", 0.01)
        options.setdefault("retry_max_delay", 0.05)
        return s3_endpoint.config(bucket, create_bucket=False, **options)

    return make


@pytest.fixture
async def fault_proxy(s3_endpoint: S3Endpoint) -> AsyncIterator[FaultProxy]:
    """A fault-injecting proxy in front of the test server, on 127.0.0.1."""
    proxy = FaultProxy(s3_endpoint.url, seed=1234)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
def make_proxied_config(
    s3_endpoint: S3Endpoint, bucket: str, fault_proxy: FaultProxy
) -> Callable[..., S3Config]:
    """Config for the test bucket that goes through the fault proxy."""

    def make(**options: Any) -> S3Config:
        options.setdefault("retry_base_delay", 0.01)
        options.setdefault("retry_max_delay", 0.05)
        config = s3_endpoint.config(bucket, create_bucket=False, **options)
        return attrs.evolve(config, endpoint_url=fault_proxy.url)

    return make


@pytest.fixture
def catalog_uri(tmp_path: Any) -> str:
    """A SQL catalog on SQLite in this test's temporary directory (for Iceberg tests)."""
    return f"sqlite:///{tmp_path}/catalog.db"


@pytest.fixture
def make_iceberg_config(
    make_config: Callable[..., S3Config], catalog_uri: str
) -> Callable[..., S3Config]:
    """Parquet config for the test bucket that commits to ``cdc.events`` in the test catalog.

    ``iceberg=`` keywords override IcebergConfig fields; the others go to S3Config.
    """
    from rigatoni_s3.config import IcebergConfig

    def make(iceberg: dict[str, Any] | None = None, **options: Any) -> S3Config:
        settings: dict[str, Any] = {
            "catalog": {"type": "sql", "uri": catalog_uri},
            "table": "cdc.events",
            **(iceberg or {}),
        }
        options.setdefault("format", "parquet")
        options.setdefault("prefix", "events")
        return make_config(iceberg=IcebergConfig(**settings), **options)

    return make
