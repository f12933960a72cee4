"""A local S3-compatible server for tests, examples and demos (needs the ``server`` extra).

:class:`EmbeddedS3Server` runs moto's S3 server in a child process bound to
127.0.0.1, so it never competes with the code under test for the GIL and is
always stopped with the ``with`` block. It yields an :class:`S3Endpoint`, which
also describes any other server (MinIO, LocalStack) via :meth:`S3Endpoint.from_env`::

    with EmbeddedS3Server() as endpoint:
        config = endpoint.config("demo", prefix="events")
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
from typing import Any

import attrs

from rigatoni_s3.config import S3Config

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


@attrs.frozen
class S3Endpoint:
    """An S3-compatible server reachable over HTTP, and the credentials to use it."""

    url: str
    access_key_id: str = ACCESS_KEY
    secret_access_key: str = attrs.field(default=SECRET_KEY, repr=False)
    region: str = REGION

    @classmethod
    def from_env(cls) -> S3Endpoint | None:
        """The server named by ``S3_ENDPOINT_URL`` (credentials from ``AWS_*``), if set."""
        url = os.environ.get("S3_ENDPOINT_URL")
        if not url:
            return None
        return cls(
            url,
            os.environ.get("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            os.environ.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            os.environ.get("AWS_DEFAULT_REGION", REGION),
        )

    def config(self, bucket: str, *, create_bucket: bool = True, **options: Any) -> S3Config:
        """An :class:`S3Config` for this server (path-style addressing, its credentials)."""
        if create_bucket:
            self.create_bucket(bucket)
        options.setdefault("region", self.region)
        return S3Config(
            bucket=bucket,
            endpoint_url=self.url,
            force_path_style=True,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            **options,
        )

    def client(self) -> Any:
        """A synchronous boto3 client for this server (boto3 ships with aioboto3)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, bucket: str) -> None:
        client = self.client()
        with contextlib.suppress(
            client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
        ):
            client.create_bucket(Bucket=bucket)


# The child exits when its stdin closes, i.e. when the parent exits for any reason
# (even os._exit or SIGKILL), so a crashed test run never leaves a server behind.
_SERVER_MAIN = """
import os, sys, threading
from moto.server import main
def watch_parent():
    sys.stdin.read()
    os._exit(0)
threading.Thread(target=watch_parent, daemon=True).start()
main(["-H", sys.argv[1], "-p", sys.argv[2]])
"""


class EmbeddedS3Server:
    """moto's S3 server in a child process on a free loopback port."""

    def __init__(self, host: str = "127.0.0.1", start_timeout: float = 30.0) -> None:
        self.host = host
        self.start_timeout = start_timeout
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Endpoint:
        """Start the server and wait until it answers."""
        for _ in range(5):  # another process may take the free port before the server binds it
            self.port = _free_port(self.host)
            env = {
                **os.environ,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            }
            self._process = subprocess.Popen(
                [sys.executable, "-c", _SERVER_MAIN, self.host, str(self.port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            if self._wait_ready():
                return S3Endpoint(f"http://{self.host}:{self.port}")
            self.stop()
        raise RuntimeError(
            "the embedded S3 server did not start; install it with: pip install 'rigatoni-s3[server]'"
        )

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (to read its CPU time, say); else None."""
        process = self._process
        return None if process is None or process.poll() is not None else process.pid

    def stop(self) -> None:
        """Stop the server process and wait for it to exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.port}/moto-api/", timeout=1):
                    return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        return False

    def __enter__(self) -> S3Endpoint:
        return self.start()

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
