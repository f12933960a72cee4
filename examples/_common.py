"""Plumbing the examples share: where to write, sample events, and reading objects back.

Every example writes to a bucket on an S3 server of its own (moto, on 127.0.0.1)
unless told to use another one::

    python examples/s3_basic.py                                          # embedded server
    python examples/s3_basic.py --endpoint-url http://127.0.0.1:9000     # MinIO, LocalStack...
    S3_ENDPOINT_URL=http://127.0.0.1:4566 python examples/s3_basic.py    # the same, from the env
    python examples/s3_basic.py --aws --bucket my-data-lake              # Amazon S3 itself

The bucket comes from ``--bucket`` or ``S3_BUCKET``; credentials from the standard
``AWS_*`` variables. Objects are read back with the formats' own libraries (json,
csv, pyarrow, fastavro), never with rigatoni_s3, and compared with what was sent.
"""

from __future__ import annotations

import argparse
import copy
import csv
import gzip
import io
import json
import os
import random
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn, cast

import attrs

from rigatoni_s3 import S3Config, S3ConfigBuilder
from rigatoni_s3.testing import ACCESS_KEY, SECRET_KEY, EmbeddedS3Server, S3Endpoint

DEFAULT_BUCKET = "rigatoni-examples"

# -- where to write ---------------------------------------------------------------------


