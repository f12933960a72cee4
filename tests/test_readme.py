"""Every fenced code block in README.md is executed or checked here, or marked as needing AWS.

A block is identified as ``<heading slug>#<n>``: the n-th block under its nearest heading.
How each kind of block is covered:

- ``python``: executed for real against the test S3 server, after the substitutions listed
  in :data:`PYTHON_RUNS` (each must match, so a block can never reach AWS unnoticed), and
  what it did is checked (objects in the bucket, rows read back).
- ``sql``: executed with DuckDB over objects written by ``S3Destination`` to the test server
  and downloaded to a temporary directory (the ``s3://`` URL becomes that directory).
- ``bash``: every ``make`` target exists in the Makefile and every ``examples/`` script exists
  and is run by ``tests/test_examples.py``; Docker, MinIO and AWS commands need a marker.
- ``json``: parsed (IAM statement fragments wrapped in ``[...]`` first).
- Blocks in :data:`NOT_CODE` (diagrams) are not code.

Anything else needs ``<!-- not run by tests: REASON -->`` on the line right before its
fence, so a new unmarked block fails :func:`test_every_block_is_run_or_marked`.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import io
import json
import re
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bson import Decimal128, ObjectId

from rigatoni_s3 import Compression, KeyGenerationStrategy, S3Config, S3Destination
from rigatoni_s3.config import SerializationFormat
from rigatoni_s3.testing import S3Endpoint
from tests.helpers import list_keys, raw_events, read_records
from tests.test_examples import SCRIPTS
from tests.test_scale_out import SHARE_RECIPE_NAMES, check_share_recipe

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RECORDED = ROOT / "tests" / "data" / "change_stream.jsonl"
MARKER = re.compile(r"^\s*<!-- not run by tests: (?P<reason>[^>]+?) -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\S*)\s*$")
HEADING = re.compile(r"^#+\s+(?P<title>.+?)\s*$")

# Blocks that are not code at all, with what they are instead.
NOT_CODE = {"how-it-works#1": "diagram of the write path"}


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    id: str
    lang: str
    line: int  # 1-based line of the opening fence
    code: str
    marker: str | None  # the reason of a "not run by tests" comment right before the fence


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def parse_readme(text: str) -> list[Block]:
    """The fenced code blocks of ``text``, in order, dedented to their fence."""
    lines = text.splitlines()
    blocks: list[Block] = []
    heading = "top"
    per_heading: dict[str, int] = {}
    i = 0
    while i < len(lines):
        if match := HEADING.match(lines[i]):
            heading = _slug(match["title"])
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        indent = len(fence["indent"])
        end = i + 1
        while lines[end].strip() != "```":
            end += 1
        code = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        per_heading[heading] = per_heading.get(heading, 0) + 1
        blocks.append(
            Block(
                id=f"{heading}#{per_heading[heading]}",
                lang=fence["lang"],
                line=i + 1,
                code=code,
                marker=marker["reason"] if marker else None,
            )
        )
        i = end + 1
    return blocks


BLOCKS = parse_readme(README.read_text(encoding="utf-8"))


def blocks_of(lang: str, *, marked: bool | None = False) -> list[Any]:
    """pytest params for the blocks of ``lang`` (unmarked only, unless ``marked`` is None)."""
    return [
        pytest.param(block, id=block.id)
        for block in BLOCKS
        if block.lang == lang and (marked is None or (block.marker is not None) == marked)
    ]


# --- test data ---------------------------------------------------------------------------

# 20 events on 2025-01-15 10:00 UTC, alternating between "users" and "orders".
EVENTS = raw_events(20, ("users", "orders"))
USERS = [event for event in EVENTS if event["ns"]["coll"] == "users"]


async def _write(config: S3Config, events: list[Any]) -> None:
    async with S3Destination(config) as destination:
        await destination.write_batch(events)


def write_events(config: S3Config, events: list[Any] = EVENTS) -> None:
    """Write ``events`` through S3Destination and wait until they are in S3."""
    asyncio.run(_write(config, events))


def write_analytics_data(
    s3_endpoint: S3Endpoint,
    bucket: str,
    fmt: SerializationFormat,
    compression: Compression,
) -> None:
    """The README's analytics layout: prefix mongodb/events, Hive partitioning."""
    config = s3_endpoint.config(
        bucket,
        create_bucket=False,
        prefix="mongodb/events",
        key_strategy=KeyGenerationStrategy.HIVE_PARTITIONED,
        format=fmt,
        compression=compression,
        check_conditional_writes=False,
    )
    write_events(config)


