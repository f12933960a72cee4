"""The examples and the demo, each run the way a user runs it: in its own process.

Each starts its own embedded S3 server (or uses ``S3_ENDPOINT_URL`` when set, as
``make test-s3`` does), reads back what it wrote and exits non-zero on a mismatch.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = ["s3_basic.py", "s3_with_compression.py", "s3_advanced.py", "demo.py"]


def run_example(name: str, *args: str, timeout: float = 180) -> str:
    """Run ``examples/name`` with this interpreter; its stdout, after asserting exit code 0.

    The script runs in a process group of its own, so that on a timeout the S3 server
    it started is killed along with it.
    """
    with subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=EXAMPLES.parent,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            pytest.fail(f"{name} ran longer than {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}")
    assert process.returncode == 0, (
        f"{name} exited {process.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    )
    return out


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_documents_its_options(name: str) -> None:
    """--help works and names the options for choosing the S3 server."""
    out = run_example(name, "--help", timeout=60)
    assert "--endpoint-url" in out
    assert "--bucket" in out
    assert "--aws" in out


def test_basic_example_reads_back_every_event() -> None:
    """s3_basic writes 1,000 events as JSON Lines under mongodb/events and reads all back."""
    out = run_example("s3_basic.py")
    assert re.search(r"read back 1,000 of 1,000 events from \d+ objects", out), out
    assert "mongodb/events/" in out
    assert '"operation":' in out


def test_compression_example_shows_gzip_and_zstd_shrinking_objects() -> None:
    """s3_with_compression reads back every event per codec, and both codecs save space."""
    out = run_example("s3_with_compression.py")
    assert "every codec: 2,000 events read back intact" in out
    sizes: dict[str, int] = {}
    for codec, extension, events, size in re.findall(
        r"^(NONE|GZIP|ZSTD)\s+(\S+)\s+\S+\s+\d+\s+([\d,]+)\s+([\d,]+)", out, re.MULTILINE
    ):
        assert events == "2,000"
        assert extension == {"NONE": "jsonl", "GZIP": "jsonl.gz", "ZSTD": "jsonl.zst"}[codec]
        sizes[codec] = int(size.replace(",", ""))
    assert sizes.keys() == {"NONE", "GZIP", "ZSTD"}, out
    assert sizes["GZIP"] < sizes["NONE"] / 3
    assert sizes["ZSTD"] < sizes["NONE"] / 3


def test_advanced_example_covers_every_format_and_strategy() -> None:
    """s3_advanced writes 4 formats x 5 strategies, draws each layout and reads all back."""
    out = run_example("s3_advanced.py")
    assert "read back 16,000 of 16,000 events" in out
    for strategy in (
        "HIVE_PARTITIONED",
        "DATE_HOUR_PARTITIONED",
        "DATE_PARTITIONED",
        "COLLECTION_BASED",
        "FLAT",
    ):
        assert f"\n{strategy}\n" in out
    assert "collection=inventory/year=2025/month=01/" in out
    for extension in (".jsonl.zst", ".csv.zst", ".parquet", ".avro"):
        assert extension in out


def test_demo_verifies_every_run() -> None:
    """make demo's script checks 16 runs (5 strategies, 4 formats x 3 codecs) and an Iceberg table."""
    out = run_example("demo.py")
    assert (
        "all 16 runs and the Iceberg table verified: 48,000 events written and read back intact"
        in out
    )
    assert "Iceberg table demo.events at s3://" in out
    assert "rows: 3,000; committed resume token: {" in out
    assert len(re.findall(r"^-?\d+\s+\d+\s+1000\s+demo\s", out, re.M)) == 3  # snapshots
    rows = re.findall(r"^(JSON|CSV|PARQUET|AVRO)\s+(NONE|GZIP|ZSTD)\s+(\w+)\s.*\sok$", out, re.M)
    assert len(rows) == 16, out
    assert {(fmt, codec) for fmt, codec, _ in rows} == {
        (fmt, codec)
        for fmt in ("JSON", "CSV", "PARQUET", "AVRO")
        for codec in ("NONE", "GZIP", "ZSTD")
    }
    assert {strategy for _, _, strategy in rows} == {
        "HIVE_PARTITIONED",
        "DATE_HOUR_PARTITIONED",
        "DATE_PARTITIONED",
        "COLLECTION_BASED",
        "FLAT",
    }
