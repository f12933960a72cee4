"""CSV (RFC 4180) with a header row; documents as JSON text in their cells.

Columns, in order: ``operation, database, collection, cluster_time, document_key,
full_document, update_description, resume_token, full_document_before_change,
wall_time, cluster_time_increment, transaction, extra``. ``cluster_time`` and
``wall_time`` are ISO-8601 UTC (``2025-01-15T10:00:00Z``, with ``.ffffff`` when there
are microseconds), ``cluster_time_increment`` a decimal integer; documents hold the
same JSON as JSON Lines writes. Null is an empty field. Fields with a comma,
a quote, CR or LF are quoted and inner quotes doubled, by the standard ``csv`` module;
lines end with CRLF and the text is UTF-8 without a byte-order mark.

JSON escapes control characters, so document cells never span lines; only a
``database`` or ``collection`` name holding a line break would produce a multi-line
(quoted) record (or a typed ``string`` column whose text holds one).

Typed columns follow ``extra``, as text (:func:`~rigatoni_s3.formats._typed.text_of`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from rigatoni_s3._gil import with_gil_breaks
from rigatoni_s3.columns import Column
from rigatoni_s3.events import EventFields
from rigatoni_s3.formats._envelope import (
    ENVELOPE_COLUMNS,
    JSON_COLUMNS,
    EnvelopeRow,
    envelope_row,
    envelope_rows,
    envelope_size,
)
from rigatoni_s3.formats._json import iso_utc
from rigatoni_s3.formats._typed import TypedRow, text_of

_QUOTE = ord('"')


class CsvSerializer:
    """``.csv``: a header row, then one record per event."""

    extension = "csv"
    content_type = "text/csv"
    compresses_internally = False
    rows_are_lines = False

    def __init__(self, columns: Mapping[str, Column] | None = None) -> None:
        self.columns: Mapping[str, Column] = dict(columns or {})
        self._kinds = [column.kind for column in self.columns.values()]

    def encode_event(self, event: EventFields) -> tuple[EnvelopeRow, int]:
        """The event's checked envelope and its size, counting the quotes CSV doubles."""
        row, size = envelope_row(event)
        return row, size + _quoting(row)

    def encode_events(self, events: Sequence[EventFields]) -> tuple[list[EnvelopeRow], list[int]]:
        """Rows and sizes of all ``events``; raises if one of them cannot be encoded."""
        rows, sizes = envelope_rows(events)
        return rows, [size + _quoting(row) for row, size in zip(rows, sizes, strict=True)]

    def encode_envelopes(
        self, envelopes: Sequence[EnvelopeRow]
    ) -> tuple[list[EnvelopeRow], list[int]]:
        """The envelopes are the rows already; their sizes count CSV's quotes."""
        return list(envelopes), [envelope_size(row) + _quoting(row) for row in envelopes]

    def with_columns(
        self, rows: list[EnvelopeRow], sizes: list[int], values: Sequence[tuple[Any, ...]]
    ) -> tuple[list[TypedRow], list[int]]:
        """Rows holding the typed values as the text they are written as; sizes count
        the text and its quoting."""
        kinds = self._kinds
        typed_rows = []
        typed_sizes = []
        for row, size, typed in zip(rows, sizes, with_gil_breaks(values), strict=True):
            texts = tuple(text_of(value, kind) for value, kind in zip(typed, kinds, strict=True))
            typed_rows.append(TypedRow(row, texts))
            typed_sizes.append(size + _text_size(texts))
        return typed_rows, typed_sizes

    def serialize(self, rows: Sequence[EnvelopeRow] | Sequence[TypedRow]) -> bytes:
        """The CSV text of ``rows``, header first, as UTF-8."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        if self.columns:
            writer.writerow((*ENVELOPE_COLUMNS, *self.columns))
            writer.writerows(with_gil_breaks(_typed_records(cast(Sequence[TypedRow], rows))))
        else:
            writer.writerow(ENVELOPE_COLUMNS)
            writer.writerows(with_gil_breaks(_records(cast(Sequence[EnvelopeRow], rows))))
        return out.getvalue().encode("utf-8")


def _quoting(row: EnvelopeRow) -> int:
    """Bytes CSV adds to the documents: two enclosing quotes, and each inner one doubled."""
    extra = 0
    for at in _JSON:
        document: bytes | None = row[at]  # type: ignore[assignment]  # a JSON column
        if document is not None:
            extra += 2 + document.count(_QUOTE)
    return extra


_TIMES = [ENVELOPE_COLUMNS.index(column) for column in ("cluster_time", "wall_time")]
_JSON = [ENVELOPE_COLUMNS.index(column) for column in JSON_COLUMNS]


def _records(rows: Sequence[EnvelopeRow]) -> Iterator[list[Any]]:
    """Each row as CSV cells: times as ISO-8601 UTC text, JSON bytes as text."""
    for row in rows:
        record: list[Any] = list(row)
        for at in _TIMES:
            if record[at] is not None:
                record[at] = iso_utc(record[at])
        for at in _JSON:
            if record[at] is not None:
                record[at] = record[at].decode()
        yield record


def _typed_records(rows: Sequence[TypedRow]) -> Iterator[list[Any]]:
    envelopes = [row.envelope for row in rows]
    for record, row in zip(_records(envelopes), rows, strict=True):
        record.extend(row.values)
        yield record


_NEEDS_QUOTES = frozenset(',"\r\n')


def _text_size(texts: tuple[str | None, ...]) -> int:
    """Bytes typed texts take in a record: their separators, text and quoting."""
    size = len(texts)
    for text in texts:
        if text is not None:
            size += len(text)
            if not _NEEDS_QUOTES.isdisjoint(text):
                size += 2 + text.count('"')
    return size