def download(client: Any, bucket: str, target: Path) -> Path:
    """Every object of ``bucket`` under ``target``, keys as paths; returns ``target``."""
    for key in list_keys(client, bucket, "mongodb/events/"):
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(path))
    return target


def count_events(client: Any, bucket: str, prefix: str) -> int:
    return sum(len(read_records(client, bucket, key)) for key in list_keys(client, bucket, prefix))


# --- python blocks -----------------------------------------------------------------------

# The test server replaces what the README addresses on AWS. Names available to the
# substituted code: TEST_S3 (the S3Endpoint), TEST_BUCKET (a fresh bucket on it).
SERVER_BUILDER = (
    ".endpoint_url(TEST_S3.url)\n    .force_path_style(True)\n"
    "    .credentials(TEST_S3.access_key_id, TEST_S3.secret_access_key)\n    .build()"
)
SERVER_KEYWORDS = (
    "S3Config(endpoint_url=TEST_S3.url, force_path_style=True, "
    "aws_access_key_id=TEST_S3.access_key_id, "
    "aws_secret_access_key=TEST_S3.secret_access_key, bucket="
)
PYARROW_S3 = (
    'fs.S3FileSystem(region="us-east-1", scheme="http", '
    'endpoint_override=TEST_S3.url.removeprefix("http://"), '
    "access_key=TEST_S3.access_key_id, secret_key=TEST_S3.secret_access_key)"
)
POLARS_S3 = (
    "hive_partitioning=True, storage_options={"
    '"aws_endpoint_url": TEST_S3.url, "aws_allow_http": "true", '
    '"aws_region": TEST_S3.region, "aws_access_key_id": TEST_S3.access_key_id, '
    '"aws_secret_access_key": TEST_S3.secret_access_key})'
)


@dataclass
class Run:
    """How a python block runs here: data written before, substitutions, check after."""

    substitutions: list[tuple[str, str]]
    check: Callable[[Mapping[str, Any], Any, str], None]
    data: tuple[SerializationFormat, Compression] | None = None
    extra_names: dict[str, Any] = field(default_factory=dict)


def check_quick_start(names: Mapping[str, Any], client: Any, bucket: str) -> None:
    assert count_events(client, bucket, "mongodb/events/") == len(EVENTS)


def check_compression(names: Mapping[str, Any], client: Any, bucket: str) -> None:
    config = names["config"]
    assert config.compression is Compression.ZSTD
    assert config.key_strategy is KeyGenerationStrategy.HIVE_PARTITIONED
    write_events(config)
    keys = list_keys(client, bucket, "events/")
    assert keys
    assert all(key.endswith(".jsonl.zst") for key in keys), keys
    assert all(key.startswith("events/collection=") for key in keys), keys
    assert count_events(client, bucket, "events/") == len(EVENTS)


def check_path_style(names: Mapping[str, Any], client: Any, bucket: str) -> None:
    config = names["config"]
    assert config.force_path_style
    write_events(config)
    assert count_events(client, bucket, "") == len(EVENTS)


def check_embedded_server(names: Mapping[str, Any], client: Any, bucket: str) -> None:
    assert names["config"].bucket == "my-bucket"
    assert names["config"].prefix == "events"
    assert names["config"].endpoint_url.startswith("http://127.0.0.1:")


def check_pyarrow(names: Mapping[str, Any], client: Any, bucket: str) -> None:
    table = names["table"]
    assert table.num_rows == len(USERS)
    assert set(table.column("collection").to_pylist()) == {"users"}
    assert sorted(table.column("full_document").to_pylist()) == sorted(
        json.dumps(event["fullDocument"], separators=(",", ":")) for event in USERS
    )


