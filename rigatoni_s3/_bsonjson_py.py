"""Raw BSON change events to our JSON: the pure-Python reference.

Decodes with pymongo's ``bson`` and reuses the dict path (:func:`fields_of` and
:func:`~rigatoni_s3.formats._json.dumps`), so its output is by construction what the
rest of the library writes for the same event. The compiled module must agree with it
byte for byte; it is also the fallback when that module is not built.

Beyond what pymongo checks, an event nested deeper than :data:`MAX_DEPTH` documents or
arrays is rejected: the compiled walker bounds its work by that limit, and both modes
must accept the same inputs.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from rigatoni_s3.errors import EventError
from rigatoni_s3.events import fields_of
from rigatoni_s3.formats._json import dumps
from rigatoni_s3.keys import period_start

MAX_DEPTH = 100
"""Most documents and arrays one event may nest, the event itself counted."""


class RawEnvelope(NamedTuple):
    """One raw change event turned into the envelope and its documents' JSON."""

    operation: str
    database: str | None
    collection: str | None
    cluster_time_ms: int | None
    """Milliseconds since the epoch: a Timestamp's seconds * 1000, or a datetime's."""
    cluster_time_increment: int | None
    """A Timestamp's increment; None for a datetime or no clusterTime."""
    document_key: bytes | None
    full_document: bytes | None
    update_description: bytes | None
    resume_token: bytes | None
    full_document_before_change: bytes | None
    wall_time_ms: int | None
    """``wallTime`` in milliseconds since the epoch."""
    transaction: bytes | None
    extra: bytes | None
    resume_token_span: tuple[int, int] | None
    """Offsets of ``_id``'s embedded document in the input, when it is one."""
    line: bytes | None = None
    """The event's JSON Lines row (without the line break), when asked for."""


Document = bytes | bytearray | memoryview | Mapping[str, Any]
"""What :func:`convert_batch` takes: raw BSON, or a ``RawBSONDocument``."""

JSON_FIELDS = (
    "document_key",
    "full_document",
    "update_description",
    "resume_token",
    "full_document_before_change",
    "transaction",
    "extra",
)
"""The envelope fields written as JSON, in :class:`RawEnvelope` order."""

_DEEP_ENOUGH = 5 + 7 * MAX_DEPTH
"""The fewest bytes a document nesting more than MAX_DEPTH levels takes: each level
below the top adds a type byte, an empty name and an empty document."""

_INT32 = struct.Struct("<i")


class _Pymongo(NamedTuple):
    """What this module uses of pymongo's ``bson``, an optional dependency."""

    bson: Any
    options: Any
    """pymongo's default codec options, except that out-of-range dates decode."""
    dbref: type
    code: type
    containers: frozenset[type]
    """Types :func:`_deeper_than` descends into."""


@functools.cache
def _pymongo() -> _Pymongo:
    """pymongo's ``bson``, imported on first use (a memo of the import, like sys.modules)."""
    try:
        import bson
        from bson.code import Code
        from bson.codec_options import CodecOptions, DatetimeConversion
        from bson.dbref import DBRef
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "raw BSON change events need pymongo's bson package: pip install pymongo"
        ) from exc
    options: Any = CodecOptions(
        tz_aware=False, datetime_conversion=DatetimeConversion.DATETIME_AUTO
    )
    return _Pymongo(bson, options, DBRef, Code, frozenset((dict, list, DBRef, Code)))


def convert_batch(documents: Sequence[Document], lines: bool = False) -> list[RawEnvelope | str]:
    """Each document as a :class:`RawEnvelope`, or a reason it cannot be one; with
    ``lines``, each envelope also holds its JSON Lines row."""
    return [convert_one(document, lines) for document in documents]


class RowsBatch(NamedTuple):
    """A batch of raw events as rows with their partitions: all that the encoder needs
    of them, so that nothing else is built per event."""

    positions: list[int]
    """Where in the batch each accepted event is."""
    partitions: list[Any]
    """Each accepted event's partition key, as ``new_key((collection, period))`` built it."""
    rows: list[Any]
    """Each accepted event's row: its JSON Lines text (without the line break), or its
    envelope row for the other formats."""
    rejected: list[tuple[int, str]]
    """The position of each rejected event, and why."""
    last_span: tuple[int, tuple[int, int]] | None
    """The position and resume token span of the last accepted event that has one."""
    may_hold_fragments: bool
    """True when some document holds the bytes :data:`SPLIT_MARK`: it may be a fragment
    of a split event, to be put together with the others before it is encoded. False
    is certain: no document is one."""


