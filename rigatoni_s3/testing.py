"""A local S3-compatible server for tests, examples and demos (needs the ``server`` extra).

:class:`EmbeddedS3Server` runs moto's S3 server in a child process bound to
127.0.0.1, so it never competes with the code under test for the GIL and is
always stopped with the ``with`` block::

    with EmbeddedS3Server() as server:
        config = server.config(bucket="demo", prefix="events")
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any, Self

from rigatoni_s3.config import S3Config

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


class EmbeddedS3Server:
    """moto's S3 server in a child process on a free loopback port."""

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 30.0
    ) -> None:
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        """Start the server and wait until it answers; returns its endpoint URL."""
        for _ in range(5):  # another process may grab the free port before we bind it
            self.port = self.port or _free_port(self.host)
            env = {
                **os.environ,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            }
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            if self._wait_ready():
                return self.endpoint_url
            self.stop()
            self.port = None
        raise RuntimeError(
            "the embedded S3 server did not start; is 'rigatoni-s3[server]' installed?"
        )

    def stop(self) -> None:
        """Stop the server process (and wait for it)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def config(self, bucket: str, *, create_bucket: bool = True, **options: Any) -> S3Config:
        """An :class:`S3Config` for this server (path-style, test credentials)."""
        if create_bucket:
            self.create_bucket(bucket)
        options.setdefault("region", REGION)
        return S3Config(
            bucket=bucket,
            endpoint_url=self.endpoint_url,
            force_path_style=True,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            **options,
        )

    def client(self) -> Any:
        """A synchronous boto3 client for this server (boto3 ships with aioboto3)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def create_bucket(self, bucket: str) -> None:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):
                    return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        return False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