def check_polars(names: Mapping[str, Any], client: Any, bucket: str) -> None:
    users = names["users"]
    assert users.height == len(USERS)
    assert set(users["collection"].to_list()) == {"users"}


def _load_change_stream_example() -> Any:
    examples = str(ROOT / "examples")
    if examples not in sys.path:
        sys.path.insert(0, examples)  # the example imports its sibling _common
    spec = importlib.util.spec_from_file_location(
        "readme_change_stream", ROOT / "examples" / "mongodb_change_stream.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RecordedChangeStream:
    """pymongo's change stream, played from tests/data/change_stream.jsonl."""

    def __init__(self, changes: AsyncIterator[Any]) -> None:
        self.changes = changes

    async def __aenter__(self) -> RecordedChangeStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[Any]:
        return self.changes


class RecordedDatabase:
    def __init__(self, example: Any) -> None:
        self.example = example

    async def watch(self, resume_after: Any = None) -> RecordedChangeStream:
        return RecordedChangeStream(self.example.replay(RECORDED, resume_after))


class RecordedClient:
    """Stands in for the README's pymongo ``AsyncMongoClient``: ``client.shop.watch()``."""

    def __init__(self, example: Any) -> None:
        self.shop = RecordedDatabase(example)


# Orders for the typed-columns section: three statuses, totals on both sides of 100.
ORDERS: list[dict[str, Any]] = [
    {
        "_id": {"_data": f"8264{n:012d}"},
        "operationType": "insert",
        "ns": {"db": "shop", "coll": "orders"},
        "documentKey": {"_id": n},
        "fullDocument": {
            "_id": n,
            "status": ("paid", "shipped", "cancelled")[n % 3],
            "total": Decimal128(f"{40 * n}.{n:02d}"),
            "placed_at": datetime(2025, 1, 15, 9, n),
            "customer": {"_id": ObjectId(f"{n:024x}")},
        },
        "clusterTime": {"$timestamp": {"t": 1736935200 + n, "i": 1}},
    }
    for n in range(12)
]
TYPED_TYPES = {
    "status": pa.string(),
    "total": pa.decimal128(12, 2),
    "placed_at": pa.timestamp("us", tz="UTC"),
    "customer_id": pa.string(),
    "new_status": pa.string(),
}


def check_typed_columns(names: Mapping[str, Any], client: Any, bucket: str) -> None:
    config = names["config"]
    write_events(config, [*ORDERS, *USERS])
    keys = list_keys(client, bucket, "mongodb/events/collection=orders/")
    table = pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=keys[0])["Body"].read()))
    assert {name: table.schema.field(name).type for name in TYPED_TYPES} == TYPED_TYPES
    assert table.column("customer_id").to_pylist() == [f"{n:024x}" for n in range(12)]
    assert table.column("total").to_pylist()[5] == Decimal("200.05")


def check_checkpoint(names: Mapping[str, Any], client: Any, bucket: str) -> None:
    recorded = RECORDED.read_text().splitlines()
    # A split event is written once, under the resume token of its last fragment.
    leading = [
        line
        for line in map(json.loads, recorded)
        if "splitEvent" in line and line["splitEvent"]["fragment"] < line["splitEvent"]["of"]
    ]
    assert count_events(client, bucket, "") == len(recorded) - len(leading)
    last_id = json.loads(recorded[-1])["_id"]
    assert names["checkpoint"].load() == last_id


def check_iceberg(names: Mapping[str, Any], client: Any, bucket: str) -> None:
    from tests.test_iceberg import open_table

    changes = [json.loads(line) for line in RECORDED.read_text().splitlines()]
    # the fragments of a split event are one event
    events = [c for c in changes if c.get("splitEvent", {"fragment": 1})["fragment"] == 1]
    endpoint = S3Endpoint(names["config"].endpoint_url)
    table = open_table(endpoint, "sqlite:///catalog.db")
    assert table.scan().to_arrow().num_rows == len(events)
    summary = table.current_snapshot().summary  # type: ignore[union-attr]
    assert summary is not None
    assert json.loads(str(summary["rigatoni-s3.resume-token"])) == changes[-1]["_id"]


