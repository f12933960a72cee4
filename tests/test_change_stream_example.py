"""The change-stream checkpoint recipe, driven by recorded change-stream documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from rigatoni_s3.testing import S3Endpoint
from tests.helpers import iter_jsonl

ROOT = Path(__file__).parent.parent
RECORDED = ROOT / "tests" / "data" / "change_stream.jsonl"


def run_example(
    endpoint: S3Endpoint, bucket: str, checkpoint: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "S3_ENDPOINT_URL": endpoint.url,
        "S3_BUCKET": bucket,
        "AWS_ACCESS_KEY_ID": endpoint.access_key_id,
        "AWS_SECRET_ACCESS_KEY": endpoint.secret_access_key,
    }
    command = [
        sys.executable,
        str(ROOT / "examples" / "mongodb_change_stream.py"),
        "--replay",
        str(RECORDED),
        "--checkpoint",
        str(checkpoint),
        *extra,
    ]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_restart_after_a_crash_resumes_from_the_durable_position(
    s3_endpoint: S3Endpoint, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    """Killed after 60 changes, the consumer resumes at the checkpoint and loses nothing."""
    recorded = [json.loads(line) for line in RECORDED.read_text().splitlines()]
    # A split event is written once, under the resume token of its last fragment.
    tokens = [change["_id"] for change in recorded if not _leading_fragment(change)]
    checkpoint = tmp_path / "checkpoint.json"

    small = ("--batch-size", "20", "--object-events", "20")
    crashed = run_example(s3_endpoint, bucket, checkpoint, *small, "--crash-after", "60")
    assert crashed.returncode == 3, crashed.stderr
    # Nothing was flushed at the crash: the checkpoint, if any, is a token whose changes are in S3.
    saved = json.loads(checkpoint.read_text())["resume_token"]
    stored = Counter(record["resume_token"]["_data"] for _, record in iter_jsonl(s3_client, bucket))
    position = tokens.index(saved)
    assert all(stored[t["_data"]] == 1 for t in tokens[: position + 1])
    assert position < 59  # some accepted changes were still in memory when the process died
    assert len(stored) < 60

    resumed = run_example(s3_endpoint, bucket, checkpoint, *small)
    assert resumed.returncode == 0, resumed.stderr
    stored = Counter(record["resume_token"]["_data"] for _, record in iter_jsonl(s3_client, bucket))
    assert set(stored) == {t["_data"] for t in tokens}  # every change is in S3
    assert json.loads(checkpoint.read_text())["resume_token"] == tokens[-1]
    records = [record for _, record in iter_jsonl(s3_client, bucket)]
    deletes = [r for r in records if r["operation"] == "delete"]
    assert deletes
    assert all(r["full_document"] is None for r in deletes)
    _check_recorded_shapes(recorded, records)


def _leading_fragment(change: dict[str, Any]) -> bool:
    split = change.get("splitEvent")
    return split is not None and split["fragment"] < split["of"]


def _check_recorded_shapes(recorded: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    """Pre-images, transactions, a rename, a split event and unknown fields all arrive whole."""
    by_token = {r["resume_token"]["_data"]: r for r in records}  # a restart may repeat some
    with_before = [r for r in records if r["full_document_before_change"] is not None]
    assert {r["operation"] for r in with_before} >= {"update", "delete"}
    in_transaction = [r for r in by_token.values() if r["transaction"] is not None]
    assert len(in_transaction) == 2
    assert {r["transaction"]["txnNumber"] for r in in_transaction} == {7}
    assert all(set(r["transaction"]) == {"txnNumber", "lsid"} for r in in_transaction)
    (renamed,) = [r for r in by_token.values() if r["operation"] == "rename"]
    assert renamed["extra"] == {"to": {"db": "shop", "coll": "returns_2024"}}
    assert renamed["document_key"] is None
    fragments = [c for c in recorded if "splitEvent" in c]
    assert [c["splitEvent"] for c in fragments] == [{"fragment": i, "of": 3} for i in (1, 2, 3)]
    joined = by_token[fragments[-1]["_id"]["_data"]]
    assert all(c["_id"]["_data"] not in by_token for c in fragments[:-1])
    assert joined["operation"] == "update"
    assert joined["update_description"]["updatedFields"] == {"qty": 3}
    assert joined["full_document"]["notes"] == "x" * 2000
    assert joined["full_document_before_change"]["notes"] == "y" * 2000
    assert joined["wall_time"] == fragments[0]["wallTime"]["$date"].replace(".250Z", ".250000Z")
    assert joined["extra"] is None, "splitEvent is not kept once the fragments are joined"
    (unknown,) = [r for r in by_token.values() if r["extra"] and "newServerField" in r["extra"]]
    assert list(unknown["extra"]) == ["collectionUUID", "shardVersion", "newServerField"]
    assert unknown["extra"]["newServerField"] is None
    assert all(r["wall_time"] is not None for r in records)
    increments = {r["resume_token"]["_data"]: r["cluster_time_increment"] for r in records}
    assert all(
        increments[c["_id"]["_data"]] == c["clusterTime"]["$timestamp"]["i"]
        for c in recorded
        if "clusterTime" in c and c["_id"]["_data"] in increments
    )
