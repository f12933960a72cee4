"""The embedded S3 server that tests, examples and benchmarks use."""

from __future__ import annotations

import os

from rigatoni_s3.testing import EmbeddedS3Server


def test_embedded_server_exposes_its_pid_while_running() -> None:
    """pid names the live child process, and is None once it has stopped."""
    server = EmbeddedS3Server()
    assert server.pid is None
    with server as endpoint:
        pid = server.pid
        assert pid is not None
        assert pid != os.getpid()
        os.kill(pid, 0)  # the process exists
        assert endpoint.url.startswith("http://127.0.0.1:")
    assert server.pid is None
