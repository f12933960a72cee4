"""The encode stage: pure, synchronous functions that run in the thread pool.

``prepare`` turns a ``write_batch`` call into rows grouped by partition; ``encode``
turns one partition's rows into an object body. Neither touches S3 or the event
loop, so both can be tested and benchmarked alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import accumulate
from typing import Any

import attrs

from rigatoni_s3.compression import IDENTITY, Codec
from rigatoni_s3.config import KeyGenerationStrategy
from rigatoni_s3.errors import EventError, InvalidEventError, SerializationError
from rigatoni_s3.events import ChangeEvent, EventFields, fields_of
from rigatoni_s3.formats import Serializer
from rigatoni_s3.keys import PartitionKey, granularity


@attrs.frozen
class PartitionRows:
    """Rows of one partition from one ``write_batch`` call, with running byte totals."""

    rows: list[Any]
    cumulative_bytes: list[int]
    """``cumulative_bytes[i]`` is the size of ``rows[: i + 1]``, for splitting at a byte limit."""


@attrs.frozen
class PreparedEvents:
    """A ``write_batch`` call after encoding: rows per partition, and what was rejected."""

    partitions: dict[PartitionKey, PartitionRows]
    rejected: list[EventError]
    accepted: int
    nbytes: int
    last_resume_token: Any
    """Resume token of the last accepted event that has one."""


@attrs.frozen
class EncodedObject:
    """An object body ready to upload."""

    body: bytes
    content_type: str
    content_encoding: str | None
    events: int
    raw_bytes: int
    """Size of the rows before compression."""


@attrs.frozen
class Encoder:
    """The format and codec of one destination, and how events map to partitions."""

    serializer: Serializer
    codec: Codec
    strategy: KeyGenerationStrategy

    @property
    def outer_codec(self) -> Codec:
        """The whole-object codec: none for formats that compress internally (Parquet, Avro)."""
        return IDENTITY if self.serializer.compresses_internally else self.codec

    @property
    def extension(self) -> str:
        """File extension, with the codec's suffix only when the whole object is compressed."""
        suffix = self.outer_codec.extension
        return f"{self.serializer.extension}.{suffix}" if suffix else self.serializer.extension

    def prepare(
        self, events: Sequence[ChangeEvent | Mapping[str, Any]], now: datetime
    ) -> PreparedEvents:
        """Encode each event into a row of its partition; reject bad events one by one."""
        step = granularity(self.strategy)
        now_seconds = int(now.timestamp())
        encode = self.serializer.encode_event
        groups: dict[tuple[str | None, int | None], tuple[list[Any], list[int]]] = {}
        rejected: list[EventError] = []
        last_token: Any = None
        for index, event in enumerate(events):
            fields: EventFields | None = None
            try:
                fields = fields_of(event)
                row, size = encode(fields)
            except Exception as exc:  # one bad event must not sink the others
                rejected.append(_rejection(exc, index, fields))
                continue
            period = None
            if step is not None:
                seconds = (
                    now_seconds
                    if fields.cluster_time is None
                    else int(fields.cluster_time.timestamp())
                )
                period = seconds // step * step
            group = groups.get((fields.collection, period))
            if group is None:
                group = groups[(fields.collection, period)] = ([], [])
            group[0].append(row)
            group[1].append(size)
            if fields.resume_token is not None:
                last_token = fields.resume_token
        partitions = {
            PartitionKey(collection, period): PartitionRows(rows, list(accumulate(sizes)))
            for (collection, period), (rows, sizes) in groups.items()
        }
        nbytes = sum(p.cumulative_bytes[-1] for p in partitions.values())
        accepted = len(events) - len(rejected)
        return PreparedEvents(partitions, rejected, accepted, nbytes, last_token)

    def encode(self, rows: Sequence[Any], raw_bytes: int) -> EncodedObject:
        """One object body from the rows of one partition buffer."""
        body = self.serializer.serialize(rows)
        codec = self.outer_codec
        return EncodedObject(
            body=codec.compress(body),
            content_type=self.serializer.content_type,
            content_encoding=codec.content_encoding,
            events=len(rows),
            raw_bytes=raw_bytes,
        )


def _rejection(exc: Exception, index: int, fields: EventFields | None) -> EventError:
    """The error of one rejected event, with its position, collection and document key."""
    if isinstance(exc, EventError):
        kind, reason, field = type(exc), exc.reason, exc.field
    elif fields is None:
        kind, reason, field = InvalidEventError, f"{type(exc).__name__}: {exc}", None
    else:
        kind, reason, field = SerializationError, f"{type(exc).__name__}: {exc}", None
    error = kind(
        reason,
        collection=fields.collection if fields else None,
        document_key=fields.document_key if fields else None,
        field=field,
        index=index,
    )
    error.__cause__ = exc
    return error
