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

from rigatoni_s3._gil import with_gil_breaks
from rigatoni_s3.compression import IDENTITY, Codec
from rigatoni_s3.config import KeyGenerationStrategy
from rigatoni_s3.errors import EventError, InvalidEventError, SerializationError
from rigatoni_s3.events import ChangeEvent, EventFields, UtcSeconds, fields_of
from rigatoni_s3.formats import Serializer
from rigatoni_s3.keys import PartitionKey, partition_of


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
    utc_seconds: UtcSeconds = attrs.field(factory=UtcSeconds, eq=False, repr=False)
    """Whole seconds as datetimes, shared by the events of one second."""

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
        """Encode each event into a row of its partition; reject bad events one by one.

        All events are encoded at once (``encode_events``); only when that fails are
        they encoded one by one, to reject exactly the events that cannot be written.
        """
        strategy, utc_seconds = self.strategy, self.utc_seconds
        rejected: list[EventError] = []
        accepted: list[EventFields] = []
        indices: list[int] = []
        partitions: list[PartitionKey] = []
        for index, event in enumerate(with_gil_breaks(events)):
            try:
                fields = fields_of(event, utc_seconds)
            except Exception as exc:  # one bad event must not sink the others
                rejected.append(_rejection(exc, index, None))
                continue
            accepted.append(fields)
            indices.append(index)
            partitions.append(partition_of(strategy, fields.collection, fields.cluster_time, now))
        try:
            rows, sizes = self.serializer.encode_events(accepted)
        except Exception:  # some event cannot be encoded: find it, keep the others
            rows, sizes = self._encode_one_by_one(accepted, indices, partitions, rejected)
            rejected.sort(key=lambda error: error.index or 0)
        groups: dict[PartitionKey, tuple[list[Any], list[int]]] = {}
        for partition, row, size in zip(partitions, rows, sizes, strict=True):
            group = groups.get(partition)
            if group is None:
                groups[partition] = ([row], [size])
            else:
                group[0].append(row)
                group[1].append(size)
        last_token = next(
            (f.resume_token for f in reversed(accepted) if f.resume_token is not None), None
        )
        return PreparedEvents(
            {
                partition: PartitionRows(group_rows, list(accumulate(sized)))
                for partition, (group_rows, sized) in groups.items()
            },
            rejected,
            len(rows),
            sum(sizes),
            last_token,
        )

    def _encode_one_by_one(
        self,
        accepted: list[EventFields],
        indices: list[int],
        partitions: list[PartitionKey],
        rejected: list[EventError],
    ) -> tuple[list[Any], list[int]]:
        """Encode event by event; the rejected ones leave ``accepted`` and ``partitions``."""
        encode = self.serializer.encode_event
        rows: list[Any] = []
        sizes: list[int] = []
        kept = 0
        for fields, index, partition in zip(accepted, indices, partitions, strict=True):
            try:
                row, size = encode(fields)
            except Exception as exc:
                rejected.append(_rejection(exc, index, fields))
                continue
            rows.append(row)
            sizes.append(size)
            accepted[kept], partitions[kept] = fields, partition
            kept += 1
        del accepted[kept:], partitions[kept:]
        return rows, sizes

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
