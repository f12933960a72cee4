"""JSON Lines: one change event per line, documents as nested JSON objects.

Typed columns follow ``extra`` as more keys of the line, each holding its typed value
in the one JSON mapping (:func:`~rigatoni_s3.formats._typed.json_of`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import chain
from typing import Any

import orjson

from rigatoni_s3._gil import with_gil_breaks
from rigatoni_s3.columns import Column
from rigatoni_s3.events import EventFields
from rigatoni_s3.formats._envelope import EnvelopeRow, checked_head, checked_tail
from rigatoni_s3.formats._json import dumps, dumps_many
from rigatoni_s3.formats._typed import json_of

_HEAD_OPTIONS = orjson.OPT_UTC_Z


class JsonLinesSerializer:
    """``.jsonl``: ``{"operation": ..., "cluster_time": "…Z", "full_document": {...}, ...}``.

    Rows are the lines without their line break; :meth:`serialize` adds it, and a
    row's size counts it.
    """

    extension = "jsonl"
    content_type = "application/x-ndjson"
    compresses_internally = False
    rows_are_lines = True

    def __init__(self, columns: Mapping[str, Column] | None = None) -> None:
        self.columns: Mapping[str, Column] = dict(columns or {})
        self._typed_keys = [
            (b"," + orjson.dumps(name) + b":", column.kind) for name, column in self.columns.items()
        ]

    def encode_event(self, event: EventFields) -> tuple[bytes, int]:
        """The event's line and its size; raises SerializationError naming the field."""
        operation, database, collection, cluster_time, *rest = event
        key, full, update, token, before, wall_time, increment, transaction, extra = rest
        operation, database, collection = checked_head(
            operation, database, collection, cluster_time
        )
        line = line_of(
            operation,
            database,
            collection,
            cluster_time,
            dumps(key, "document_key"),
            dumps(full, "full_document"),
            dumps(update, "update_description"),
            dumps(token, "resume_token"),
            dumps(before, "full_document_before_change"),
            wall_time,
            checked_tail(wall_time, increment),
            dumps(transaction, "transaction"),
            dumps(extra, "extra"),
        )
        return line, len(line) + 1

    def encode_events(self, events: Sequence[EventFields]) -> tuple[list[bytes], list[int]]:
        """Every event's line, from one orjson call; raises if some event needs
        :meth:`encode_event` to be rejected alone."""
        envelopes: list[Any] = []
        append = envelopes.append
        for event in with_gil_breaks(events):
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
            ) = event
            if not (
                type(operation) is str
                and (database is None or type(database) is str)
                and (collection is None or type(collection) is str)
                and (cluster_time is None or type(cluster_time) is datetime)
                and (wall_time is None or type(wall_time) is datetime)
                and (increment is None or type(increment) is int)
            ):
                # Unusual but maybe valid (str, int or datetime subclasses): encoded
                # alone. A string orjson cannot write (a lone surrogate) fails the call.
                append(orjson.Fragment(self.encode_event(event)[0]))
                continue
            append(
                {
                    "operation": operation,
                    "database": database,
                    "collection": collection,
                    "cluster_time": cluster_time,
                    "document_key": key,
                    "full_document": full,
                    "update_description": update,
                    "resume_token": token,
                    "full_document_before_change": before,
                    "wall_time": wall_time,
                    "cluster_time_increment": increment,
                    "transaction": transaction,
                    "extra": extra,
                }
            )
        lines = dumps_many(
            envelopes,
            [event.count(None) for event in events],
            lambda i: self.encode_event(events[i])[0],
        )
        return lines, [len(line) + 1 for line in lines]

    def encode_envelopes(self, envelopes: Sequence[EnvelopeRow]) -> tuple[list[bytes], list[int]]:
        """Lines of events whose documents are JSON already: the same bytes as
        :meth:`encode_events` writes for them decoded."""
        lines = [line_of(*envelope) for envelope in with_gil_breaks(envelopes)]
        return lines, [len(line) + 1 for line in lines]

    def with_columns(
        self, rows: list[bytes], sizes: list[int], values: Sequence[tuple[Any, ...]]
    ) -> tuple[list[bytes], list[int]]:
        """Each line with the typed columns as more keys, before its closing brace."""
        keys = self._typed_keys
        lines = []
        for line, typed in zip(rows, with_gil_breaks(values), strict=True):
            parts = [line[:-1]]
            for (key, kind), value in zip(keys, typed, strict=True):
                parts.append(key)
                parts.append(json_of(value, kind))
            parts.append(b"}")
            lines.append(b"".join(parts))
        return lines, [len(line) + 1 for line in lines]

    def serialize(self, rows: Sequence[bytes]) -> bytes:
        return b"\n".join(chain(rows, (b"",)))


def line_of(
    operation: str,
    database: str | None,
    collection: str | None,
    cluster_time: datetime | None,
    document_key: bytes | None,
    full_document: bytes | None,
    update_description: bytes | None,
    resume_token: bytes | None,
    full_document_before_change: bytes | None,
    wall_time: datetime | None,
    cluster_time_increment: int | None,
    transaction: bytes | None,
    extra: bytes | None,
) -> bytes:
    """The line of a checked envelope whose documents are JSON already."""
    head = orjson.dumps(
        {
            "operation": operation,
            "database": database,
            "collection": collection,
            "cluster_time": cluster_time,
        },
        option=_HEAD_OPTIONS,
    )
    return b"".join(
        (
            head[:-1],
            b',"document_key":',
            b"null" if document_key is None else document_key,
            b',"full_document":',
            b"null" if full_document is None else full_document,
            b',"update_description":',
            b"null" if update_description is None else update_description,
            b',"resume_token":',
            b"null" if resume_token is None else resume_token,
            b',"full_document_before_change":',
            b"null" if full_document_before_change is None else full_document_before_change,
            b',"wall_time":',
            orjson.dumps(wall_time, option=_HEAD_OPTIONS),
            b',"cluster_time_increment":',
            b"null" if cluster_time_increment is None else b"%d" % cluster_time_increment,
            b',"transaction":',
            b"null" if transaction is None else transaction,
            b',"extra":',
            b"null" if extra is None else extra,
            b"}",
        )
    )