PYTHON_RUNS: dict[str, Run] = {
    "quick-start#1": Run(
        [('"my-data-lake"', "TEST_BUCKET"), (".build()", SERVER_BUILDER)],
        check_quick_start,
        extra_names={"events": EVENTS},
    ),
    "with-compression-and-partitioning#1": Run(
        [('"analytics-data"', "TEST_BUCKET"), (".build()", SERVER_BUILDER)],
        check_compression,
    ),
    "delivery-guarantees#1": Run(
        [('"my-data-lake"', "TEST_BUCKET"), ("S3Config(bucket=", SERVER_KEYWORDS)],
        check_checkpoint,
    ),
    "scaling-out-several-consumers-one-prefix#1": Run(
        [('"my-data-lake"', "TEST_BUCKET"), ("S3Config(\n    bucket=", SERVER_KEYWORDS)],
        check_share_recipe,
        extra_names=SHARE_RECIPE_NAMES,
    ),
    "testing#2": Run([], check_embedded_server),  # starts its own server on 127.0.0.1
    "pyarrow-and-polars#1": Run(
        [
            ('"your-bucket/', 'TEST_BUCKET + "/'),
            ('fs.S3FileSystem(region="us-east-1")', PYARROW_S3),
        ],
        check_pyarrow,
        data=(SerializationFormat.PARQUET, Compression.ZSTD),
    ),
    "pyarrow-and-polars#2": Run(
        [
            ('"s3://your-bucket/', '"s3://" + TEST_BUCKET + "/'),
            ("hive_partitioning=True)", POLARS_S3),
        ],
        check_polars,
        data=(SerializationFormat.PARQUET, Compression.ZSTD),
    ),
    "iceberg-tables#1": Run(
        [('"my-data-lake"', "TEST_BUCKET"), (".build()", SERVER_BUILDER)], check_iceberg
    ),
    "path-style-addressing#1": Run(
        [
            ('"my-bucket"', "TEST_BUCKET"),
            ('"http://127.0.0.1:9000"', "TEST_S3.url"),
            (".build()", SERVER_BUILDER),
        ],
        check_path_style,
    ),
    "typed-columns#1": Run(
        [('"my-data-lake"', "TEST_BUCKET"), ("S3Config(\n    bucket=", SERVER_KEYWORDS)],
        check_typed_columns,
    ),
}


# Snippets that continue an earlier one use what it imported.
CONTEXT_NAMES: dict[str, Any] = {"S3Config": S3Config, "S3Destination": S3Destination}


def substitute(block: Block, substitutions: list[tuple[str, str]]) -> str:
    """``block.code`` with every substitution applied; each one must match."""
    code = block.code
    for old, new in substitutions:
        assert old in code, f"{block.id}: substitution {old!r} no longer matches the README"
        code = code.replace(old, new)
    return code


