"""The envelope as the tabular formats (CSV, Parquet, Avro) store it.

Every data error of an event surfaces here, once: text fields become exact,
UTF-8-safe ``str`` values and documents become JSON (:mod:`._json`) as UTF-8 bytes.
Turning an :class:`EnvelopeRow` into any of the formats then cannot fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

from rigatoni_s3._gil import with_gil_breaks
from rigatoni_s3.errors import SerializationError
from rigatoni_s3.events import EventFields
from rigatoni_s3.formats._json import dumps, dumps_many, kept


class EnvelopeRow(NamedTuple):
    """One event checked for the tabular formats, in their column order."""

    operation: str
    database: str | None
    collection: str | None
    cluster_time: datetime | None
    """Aware UTC."""
    document_key: bytes | None
    """JSON, like the three columns below."""
    full_document: bytes | None
    update_description: bytes | None
    resume_token: bytes | None
    full_document_before_change: bytes | None
    wall_time: datetime | None
    """Aware UTC."""
    cluster_time_increment: int | None
    transaction: bytes | None
    """JSON, like ``extra``."""
    extra: bytes | None


new_envelope_row = partial(tuple.__new__, EnvelopeRow)
"""Builds an :class:`EnvelopeRow` without the Python-level ``__new__`` (one per event)."""

ENVELOPE_COLUMNS: tuple[str, ...] = EnvelopeRow._fields
"""Column order of every format."""

JSON_COLUMNS = (
    "document_key",
    "full_document",
    "update_description",
    "resume_token",
    "full_document_before_change",
    "transaction",
    "extra",
)
"""The columns that hold JSON, in the order :func:`envelope_rows` writes them."""

_ROW_OVERHEAD = 32
"""Bytes a row costs beyond its text: the two timestamps, the increment, offsets or
separators."""


def envelope_row(event: EventFields) -> tuple[EnvelopeRow, int]:
    """The checked envelope of ``event`` and its size in bytes (text plus a small overhead).

    Raises :class:`~rigatoni_s3.errors.SerializationError` naming the field when a
    value cannot be stored: a missing or non-string ``operation``, a non-string
    ``database``/``collection``, a string that is not valid UTF-8 (lone surrogates),
    a time that is not a datetime, or a document value with no JSON mapping.
    """
    operation, database, collection, cluster_time, *documents = event
    operation, database, collection = checked_head(operation, database, collection, cluster_time)
    key, full, update, token, before, wall_time, increment, transaction, extra = documents
    increment = checked_tail(wall_time, increment)
    key, full, update, token, before, transaction, extra = (
        None if value is None else kept(dumps(value, column))
        for value, column in zip(
            (key, full, update, token, before, transaction, extra), JSON_COLUMNS, strict=True
        )
    )
    row = new_envelope_row(
        (
            operation,
            database,
            collection,
            cluster_time,
            key,
            full,
            update,
            token,
            before,
            wall_time,
            increment,
            transaction,
            extra,
        )
    )
    return row, envelope_size(row)


def envelope_size(row: EnvelopeRow) -> int:
    """The bytes a row counts for the limits: its text plus a small overhead."""
    size = _ROW_OVERHEAD + len(row.operation)
    for part in (
        row.database,
        row.collection,
        row.document_key,
        row.full_document,
        row.update_description,
        row.resume_token,
        row.full_document_before_change,
        row.transaction,
        row.extra,
    ):
        if part is not None:
            size += len(part)
    return size


def envelope_rows(events: Sequence[EventFields]) -> tuple[list[EnvelopeRow], list[int]]:
    """:func:`envelope_row` of every event, with the documents' JSON from one orjson call.

    Raises when some event needs :func:`envelope_row` itself, to be rejected alone.
    """
    documents: list[Any] = []
    extend = documents.extend
    heads = []
    for (
        operation,
        database,
        collection,
        cluster_time,
        key,
        full,
        update,
        token,
        before,
        wall_time,
        increment,
        transaction,
        extra,
    ) in with_gil_breaks(events):
        operation, database, collection = checked_head(
            operation, database, collection, cluster_time
        )
        increment = checked_tail(wall_time, increment)
        heads.append((operation, database, collection, cluster_time, wall_time, increment))
        extend((key, full, update, token, before, transaction, extra))
    # Only the values that exist go to orjson: most events leave several columns null.
    present = [i for i, document in enumerate(documents) if document is not None]
    values = [documents[i] for i in present]
    width = len(JSON_COLUMNS)
    pieces = iter(
        dumps_many(
            values,
            [0] * len(values),
            lambda j: dumps(values[j], JSON_COLUMNS[present[j] % width]),
        )
    )
    json = [None if document is None else next(pieces) for document in documents]
    rows: list[EnvelopeRow] = []
    sizes: list[int] = []
    each = iter(json)
    for head, key, full, update, token, before, transaction, extra in zip(
        heads, each, each, each, each, each, each, each, strict=True
    ):
        operation, database, collection, cluster_time, wall_time, increment = head
        row = new_envelope_row(
            (
                operation,
                database,
                collection,
                cluster_time,
                key,
                full,
                update,
                token,
                before,
                wall_time,
                increment,
                transaction,
                extra,
            )
        )
        rows.append(row)
        size = _ROW_OVERHEAD + len(operation)
        for part in (database, collection, key, full, update, token, before, transaction, extra):
            if part is not None:
                size += len(part)
        sizes.append(size)
    return rows, sizes


def checked_head(
    operation: Any, database: Any, collection: Any, cluster_time: Any
) -> tuple[str, str | None, str | None]:
    """``operation``, ``database`` and ``collection`` as exact, UTF-8-safe ``str``;
    raises SerializationError naming the field, also for a ``cluster_time`` that is
    not a datetime."""
    if type(operation) is not str or not operation.isascii():
        if operation is None:
            raise SerializationError("is required", field="operation")
        operation = _checked_text(operation, "operation")
    if database is not None and (type(database) is not str or not database.isascii()):
        database = _checked_text(database, "database")
    if collection is not None and (type(collection) is not str or not collection.isascii()):
        collection = _checked_text(collection, "collection")
    if cluster_time is not None and not isinstance(cluster_time, datetime):
        raise SerializationError(
            f"must be a datetime, got {type(cluster_time).__name__}", field="cluster_time"
        )
    return operation, database, collection


def checked_tail(wall_time: Any, increment: Any) -> int | None:
    """The increment as an exact ``int``; raises SerializationError naming ``wall_time``
    or ``cluster_time_increment`` when it is not a datetime or an integer."""
    if wall_time is not None and not isinstance(wall_time, datetime):
        raise SerializationError(
            f"must be a datetime, got {type(wall_time).__name__}", field="wall_time"
        )
    if increment is None or type(increment) is int:
        return increment
    if isinstance(increment, int) and not isinstance(increment, bool):
        return int(increment)
    raise SerializationError(
        f"must be an integer, got {type(increment).__name__}", field="cluster_time_increment"
    )


def _checked_text(value: Any, field: str) -> str:
    """``value`` as an exact ``str`` whose UTF-8 encoding cannot fail."""
    if not isinstance(value, str):
        raise SerializationError(f"must be a string, got {type(value).__name__}", field=field)
    text = str.__str__(value)  # an exact str copy, whatever a subclass overrides
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SerializationError(
            f"string is not valid UTF-8 ({exc.reason}); fix or drop the character", field=field
        ) from exc
    return text