def argument_parser(description: str | None, *, events: int) -> argparse.ArgumentParser:
    """The options every example takes: which server, bucket and region, how many events."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="an S3-compatible server such as MinIO or LocalStack "
        "(default: $S3_ENDPOINT_URL, else an embedded server on 127.0.0.1)",
    )
    where.add_argument(
        "--aws",
        action="store_true",
        help="write to Amazon S3 itself; the bucket must exist",
    )
    parser.add_argument(
        "--bucket",
        default=os.environ.get("S3_BUCKET") or DEFAULT_BUCKET,
        help="target bucket (default: $S3_BUCKET, else %(default)s)",
    )
    parser.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        help="AWS region (default: $AWS_REGION or $AWS_DEFAULT_REGION, else %(default)s)",
    )
    parser.add_argument(
        "--events",
        type=_count,
        default=events,
        help="change events to write (default: %(default)s)",
    )
    return parser


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@attrs.frozen
class Target:
    """A bucket on some S3 server: the embedded one, MinIO/LocalStack, or Amazon S3."""

    bucket: str
    region: str
    endpoint: S3Endpoint | None
    """None means Amazon S3 itself, with the standard AWS credential chain."""

    def builder(self) -> S3ConfigBuilder:
        """A config builder already pointed at this bucket and server."""
        builder = S3Config.builder().bucket(self.bucket).region(self.region)
        if self.endpoint is None:
            return builder
        return (
            builder.endpoint_url(self.endpoint.url)
            .force_path_style(True)
            .credentials(self.endpoint.access_key_id, self.endpoint.secret_access_key)
        )

    def client(self) -> Any:
        """A plain boto3 client, to look at what was written independently of rigatoni_s3."""
        if self.endpoint is not None:
            return self.endpoint.client()
        import boto3

        return boto3.client("s3", region_name=self.region)

    def __str__(self) -> str:
        server = "Amazon S3" if self.endpoint is None else self.endpoint.url
        return f"s3://{self.bucket} on {server}"


@contextmanager
def open_target(args: argparse.Namespace) -> Iterator[Target]:
    """The target the options name; an embedded server is stopped when the block ends."""
    if args.aws:
        yield Target(args.bucket, args.region, None)
        return
    url = args.endpoint_url or os.environ.get("S3_ENDPOINT_URL")
    if url:
        endpoint = S3Endpoint(
            url,
            os.environ.get("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            os.environ.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            args.region,
        )
        endpoint.create_bucket(args.bucket)  # a no-op when it exists already
        yield Target(args.bucket, args.region, endpoint)
        return
    print("starting an embedded S3 server (moto) on 127.0.0.1 ...", flush=True)
    with EmbeddedS3Server() as endpoint:
        endpoint.create_bucket(args.bucket)
        yield Target(args.bucket, endpoint.region, endpoint)


def run_main(main: Callable[[], int]) -> NoReturn:
    """Run an example's ``main`` and exit with its status.

    An unreachable server, missing credentials or a refusal from S3 ends with one
    line on stderr (and status 2) rather than a traceback.
    """
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    from rigatoni_s3.errors import RigatoniS3Error

    try:
        status = main()
    except (ClientError, EndpointConnectionError, NoCredentialsError, RigatoniS3Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    sys.exit(status)


# -- sample change events -----------------------------------------------------------------

DATABASE = "shop"
COLLECTIONS = ("users", "orders", "products", "inventory")
START = datetime(2025, 1, 15, 21, 40, tzinfo=UTC)
"""First event; with the default four hours the events cross midnight UTC."""

_CITIES = ("Lyon", "Porto", "Kraków", "Osaka", "Austin", "Nairobi", "Tromsø")
_TAGS = ("vip", "beta", "newsletter", "b2b", "mobile", "churn-risk")
_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
_MUTABLE = {
    "users": ("plan", "address.city", "last_login", "tags"),
    "orders": ("status", "updated_at"),
    "products": ("price", "stock", "rating"),
    "inventory": ("qty", "updated_at"),
}
"""Fields an update may change, per collection (dotted paths reach into sub-documents)."""


def sample_events(
    count: int, *, hours: float = 4.0, seed: int = 7, start: datetime = START
) -> list[dict[str, Any]]:
    """``count`` raw change-stream documents as pymongo yields them, oldest first.

    Inserts, updates (with ``updateDescription`` and the post-image, as with
    ``full_document="updateLookup"``), replaces and deletes over the collections of
    one database, spread evenly over ``hours``. Deterministic for a ``seed``. No
    pymongo needed: ObjectIds are hex strings, ``clusterTime`` is a BSON Timestamp in
    its Extended JSON form, dates are aware UTC datetimes (pymongo's ``tz_aware=True``)
    and Decimal128 values are :class:`~decimal.Decimal`.
    """
    rng = random.Random(seed)
    live: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in COLLECTIONS}
    events: list[dict[str, Any]] = []
    step = hours * 3600 / max(count, 1)
    second, increment = -1, 0
    for n in range(count):
        when = start + timedelta(seconds=n * step)
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)  # BSON dates are ms
        seconds = int(when.timestamp())
        increment = increment + 1 if seconds == second else 1
        second = seconds
        collection = rng.choice(COLLECTIONS)
        docs = live[collection]
        operation = "insert"
        if len(docs) >= 5:
            operation = rng.choices(("insert", "update", "replace", "delete"), (45, 35, 8, 12))[0]
        event: dict[str, Any] = {
            "_id": {"_data": f"82{seconds:08X}{increment:08X}2B022C0100296E5A1004{n:08X}04"},
            "operationType": operation,
            "clusterTime": {"$timestamp": {"t": seconds, "i": increment}},
            "wallTime": when,
            "ns": {"db": DATABASE, "coll": collection},
        }
        if operation == "insert":
            doc_id = f"{seconds:08x}{rng.getrandbits(64):016x}"
            docs[doc_id] = _document(collection, doc_id, when, rng)
        else:
            doc_id = rng.choice(list(docs))
        event["documentKey"] = {"_id": doc_id}
        if operation == "update":
            event["updateDescription"] = _update(collection, docs[doc_id], when, rng)
        elif operation == "replace":
            docs[doc_id] = _document(collection, doc_id, when, rng)
        elif operation == "delete":
            del docs[doc_id]
        if operation != "delete":
            event["fullDocument"] = copy.deepcopy(docs[doc_id])
        events.append(event)
    return events


def _document(collection: str, doc_id: str, when: datetime, rng: random.Random) -> dict[str, Any]:
    """A plausible document of one collection."""
    sku = f"SKU-{rng.randrange(10_000):05d}"
    if collection == "users":
        doc: dict[str, Any] = {
            "_id": doc_id,
            "email": f"user{rng.randrange(100_000)}@example.com",
            "plan": rng.choice(("free", "pro", "team")),
            "address": {"city": rng.choice(_CITIES), "zip": f"{rng.randrange(100_000):05d}"},
            "tags": rng.sample(_TAGS, k=rng.randint(1, 3)),
            "signed_up": when - timedelta(days=rng.randrange(900)),
            "last_login": when,
        }
        if rng.random() < 0.3:
            doc["nickname"] = rng.choice(("Zoë", "Kai", "Ana", "Jun"))
        return doc
    if collection == "orders":
        lines = [
            (f"SKU-{rng.randrange(10_000):05d}", rng.randint(1, 4), _price(rng))
            for _ in range(rng.randint(1, 4))
        ]
        return {
            "_id": doc_id,
            "customer": f"{rng.getrandbits(96):024x}",
            "items": [{"sku": item, "qty": qty, "price": price} for item, qty, price in lines],
            "total": sum((price * qty for _, qty, price in lines), Decimal(0)),
            "status": "pending",
            "updated_at": when,
        }
    if collection == "products":
        return {
            "_id": doc_id,
            "sku": sku,
            "title": f"Widget {sku[-3:]}",
            "price": _price(rng),
            "stock": rng.randrange(500),
            "rating": round(rng.uniform(1, 5), 2),
            "dimensions_cm": [rng.randint(1, 80) for _ in range(3)],
        }
    return {
        "_id": doc_id,
        "sku": sku,
        "warehouse": rng.choice(("AMS", "ORD", "NRT")),
        "qty": rng.randrange(1_000),
        "updated_at": when,
    }


def _price(rng: random.Random) -> Decimal:
    return Decimal(rng.randrange(199, 99_999)) / 100


def _update(
    collection: str, doc: dict[str, Any], when: datetime, rng: random.Random
) -> dict[str, Any]:
    """Change ``doc`` in place; return the ``updateDescription`` MongoDB would report."""
    fresh = _document(collection, doc["_id"], when, rng)
    if collection == "orders":
        fresh["status"] = rng.choice(_STATUSES)
    updated: dict[str, Any] = {}
    for path in rng.sample(_MUTABLE[collection], k=rng.randint(1, 2)):
        head, _, tail = path.partition(".")
        if tail:
            doc[head][tail] = updated[path] = fresh[head][tail]
        else:
            doc[head] = updated[path] = fresh[head]
    removed: list[str] = []
    if "nickname" in doc and rng.random() < 0.3:
        del doc["nickname"]
        removed.append("nickname")
    truncated: list[dict[str, Any]] = []
    if (
        collection == "users"
        and "tags" not in updated
        and len(doc["tags"]) > 1
        and rng.random() < 0.3
    ):
        doc["tags"] = doc["tags"][:1]
        truncated.append({"field": "tags", "newSize": 1})
    return {"updatedFields": updated, "removedFields": removed, "truncatedArrays": truncated}


def batches(events: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``events`` in slices of ``size``, the way a change stream hands them over."""
    for first in range(0, len(events), size):
        yield events[first : first + size]


# -- reading back -----------------------------------------------------------------------


@attrs.frozen
class StoredObject:
    """One object as S3 returns it, decoded by the format's own library."""

    key: str
    size: int
    content_encoding: str | None
    body: bytes = attrs.field(repr=False)
    """As stored, still compressed."""
    records: list[dict[str, Any]]
    error: str | None = None
    """Why the object could not be decoded (then ``records`` is empty)."""


def list_keys(client: Any, bucket: str, prefix: str, writer_id: str | None = None) -> list[str]:
    """Keys under ``prefix``; with ``writer_id``, only the objects that writer created."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    if writer_id is not None:  # file names are {ms}-{writer_id}-{sequence}.{ext}
        keys = [key for key in keys if f"-{writer_id}-" in key.rsplit("/", 1)[-1]]
    return sorted(keys)


def read_objects(client: Any, bucket: str, keys: Sequence[str]) -> list[StoredObject]:
    """Download and decode every object of ``keys``."""
    objects = []
    for key in keys:
        response = client.get_object(Bucket=bucket, Key=key)
        body: bytes = response["Body"].read()
        encoding = response.get("ContentEncoding")
        try:
            records = decode(key, body)
        except Exception as exc:  # a reader's complaint is a finding, not a crash
            objects.append(StoredObject(key, len(body), encoding, body, [], f"{exc!r}"))
        else:
            objects.append(StoredObject(key, len(body), encoding, body, records))
    return objects


def decode(key: str, body: bytes) -> list[dict[str, Any]]:
    """The records of one object, chosen by its extension (``.jsonl.gz``, ``.parquet``...)."""
    name = key.rsplit("/", 1)[-1]
    if name.endswith(".gz"):
        body, name = gzip.decompress(body), name[:-3]
    elif name.endswith(".zst"):
        import zstandard

        body, name = zstandard.ZstdDecompressor().decompressobj().decompress(body), name[:-4]
    extension = name.rsplit(".", 1)[-1]
    if extension == "jsonl":
        return [json.loads(line) for line in body.splitlines()]
    if extension == "csv":
        return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    if extension == "parquet":
        import pyarrow.parquet

        rows: list[dict[str, Any]] = pyarrow.parquet.read_table(io.BytesIO(body)).to_pylist()
        return rows
    if extension == "avro":
        import fastavro

        return cast(list[dict[str, Any]], list(fastavro.reader(io.BytesIO(body))))
    raise ValueError(f"no reader for {key!r}")


def expected_record(event: Mapping[str, Any]) -> dict[str, Any]:
    """What a reader should find for one raw event, in plain JSON terms."""
    return {
        "operation": event["operationType"],
        "database": event["ns"]["db"],
        "collection": event["ns"]["coll"],
        "cluster_time": datetime.fromtimestamp(event["clusterTime"]["$timestamp"]["t"], UTC),
        "document_key": _plain(event.get("documentKey")),
        "full_document": _plain(event.get("fullDocument")),
        "update_description": _plain(event.get("updateDescription")),
        "resume_token": _plain(event.get("_id")),
    }


def normalized(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record read from any format, in the terms of :func:`expected_record`.

    CSV cells are text (an empty cell is null), and the formats that have no
    nested JSON values keep documents as JSON text; both are decoded here.
    """
    out: dict[str, Any] = {name: record.get(name) or None for name in _TEXT_FIELDS}
    out["cluster_time"] = _instant(record.get("cluster_time"))
    for name in _DOCUMENT_FIELDS:
        value = record.get(name)
        out[name] = (json.loads(value) if value else None) if isinstance(value, str) else value
    return out


_TEXT_FIELDS = ("operation", "database", "collection")
_DOCUMENT_FIELDS = ("document_key", "full_document", "update_description", "resume_token")


def compare(sent: Sequence[Mapping[str, Any]], objects: Sequence[StoredObject]) -> list[str]:
    """Every difference between the events sent and the records read back, as sentences."""
    expected = {event["_id"]["_data"]: expected_record(event) for event in sent}
    seen: set[str] = set()
    problems: list[str] = []
    for obj in objects:
        if obj.error is not None:
            problems.append(f"{obj.key}: unreadable: {obj.error}")
        for record in obj.records:
            got = normalized(record)
            resume_token = got["resume_token"]
            token = str(resume_token.get("_data") if isinstance(resume_token, dict) else None)
            want = expected.get(token)
            if want is None:
                problems.append(f"{obj.key}: a record that was never sent ({resume_token!r})")
                continue
            if token in seen:
                problems.append(f"{obj.key}: event {token} read twice")
            elif got != want:
                fields = ", ".join(name for name in want if got.get(name) != want[name])
                problems.append(f"{obj.key}: event {token} differs in {fields}")
            seen.add(token)
    if missing := len(expected.keys() - seen):
        problems.append(f"{missing} of {len(expected)} events were not read back")
    return problems


def _plain(value: Any) -> Any:
    """A Python value as JSON holds it: datetimes as ISO-8601 UTC text, decimals as text."""
    if isinstance(value, datetime):  # naive means UTC, as pymongo decodes BSON dates
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.isoformat().replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _instant(value: Any) -> datetime | None:
    if isinstance(value, str) and value:
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return None


# -- printing -------------------------------------------------------------------------------


def render_tree(keys: Sequence[str], root: str = "", *, limit: int = 2, files: int = 8) -> str:
    """Keys as a directory tree under ``root``.

    Each directory shows at most ``limit`` sub-directories and ``files`` files; the
    rest are summed up as ``… N more``. A chain of single children is one line.
    """
    tree: dict[str, Any] = {}
    for key in keys:
        *folders, name = key.removeprefix(root).lstrip("/").split("/")
        node = tree
        for folder in folders:
            node = node.setdefault(folder + "/", {})
        node[name] = None
    lines = [root or "/"]

    def count(node: dict[str, Any] | None) -> int:
        return 1 if node is None else sum(count(child) for child in node.values())

    def walk(node: dict[str, Any], indent: str) -> None:
        folders = sorted(name for name in node if node[name] is not None)
        names = sorted(name for name in node if node[name] is None)
        shown = folders[:limit] + names[:files]
        hidden = folders[limit:] + names[files:]
        for i, name in enumerate(shown):
            last = i == len(shown) - 1 and not hidden
            child, label = node[name], name
            while child is not None and len(child) == 1:  # fold a chain into one line
                (inner, child), *_ = child.items()
                label += inner
            lines.append(f"{indent}{'└── ' if last else '├── '}{label}")
            if child is not None:
                walk(child, indent + ("    " if last else "│   "))
        if hidden:
            objects = sum(count(node[name]) for name in hidden)
            plural = "" if objects == 1 else "s"
            lines.append(f"{indent}└── … {len(hidden)} more ({objects} object{plural})")

    walk(tree, "")
    return "\n".join(lines)


def render_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table; numbers are right-aligned and get thousands separators."""
    cells = [list(header)] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [bool(rows) and isinstance(rows[0][i], int | float) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)
