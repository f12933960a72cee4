"""The encode stage: pure, synchronous functions that run in the thread pool.

``prepare`` turns a ``write_batch`` call into rows grouped by partition; ``encode``
turns one partition's rows into an object body. Neither touches S3 or the event
loop, so both can be tested and benchmarked alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import accumulate
from typing import Any, cast

import attrs

from rigatoni_s3._bsonjson import envelopes_batch, group_rows, lines_batch
from rigatoni_s3._gil import GilBreaker, with_gil_breaks
from rigatoni_s3._projection import Projection
from rigatoni_s3.compression import IDENTITY, Codec
from rigatoni_s3.config import KeyGenerationStrategy
from rigatoni_s3.errors import EventError, InvalidEventError, SerializationError
from rigatoni_s3.events import ChangeEvent, EventFields, UtcSeconds, fields_of
from rigatoni_s3.formats import Serializer
from rigatoni_s3.formats._envelope import EnvelopeRow
from rigatoni_s3.keys import PartitionKey, granularity, new_partition_key, partition_of


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
    type_mismatches: int = 0
    """Values of accepted events written as null because they could not take their
    typed column's type."""


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
    projection: Projection | None = attrs.field(init=False, eq=False, repr=False)
    """Reads the serializer's typed columns out of events; None without any."""

    @projection.default
    def _projection(self) -> Projection | None:
        return Projection(self.serializer.columns) if self.serializer.columns else None

    @property
    def outer_codec(self) -> Codec:
        """The whole-object codec: none for formats that compress internally (Parquet, Avro)."""
        return IDENTITY if self.serializer.compresses_internally else self.codec

    @property
    def extension(self) -> str:
        """File extension, with the codec's suffix only when the whole object is compressed."""
        suffix = self.outer_codec.extension
        return f"{self.serializer.extension}.{suffix}" if suffix else self.serializer.extension

    def prepare(self, events: Sequence[Event], now: datetime) -> PreparedEvents:
        """Encode each event into a row of its partition; reject bad events one by one.

        Raw BSON events (``bytes``, ``memoryview``, ``RawBSONDocument``) are read by
        :mod:`rigatoni_s3._bsonjson` without being decoded; the others are read as
        ChangeEvents or decoded change-stream documents. Either way all the events are
        encoded at once; only when that fails are decoded ones encoded one by one, to
        reject exactly the events that cannot be written. ``now`` places events
        without a ``cluster_time``.
        """
        rejected: list[EventError] = []
        count = len(events)
        raw_at = _raw_positions(events)
        if not raw_at:
            part = self._encode_decoded(events, range(count), now, rejected)
        elif len(raw_at) == count:
            part = self._encode_raw(cast(Sequence[RawBson], events), raw_at, now, rejected)
        else:
            raw = set(raw_at)
            decoded_at = [index for index in range(count) if index not in raw]
            part = _merged(
                self._encode_decoded([events[i] for i in decoded_at], decoded_at, now, rejected),
                self._encode_raw([cast(RawBson, events[i]) for i in raw_at], raw_at, now, rejected),
            )
            rejected.sort(key=lambda error: error.index or 0)
        return _prepared(part, rejected)

    def prepare_whole(self, events: Sequence[Event], now: datetime) -> PreparedEvents | None:
        """:meth:`prepare` for a call of raw BSON events none of which is a fragment of a
        split event; None for any other call, with nothing kept.

        The walk that encodes raw events also looks for the bytes of ``splitEvent`` in
        each, without the GIL, which saves a pass over the call before it: most calls
        hold no fragment and are done here; the few that may hold one are put together
        first (:func:`rigatoni_s3._fragments.reassemble`) and encoded again.
        """
        if not events or not is_raw_bson(events[0]) or len(_raw_positions(events)) < len(events):
            return None
        rejected: list[EventError] = []
        part = self._encode_raw(cast(Sequence[RawBson], events), range(len(events)), now, rejected)
        return None if part.may_hold_fragments else _prepared(part, rejected)

    def _encode_decoded(
        self,
        events: Sequence[Event],
        indices: Sequence[int],
        now: datetime,
        rejected: list[EventError],
    ) -> _Encoded:
        """Rows of ChangeEvents and decoded documents, at ``indices`` of the call."""
        strategy, utc_seconds = self.strategy, self.utc_seconds
        accepted: list[EventFields] = []
        kept: list[int] = []
        partitions: list[PartitionKey] = []
        for index, event in zip(indices, with_gil_breaks(events), strict=True):
            try:
                fields = fields_of(event, utc_seconds)  # type: ignore[arg-type]
            except Exception as exc:  # one bad event must not sink the others
                rejected.append(_rejection(exc, index, None))
                continue
            accepted.append(fields)
            kept.append(index)
            partitions.append(partition_of(strategy, fields.collection, fields.cluster_time, now))
        try:
            rows, sizes = self.serializer.encode_events(accepted)
        except Exception:  # some event cannot be encoded: find it, keep the others
            rows, sizes = self._encode_one_by_one(accepted, kept, partitions, rejected)
            rejected.sort(key=lambda error: error.index or 0)
        last_token = next(
            (
                (index, fields.resume_token)
                for index, fields in zip(reversed(kept), reversed(accepted), strict=True)
                if fields.resume_token is not None
            ),
            None,
        )
        mismatches = 0
        if self.projection is not None:
            values, mismatches = self.projection.values_of(accepted)
            rows, sizes = self.serializer.with_columns(rows, sizes, values)
        return _Encoded(kept, partitions, rows, sizes, last_token, mismatches)

    def _encode_raw(
        self,
        documents: Sequence[RawBson],
        indices: Sequence[int],
        now: datetime,
        rejected: list[EventError],
    ) -> _Encoded:
        """Rows of raw BSON events, at ``indices`` of the call; malformed ones rejected.

        The reader builds the rows with their partitions in one pass: JSON Lines rows
        whole, envelope rows for the other formats.
        """
        place = (
            documents,
            granularity(self.strategy),
            math.floor(now.timestamp()),
            new_partition_key,
        )
        if self.serializer.rows_are_lines:
            batch = lines_batch(*place, GilBreaker())
            rows, sizes = batch.rows, [len(row) + 1 for row in batch.rows]
        else:
            batch = envelopes_batch(*place, EnvelopeRow, GilBreaker())
            rows, sizes = self.serializer.encode_envelopes(batch.rows)
        for position, reason in batch.rejected:
            rejected.append(InvalidEventError(reason, index=indices[position]))
        last_token = None
        if batch.last_span is not None:
            position, span = batch.last_span
            last_token = (indices[position], raw_document(documents[position], span))
        mismatches = 0
        if self.projection is not None:
            values, mismatches = self.projection.values_of_raw(
                [documents[position] for position in batch.positions]
            )
            rows, sizes = self.serializer.with_columns(rows, sizes, values)
        return _Encoded(
            [indices[position] for position in batch.positions],
            batch.partitions,
            rows,
            sizes,
            last_token,
            mismatches,
            batch.may_hold_fragments,
        )

    def _encode_one_by_one(
        self,
        accepted: list[EventFields],
        indices: list[int],
        partitions: list[PartitionKey],
        rejected: list[EventError],
    ) -> tuple[list[Any], list[int]]:
        """Encode event by event; the rejected ones leave ``accepted``, ``indices`` and
        ``partitions``."""
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
            accepted[kept], indices[kept], partitions[kept] = fields, index, partition
            kept += 1
        del accepted[kept:], indices[kept:], partitions[kept:]
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