SPLIT_MARK = b"splitEvent"
"""The top-level field that marks a fragment of a split event, as bytes: a document
without them is no fragment (one with them may be: a nested field or a string of the
same bytes matches too)."""


def lines_batch(
    documents: Sequence[Document],
    step: int | None,
    now_seconds: int,
    new_key: Callable[[tuple[str | None, int | None]], Any],
    breaker: Callable[[], None] | None = None,
) -> RowsBatch:
    """JSON Lines rows and partitions of a batch: an event goes to the bucket of ``step``
    seconds (floored; None: one bucket) holding its ``clusterTime``, or ``now_seconds``
    without one. ``breaker`` is called now and then to let other threads hold the GIL."""
    return _rows_batch(documents, step, now_seconds, new_key, None, breaker)


def envelopes_batch(
    documents: Sequence[Document],
    step: int | None,
    now_seconds: int,
    new_key: Callable[[tuple[str | None, int | None]], Any],
    row_type: type[tuple[Any, ...]],
    breaker: Callable[[], None] | None = None,
) -> RowsBatch:
    """:func:`lines_batch` with envelope rows instead: tuples of ``row_type`` holding
    the envelope's columns, times as aware UTC datetimes."""
    if not (isinstance(row_type, type) and issubclass(row_type, tuple)):
        raise TypeError("row_type must be a plain tuple subclass, such as a NamedTuple")
    return _rows_batch(documents, step, now_seconds, new_key, row_type, breaker)


def _rows_batch(
    documents: Sequence[Document],
    step: int | None,
    now_seconds: int,
    new_key: Callable[[tuple[str | None, int | None]], Any],
    row_type: type[tuple[Any, ...]] | None,
    breaker: Callable[[], None] | None,
) -> RowsBatch:
    if step is not None and step <= 0:
        raise ValueError("step must be a positive number of seconds, or None")
    batch = RowsBatch([], [], [], [], None, may_hold_fragments(documents))
    last_span = None
    for position, envelope in enumerate(convert_batch(documents, lines=row_type is None)):
        if breaker is not None and position % _BREAK_EVERY == _BREAK_EVERY - 1:
            breaker()
        placed = place(envelope, step, now_seconds, new_key, row_type)
        if isinstance(placed, str):
            batch.rejected.append((position, placed))
            continue
        batch.positions.append(position)
        batch.partitions.append(placed[0])
        batch.rows.append(placed[1])
        span = cast(RawEnvelope, envelope).resume_token_span
        if span is not None:
            last_span = (position, span)
    return batch._replace(last_span=last_span)


def group_rows(
    partitions: Sequence[Any], rows: Sequence[Any], sizes: Sequence[int]
) -> dict[Any, tuple[list[Any], list[int]]]:
    """The rows and their sizes by partition, each group in the order given and the
    partitions in the order first seen."""
    if not len(partitions) == len(rows) == len(sizes):
        raise ValueError("partitions, rows and sizes must be as long as each other")
    groups: dict[Any, tuple[list[Any], list[int]]] = {}
    for partition, row, size in zip(partitions, rows, sizes, strict=True):
        group = groups.get(partition)
        if group is None:
            groups[partition] = ([row], [size])
        else:
            group[0].append(row)
            group[1].append(size)
    return groups


def may_hold_fragments(documents: Sequence[Document]) -> bool:
    """Whether some document's bytes hold :data:`SPLIT_MARK`; those without bytes are
    rejected anyway."""
    for document in documents:
        raw = raw_bytes(document)
        if isinstance(raw, bytes) and SPLIT_MARK in raw:
            return True
    return False


def place(
    envelope: RawEnvelope | str,
    step: int | None,
    now_seconds: int,
    new_key: Callable[[tuple[str | None, int | None]], Any],
    row_type: type[tuple[Any, ...]] | None,
) -> tuple[Any, Any] | str:
    """One event's partition key and row (its line without ``row_type``), or why it is
    rejected."""
    if isinstance(envelope, str):
        return envelope
    row: Any = envelope.line
    if row_type is not None:  # convert_one rejected times no datetime holds
        row = tuple.__new__(row_type, _columns(envelope))
    ms = envelope.cluster_time_ms
    seconds = now_seconds if ms is None else ms // 1000
    return new_key((envelope.collection, period_start(seconds, step))), row


