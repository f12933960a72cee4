"""Partitions and object keys: pure functions, one layout per strategy.

A *partition* is the key prefix an event belongs to: its collection plus, for the
time-based strategies, the UTC hour or day of its ``cluster_time``. Every event of
a buffer shares one partition, so a buffer becomes exactly one object.

Layouts (``{prefix}/`` is left out when the prefix is empty)::

    HIVE_PARTITIONED       {prefix}/collection={c}/year={Y}/month={M}/day={D}/hour={H}/{file}
    DATE_HOUR_PARTITIONED  {prefix}/{c}/{Y}/{M}/{D}/{H}/{file}
    DATE_PARTITIONED       {prefix}/{c}/{Y}/{M}/{D}/{file}
    COLLECTION_BASED       {prefix}/{c}/{file}
    FLAT                   {prefix}/{c}_{file}

``{file}`` is ``{milliseconds}-{writer_id}-{sequence}.{extension}``: the time the
batch was sealed, the writer's id (unique per destination) and a per-writer
counter, so two objects never share a key.

Collection names are escaped the way Hive escapes partition values (``%XX``), which
is also what pyarrow, Spark and Trino decode: ``/``, ``=``, ``%``, control
characters and the rest of Hive's list, plus ``..``. A name therefore never
leaves its prefix nor forges a ``name=value`` segment.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import partial
from typing import NamedTuple

from rigatoni_s3.config import KeyGenerationStrategy

HOUR = 3600
DAY = 86400

NULL_COLLECTION = "__HIVE_DEFAULT_PARTITION__"
"""Segment used for events without a collection (e.g. ``dropDatabase``); Hive readers read it as null."""

# Hive's FileUtils.escapePathName set, plus DEL; all of these become %XX.
_ESCAPED = frozenset("\"#%'*/:=?\\{[]^\x7f") | frozenset(chr(c) for c in range(0x20))
_ESCAPE_TABLE = {ord(ch): f"%{ord(ch):02X}" for ch in _ESCAPED}


class PartitionKey(NamedTuple):
    """Which object an event goes to: collection and time bucket (epoch seconds, or None).

    A tuple, so that building and hashing one per event stays cheap."""

    collection: str | None
    period_start: int | None


def granularity(strategy: KeyGenerationStrategy) -> int | None:
    """Seconds per time bucket of a strategy; None when time plays no part in the key."""
    if strategy in (
        KeyGenerationStrategy.HIVE_PARTITIONED,
        KeyGenerationStrategy.DATE_HOUR_PARTITIONED,
    ):
        return HOUR
    if strategy is KeyGenerationStrategy.DATE_PARTITIONED:
        return DAY
    return None


def partition_of(
    strategy: KeyGenerationStrategy,
    collection: str | None,
    when: datetime | None,
    fallback: datetime,
) -> PartitionKey:
    """The partition of one event whose ``cluster_time`` is ``when``.

    An event without a ``cluster_time`` (``None``) goes to the bucket of ``fallback``,
    the time it was written. Buckets are floored, so an instant before 1970 stays in
    its own hour rather than the next one.
    """
    seconds = math.floor((fallback if when is None else when).timestamp())
    return new_partition_key((collection, period_start(seconds, granularity(strategy))))


def period_start(seconds: int, step: int | None) -> int | None:
    """The start of the bucket of ``step`` seconds that holds ``seconds`` since the epoch
    (floored, as Python's ``%`` is); None when time plays no part in the key (no step).
    The raw BSON readers place events by the same rule."""
    return None if step is None else seconds - seconds % step


new_partition_key = partial(tuple.__new__, PartitionKey)
"""Builds a :class:`PartitionKey` without the Python-level ``__new__`` (one per event)."""


def escape_segment(name: str | None) -> str:
    """A collection name as one safe key segment (Hive escaping, and ``..`` broken up)."""
    if not name:
        return NULL_COLLECTION
    escaped = name.translate(_ESCAPE_TABLE)
    if ".." in escaped or escaped == ".":
        escaped = escaped.replace(".", "%2E")
    return escaped


def partition_prefix(prefix: str, strategy: KeyGenerationStrategy, partition: PartitionKey) -> str:
    """The key prefix of a partition, without a trailing ``/`` (FLAT: just ``prefix``)."""
    coll = escape_segment(partition.collection)
    if strategy is KeyGenerationStrategy.FLAT:
        parts: list[str] = []
    elif strategy is KeyGenerationStrategy.COLLECTION_BASED or partition.period_start is None:
        parts = [coll]
    else:
        t = datetime.fromtimestamp(partition.period_start, tz=UTC)
        if strategy is KeyGenerationStrategy.HIVE_PARTITIONED:
            parts = [
                f"collection={coll}",
                f"year={t.year:04d}",
                f"month={t.month:02d}",
                f"day={t.day:02d}",
                f"hour={t.hour:02d}",
            ]
        elif strategy is KeyGenerationStrategy.DATE_HOUR_PARTITIONED:
            parts = [coll, f"{t.year:04d}", f"{t.month:02d}", f"{t.day:02d}", f"{t.hour:02d}"]
        else:
            parts = [coll, f"{t.year:04d}", f"{t.month:02d}", f"{t.day:02d}"]
    return "/".join([prefix, *parts] if prefix else parts)


def file_name(created_ms: int, writer_id: str, sequence: int, extension: str) -> str:
    """``{ms}-{writer_id}-{sequence:06d}.{extension}``: sortable by time, unique per writer."""
    return f"{created_ms}-{writer_id}-{sequence:06d}.{extension}"


def object_key(
    prefix: str, strategy: KeyGenerationStrategy, partition: PartitionKey, name: str
) -> str:
    """The full object key of a batch of ``partition`` stored under file ``name``."""
    head = partition_prefix(prefix, strategy, partition)
    if strategy is KeyGenerationStrategy.FLAT:
        name = f"{escape_segment(partition.collection)}_{name}"
    return f"{head}/{name}" if head else name