def execute(block: Block, code: str, names: dict[str, Any]) -> None:
    """Run ``code`` (top-level ``await`` allowed) with README line numbers in tracebacks."""
    source = "\n" * block.line + code
    compiled = compile(
        source, f"README.md ({block.id})", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    result = eval(compiled, names)  # the README's own code: running it is the point
    if inspect.iscoroutine(result):
        asyncio.run(result)


@pytest.fixture
def aws_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real AWS credentials or profile can be picked up by a README block."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("aws_isolated")
@pytest.mark.parametrize("block", blocks_of("python"))
def test_python_block_runs_against_the_test_server(
    block: Block,
    s3_endpoint: S3Endpoint,
    s3_client: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The python block runs, with the server substituted for AWS, and does what it says."""
    assert block.id in PYTHON_RUNS, f"{block.id}: add an entry to PYTHON_RUNS or a marker"
    run = PYTHON_RUNS[block.id]
    if run.data is not None:
        write_analytics_data(s3_endpoint, bucket, *run.data)
    monkeypatch.chdir(tmp_path)  # files a block writes (checkpoint.json) land here
    names: dict[str, Any] = {
        "__name__": "readme",
        "TEST_S3": s3_endpoint,
        "TEST_BUCKET": bucket,
        **CONTEXT_NAMES,
        **run.extra_names,
    }
    if block.id in ("delivery-guarantees#1", "iceberg-tables#1"):
        example = _load_change_stream_example()
        names["FileCheckpoint"] = lambda path: example.FileCheckpoint(Path(path))
        names["client"] = RecordedClient(example)
    execute(block, substitute(block, run.substitutions), names)
    run.check(names, s3_client, bucket)
    if block.id in ("delivery-guarantees#1", "iceberg-tables#1"):
        # Run again: the stream resumes after the checkpoint, so nothing is written twice.
        before = len(list_keys(s3_client, bucket))
        execute(block, substitute(block, run.substitutions), names)
        assert len(list_keys(s3_client, bucket)) == before


# --- sql blocks --------------------------------------------------------------------------

# Unmarked SQL blocks are DuckDB queries: the data each one reads, and what it must return.
SQL_DATA: dict[str, tuple[SerializationFormat, Compression]] = {
    "duckdb#1": (SerializationFormat.PARQUET, Compression.ZSTD),
    "duckdb#2": (SerializationFormat.PARQUET, Compression.ZSTD),
    "duckdb#3": (SerializationFormat.CSV, Compression.GZIP),
}


TYPED_SQL = {"typed-columns#2"}
"""SQL blocks over the orders of the typed-columns section."""


@pytest.mark.parametrize("block", [p for p in blocks_of("sql") if p.id not in TYPED_SQL])
def test_duckdb_query_reads_what_the_destination_wrote(
    block: Block, s3_endpoint: S3Endpoint, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    """The DuckDB query, over objects written to the test server, returns the users events."""
    write_analytics_data(s3_endpoint, bucket, *SQL_DATA[block.id])
    local = download(s3_client, bucket, tmp_path)
    old = "s3://your-bucket/mongodb/events/"
    assert old in block.code
    query = block.code.replace(old, f"{local.as_posix()}/mongodb/events/")
    connection = duckdb.connect()
    try:
        cursor = connection.execute(query)
        columns = [column[0] for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    finally:
        connection.close()
    assert sorted(row["name"] for row in rows) == sorted(
        event["fullDocument"]["name"] for event in USERS
    )
    assert {row["collection"] for row in rows} == {"users"}
    assert {row["operation"] for row in rows} == {"insert"}


@pytest.mark.parametrize("block", [p for p in blocks_of("sql") if p.id in TYPED_SQL])
def test_duckdb_query_filters_on_typed_columns(
    block: Block, s3_endpoint: S3Endpoint, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    """The typed-columns query, over orders written with the README's columns, sums exactly."""
    names: dict[str, Any] = {"__name__": "readme", "TEST_S3": s3_endpoint, "TEST_BUCKET": bucket}
    [config_block] = [b for b in BLOCKS if b.id == "typed-columns#1"]
    execute(
        config_block, substitute(config_block, PYTHON_RUNS[config_block.id].substitutions), names
    )
    write_events(names["config"], [*ORDERS, *USERS])
    local = download(s3_client, bucket, tmp_path)
    query = block.code.replace(
        "s3://your-bucket/mongodb/events/", f"{local.as_posix()}/mongodb/events/"
    )
    connection = duckdb.connect()
    try:
        rows = connection.execute(query).fetchall()
    finally:
        connection.close()
    expected: dict[str, list[Decimal]] = {}
    for order in ORDERS:
        total = order["fullDocument"]["total"].to_decimal()
        if total >= 100:
            expected.setdefault(order["fullDocument"]["status"], []).append(total)
    assert rows == [
        (status, len(totals), sum(totals)) for status, totals in sorted(expected.items())
    ]


# --- bash blocks -------------------------------------------------------------------------

MAKEFILE_TARGETS = set(
    re.findall(r"^([A-Za-z0-9_-]+):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
)
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
# Commands that cannot run here: they need the marker, with a reason naming what they need.
NEEDS_MARKER = {"docker": "Docker", "aws": "AWS", "pip": "package index"}


def commands(code: str) -> list[list[str]]:
    """The shell commands of a block: continuations joined, comments and env prefixes dropped."""
    joined = code.replace("\\\n", " ")
    result = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words and ENV_ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words:
            result.append(words)
    return result


@pytest.mark.parametrize("block", blocks_of("bash", marked=None))
def test_bash_block_names_real_targets_and_scripts(block: Block) -> None:
    """Every make target exists, every example script exists and is run by test_examples."""
    found = commands(block.code)
    assert found, f"{block.id} holds no command"
    for words in found:
        program = words[0]
        if program == "make":
            targets = [word for word in words[1:] if not ENV_ASSIGNMENT.match(word)]
            assert targets, f"{block.id}: bare make"
            assert set(targets) <= MAKEFILE_TARGETS, (block.id, targets)
            if "test-s3" in targets:  # needs a server started with compose.yaml
                assert block.marker is not None, f"{block.id}: make test-s3 needs a marker"
                assert "Docker" in block.marker, (block.id, block.marker)
        elif program in ("python", "python3", ".venv/bin/python"):
            script = words[1]
            assert script.startswith("examples/"), (block.id, words)
            assert (ROOT / script).is_file(), (block.id, script)
            assert script.removeprefix("examples/") in SCRIPTS, f"{script} is not run by tests"
            if "--aws" in words or "S3_ENDPOINT_URL=" in block.code:
                assert block.marker is not None, f"{block.id}: {words} needs a marker"
        elif program in NEEDS_MARKER:
            assert block.marker is not None, f"{block.id}: {program} needs a marker"
            assert NEEDS_MARKER[program] in block.marker, (block.id, block.marker)
        else:
            pytest.fail(f"{block.id}: no check for the command {words}")


# --- json blocks -------------------------------------------------------------------------

# Blocks holding statements to add to a policy, not a whole document: parsed inside [...].
JSON_FRAGMENTS = {"access-denied#2"}


@pytest.mark.parametrize("block", blocks_of("json"))
def test_json_block_is_a_valid_iam_policy(block: Block) -> None:
    """The JSON block parses, as an IAM policy or as the statements it adds to one."""
    if block.id in JSON_FRAGMENTS:
        statements = json.loads(f"[{block.code}]")
    else:
        policy = json.loads(block.code)
        assert policy["Version"] == "2012-10-17"
        statements = policy["Statement"]
    assert statements
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert all(action.startswith("s3:") for action in statement["Action"])
        assert statement["Resource"].startswith("arn:aws:s3:::your-bucket")


# --- coverage ----------------------------------------------------------------------------


def test_every_block_is_run_or_marked() -> None:
    """Each README block is executed or checked above, listed as not code, or marked."""
    ids = [block.id for block in BLOCKS]
    assert len(ids) == len(set(ids))
    unmarked_python = {block.id for block in BLOCKS if block.lang == "python" and not block.marker}
    assert unmarked_python == PYTHON_RUNS.keys(), "add an entry to PYTHON_RUNS or a marker"
    unmarked_sql = {block.id for block in BLOCKS if block.lang == "sql" and not block.marker}
    assert unmarked_sql == SQL_DATA.keys() | TYPED_SQL, "add an entry to SQL_DATA or a marker"
    json_ids = {block.id for block in BLOCKS if block.lang == "json"}
    assert json_ids >= JSON_FRAGMENTS
    for block in BLOCKS:
        if block.id in NOT_CODE:
            assert block.lang == "", f"{block.id} has a language; run it or mark it"
            assert block.marker is None
        elif block.lang in ("python", "sql", "json", "bash"):
            continue  # run, or checked (bash), by the tests above; marked ones are not run
        else:
            assert block.marker is not None, (
                f"{block.id} ({block.lang or 'no language'}): not run by any test; "
                "add '<!-- not run by tests: REASON -->' before its fence"
            )
    assert {block.id for block in BLOCKS if block.marker and block.lang == "json"} == set()