_BREAK_EVERY = 64
"""Events between two calls of a batch's GIL breaker."""


def convert_one(document: Document, lines: bool = False) -> RawEnvelope | str:
    """One raw event as a :class:`RawEnvelope`, or the reason it is rejected."""
    pymongo = _pymongo()
    raw = raw_bytes(document)
    if isinstance(raw, str):
        return raw
    try:
        doc = pymongo.bson.decode(raw, codec_options=pymongo.options)
    except RecursionError:
        return f"malformed BSON: nested deeper than {MAX_DEPTH} documents or arrays"
    except Exception as exc:  # InvalidBSON and the errors pymongo wraps in it
        return f"malformed BSON: {exc}"
    if (
        len(raw) >= _DEEP_ENOUGH
        # each nested container has a type byte 3, 4 or 15 somewhere in the bytes
        and raw.count(3) + raw.count(4) + raw.count(15) >= MAX_DEPTH
        and _deeper_than(doc, MAX_DEPTH)
        and _raw_depth(raw, 0, 1) > MAX_DEPTH
    ):
        return f"malformed BSON: nested deeper than {MAX_DEPTH} documents or arrays"
    try:
        fields = fields_of(doc)
    except EventError as exc:
        return str(exc)
    except (ValueError, OverflowError, OSError) as exc:  # a $timestamp beyond datetime's range
        return f"'clusterTime' is out of range: {exc}"
    cluster_ms, increment = _cluster_time(doc.get("clusterTime"))
    json: list[bytes | None] = []
    try:
        for value, field in zip(
            (*fields[4:9], fields.transaction, fields.extra), JSON_FIELDS, strict=True
        ):
            json.append(None if value is None else dumps(value, field))
    except EventError as exc:
        return str(exc)
    key, full, update, token, before, transaction, extra = json
    envelope = RawEnvelope(
        str.__str__(fields.operation),
        None if fields.database is None else str.__str__(fields.database),
        None if fields.collection is None else str.__str__(fields.collection),
        cluster_ms,
        increment,
        key,
        full,
        update,
        token,
        before,
        None if fields.wall_time is None else _milliseconds(fields.wall_time),
        transaction,
        extra,
        None if doc.get("_id") is None else _token_span(raw),
    )
    return envelope._replace(line=_line(envelope)) if lines else envelope


def _line(envelope: RawEnvelope) -> bytes:
    """The JSON Lines row the serializer writes for the envelope's event."""
    from rigatoni_s3.formats.jsonl import line_of

    return line_of(*_columns(envelope))