Event = ChangeEvent | Mapping[str, Any] | bytes | bytearray | memoryview
"""What ``write_batch`` takes: a ChangeEvent, a decoded change-stream document, or one
as raw BSON (``RawBSONDocument`` is a Mapping)."""

RawBson = bytes | bytearray | memoryview | Mapping[str, Any]


def _raw_positions(events: Sequence[Event]) -> Sequence[int]:
    """Where the raw BSON events of a call are; a call of one kind of event (the usual
    one) is answered by its first."""
    count = len(events)
    first = type(events[0]) if count else dict
    if all(type(event) is first for event in events):
        return range(count) if count and is_raw_bson(events[0]) else ()
    return [index for index, event in enumerate(events) if is_raw_bson(event)]


def is_raw_bson(event: object) -> bool:
    """True for an event given as BSON bytes or as pymongo's ``RawBSONDocument``."""
    kind = type(event)
    if kind is dict:  # the common decoded case, answered first
        return False
    if kind is bytes or kind is memoryview or kind is bytearray:
        return True
    return kind.__name__ == "RawBSONDocument" and kind.__module__.startswith("bson")


def raw_document(document: RawBson, span: tuple[int, int]) -> Any:
    """The embedded document at ``span`` of a raw event, as a ``RawBSONDocument``
    (which ``watch(resume_after=...)`` takes), or as bytes without pymongo."""
    raw: Any = getattr(document, "raw", document)
    start, end = span
    data = bytes(memoryview(raw).cast("B")[start:end])
    try:
        from bson.raw_bson import RawBSONDocument
    except ImportError:  # bytes came in, and pymongo is not installed
        return data
    return RawBSONDocument(data)


@attrs.define
class _Encoded:
    """Rows of some of a call's events: their positions, partitions, rows and sizes."""

    indices: list[int]
    partitions: list[PartitionKey]
    rows: list[Any]
    sizes: list[int]
    last_token: tuple[int, Any] | None
    """Position and resume token of the last event that has one."""
    mismatches: int = 0
    """Typed values written as null for not fitting their column."""
    may_hold_fragments: bool = True
    """False when the walk of raw events found no ``splitEvent`` bytes in any of them."""


def _prepared(part: _Encoded, rejected: list[EventError]) -> PreparedEvents:
    """A call's rows grouped by partition, with running byte totals."""
    groups = group_rows(part.partitions, part.rows, part.sizes)
    return PreparedEvents(
        {
            partition: PartitionRows(rows, list(accumulate(sizes)))
            for partition, (rows, sizes) in groups.items()
        },
        rejected,
        len(part.rows),
        sum(part.sizes),
        None if part.last_token is None else part.last_token[1],
        part.mismatches,
    )


def _merged(first: _Encoded, second: _Encoded) -> _Encoded:
    """Two parts of one call back in the call's order."""
    if not second.rows:
        return first
    if not first.rows:
        return second
    order = sorted(
        [(index, 0, n) for n, index in enumerate(first.indices)]
        + [(index, 1, n) for n, index in enumerate(second.indices)]
    )
    parts = (first, second)
    tokens = [t for t in (first.last_token, second.last_token) if t is not None]
    return _Encoded(
        [index for index, _, _ in order],
        [parts[p].partitions[n] for _, p, n in order],
        [parts[p].rows[n] for _, p, n in order],
        [parts[p].sizes[n] for _, p, n in order],
        max(tokens, key=lambda token: token[0]) if tokens else None,
        first.mismatches + second.mismatches,
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