def _columns(envelope: RawEnvelope) -> tuple[Any, ...]:
    """The envelope's columns in the order of every format, times as datetimes."""
    return (
        envelope.operation,
        envelope.database,
        envelope.collection,
        _instant(envelope.cluster_time_ms),
        envelope.document_key,
        envelope.full_document,
        envelope.update_description,
        envelope.resume_token,
        envelope.full_document_before_change,
        _instant(envelope.wall_time_ms),
        envelope.cluster_time_increment,
        envelope.transaction,
        envelope.extra,
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(ms: int | None) -> datetime | None:
    return None if ms is None else _EPOCH + timedelta(milliseconds=ms)


def _milliseconds(when: datetime) -> int:
    """Whole milliseconds since the epoch, in exact integer arithmetic."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def raw_bytes(document: Document) -> bytes | str:
    """The BSON bytes of an input, or a reason it has none."""
    if isinstance(document, bytes):
        return document
    if isinstance(document, bytearray | memoryview):
        try:
            return bytes(memoryview(document).cast("B"))
        except (TypeError, ValueError) as exc:
            return f"not a contiguous byte buffer: {exc}"
    raw = getattr(document, "raw", None)
    if isinstance(raw, bytes):
        return raw
    return f"expected BSON bytes or a RawBSONDocument, got {type(document).__name__}"


def _cluster_time(value: Any) -> tuple[int | None, int | None]:
    """(milliseconds, increment) of a clusterTime that :func:`fields_of` accepted."""
    if value is None:
        return None, None
    if isinstance(value, datetime):
        # Naive UTC from bson; exact integer arithmetic, no float rounding.
        delta = value.replace(tzinfo=None) - datetime(1970, 1, 1)
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000, None
    if isinstance(value, Mapping):
        timestamp = value["$timestamp"]
        seconds, increment = timestamp["t"], timestamp.get("i")
    else:
        seconds, increment = value.time, getattr(value, "inc", None)
    return int(seconds) * 1000, int(increment) if isinstance(increment, int) else None


def _deeper_than(value: Any, room: int) -> bool:
    """True if ``value`` nests more than ``room`` containers, counting every DBRef as one.

    A DBRef may come from a DBPointer, which is no container in BSON, so a True here
    is only a hint: :func:`_raw_depth` then counts on the bytes. Recursion is bounded
    by ``room``.
    """
    kind = type(value)
    pymongo = _pymongo()
    if kind is dict:
        items: Any = value.values()
    elif kind is list:
        items = value
    elif kind is pymongo.dbref:
        items = value.as_doc().values()
    elif kind is pymongo.code and value.scope is not None:
        return _deeper_than(value.scope, room)  # the scope is one level below the code
    else:
        return False
    if room <= 0:
        return True
    containers = pymongo.containers
    for item in items:  # noqa: SIM110 - a loop is several times faster than any() here
        if type(item) in containers and _deeper_than(item, room - 1):
            return True
    return False


_FIXED = {1: 8, 6: 0, 7: 12, 8: 1, 9: 8, 10: 0, 16: 4, 17: 8, 18: 8, 19: 16, 127: 0, 255: 0}
"""Value sizes of the element types that have one."""


def _elements(raw: bytes, start: int) -> list[tuple[bytes, int, int, int]]:
    """(key, type, value start, value end) of a document pymongo already validated."""
    end = start + _INT32.unpack_from(raw, start)[0] - 1
    at = start + 4
    out = []
    while at < end:
        kind = raw[at]
        key_end = raw.index(b"\0", at + 1)
        key = raw[at + 1 : key_end]
        at = key_end + 1
        size = _FIXED.get(kind)
        if size is None:
            if kind in (2, 13, 14):
                size = 4 + _INT32.unpack_from(raw, at)[0]
            elif kind in (3, 4, 15):
                size = _INT32.unpack_from(raw, at)[0]
            elif kind == 5:
                size = 5 + _INT32.unpack_from(raw, at)[0]
            elif kind == 11:
                size = raw.index(b"\0", raw.index(b"\0", at) + 1) + 1 - at
            else:  # 12, DBPointer
                size = 4 + _INT32.unpack_from(raw, at)[0] + 12
        out.append((key, kind, at, at + size))
        at += size
    return out


def _raw_depth(raw: bytes, start: int, depth: int) -> int:
    """The deepest nesting of documents and arrays below the document at ``start``."""
    deepest = depth
    for _, kind, at, _end in _elements(raw, start):
        if kind in (3, 4):
            deepest = max(deepest, _raw_depth(raw, at, depth + 1))
        elif kind == 15:
            scope = at + 8 + _INT32.unpack_from(raw, at + 4)[0]
            deepest = max(deepest, _raw_depth(raw, scope, depth + 1))
        if deepest > MAX_DEPTH:
            break
    return deepest


def _token_span(raw: bytes) -> tuple[int, int] | None:
    """Offsets of the last top-level ``_id``, the one a dict keeps, if a document."""
    span = None
    at, end = 4, len(raw) - 1
    find, starts_with, unpack = raw.index, raw.startswith, _INT32.unpack_from
    while at < end:
        kind = raw[at]
        is_token = starts_with(b"_id\0", at + 1)
        at = find(0, at + 1) + 1
        size = _FIXED.get(kind)
        if size is None:
            if kind in (3, 4, 15):
                size = unpack(raw, at)[0]
            elif kind in (2, 13, 14):
                size = 4 + unpack(raw, at)[0]
            elif kind == 5:
                size = 5 + unpack(raw, at)[0]
            elif kind == 11:
                size = find(0, find(0, at) + 1) + 1 - at
            else:  # 12, DBPointer
                size = 4 + unpack(raw, at)[0] + 12
        if is_token:
            span = (at, at + size) if kind == 3 else None
        at += size
    return span
