"""CSV (RFC 4180) with a header row; documents as JSON text in their cells.

Columns, in order: ``operation, database, collection, cluster_time, document_key,
full_document, update_description, resume_token, full_document_before_change,
wall_time, cluster_time_increment, transaction, extra``. ``cluster_time`` and
``wall_time`` are ISO-8601 UTC (``2025-01-15T10:00:00Z``, with ``.ffffff`` when there
are microseconds), ``cluster_time_increment`` a decimal integer; documents hold the
same JSON as JSON Lines writes. Null is an empty field. Fields with a comma,
a quote, CR or LF are quoted and inner quotes doubled, exactly as the standard ``csv``
module's default dialect writes them; lines end with CRLF and the text is UTF-8
without a byte-order mark.

Records are built as bytes here rather than by ``csv.writer``: the documents are
UTF-8 JSON already, and quoting them with two C-level byte operations costs a
fraction of decoding them to ``str`` and letting the writer scan every character.

JSON escapes control characters, so document cells never span lines; only a
``database`` or ``collection`` name holding a line break would produce a multi-line
(quoted) record (or a typed ``string`` column whose text holds one).

Typed columns follow ``extra``, as text (:func:`~rigatoni_s3.formats._typed.text_of`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from itertools import repeat
from typing import Any, cast

import orjson

from rigatoni_s3._gil import GilBreaker, with_gil_breaks
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
        if self.columns:
            header = _text_record((*ENVELOPE_COLUMNS, *self.columns))
            records = _typed_records(cast(Sequence[TypedRow], rows))
        else:
            header = _text_record(ENVELOPE_COLUMNS)
            records = _records(cast(Sequence[EnvelopeRow], rows))
        return b"\r\n".join([header, *records, b""])


def _quoting(row: EnvelopeRow) -> int:
    """Bytes CSV adds to the documents: two enclosing quotes, and each inner one doubled."""
    extra = 0
    for at in _JSON:
        document: bytes | None = row[at]  # type: ignore[assignment]  # a JSON column
        if document is not None:
            extra += 2 + document.count(_QUOTE)
    return extra


_TEXT = [ENVELOPE_COLUMNS.index(column) for column in ("operation", "database", "collection")]
_TIMES = [ENVELOPE_COLUMNS.index(column) for column in ("cluster_time", "wall_time")]
_JSON = [ENVELOPE_COLUMNS.index(column) for column in JSON_COLUMNS]
_INCREMENT = ENVELOPE_COLUMNS.index("cluster_time_increment")

_QUOTED_IF_HELD = ',"\r\n'
"""What makes the csv module's default dialect quote a field (QUOTE_MINIMAL)."""
_SPECIAL = re.compile(b"[" + re.escape(_QUOTED_IF_HELD.encode()) + b"]")
_NEEDS_QUOTES = frozenset(_QUOTED_IF_HELD)
_QUOTES = (b'"', b'"')
"""``data.join(_QUOTES)`` encloses ``data`` in quotes with one copy."""


def _field(data: bytes) -> bytes:
    """One field's UTF-8 bytes as written: quoted, inner quotes doubled, if it needs it."""
    if _SPECIAL.search(data) is None:
        return data
    return data.replace(b'"', b'""').join(_QUOTES)


def _text_field(text: str | None) -> bytes:
    return b"" if text is None else _field(text.encode())


def _text_record(texts: Iterable[str | None]) -> bytes:
    return b",".join([_text_field(text) for text in texts])


def _records(rows: Sequence[EnvelopeRow]) -> Iterator[bytes]:
    """Each row as one CSV record (no line end): times as ISO-8601 UTC, documents as JSON.

    The fields are made a column at a time, over a slice of rows, so that most of
    the work runs in C-level loops (``map``, ``zip``, ``bytes.join``) rather than a
    Python step per field. Names and increments are made once per distinct value in
    a slice (events share collections); times are written by orjson, a column at once.
    """
    breaker = GilBreaker()
    for start in range(0, len(rows), _SLICE_ROWS):
        columns = list(zip(*rows[start : start + _SLICE_ROWS], strict=True))
        fields: list[Iterable[bytes]] = []
        for at, values in enumerate(columns):
            if values.count(None) == len(values):  # a column most events leave empty
                fields.append(repeat(b"", len(values)))
            elif at in _JSON:
                fields.append(_json_fields(values))
            elif at == _INCREMENT:
                fields.append(_by_value(values, _int_field))
            elif at in _TIMES:
                fields.append(_time_fields(values))
            else:
                fields.append(_by_value(values, _text_field))
            breaker()
        yield from with_gil_breaks(map(_COMMA.join, zip(*fields, strict=True)), breaker)


_SLICE_ROWS = 128
"""Rows whose fields are made together: quoting a column of ~1 KB documents for them
takes about half as long as the GIL is held between two hand-overs."""
_COMMA = b","


def _json_fields(documents: Sequence[bytes | None]) -> list[bytes]:
    """A JSON column's fields, quoted where CSV needs it (nearly always: JSON holds
    quotes): :func:`_field` of each, written out to spare a call per value."""
    search = _SPECIAL.search
    return [
        b""
        if document is None
        else document.replace(b'"', b'""').join(_QUOTES)
        if search(document)
        else document
        for document in documents
    ]


def _by_value(values: Sequence[Any], field: Callable[[Any], bytes]) -> Iterator[bytes]:
    """``field`` of each value, made once for each distinct value."""
    made = {value: field(value) for value in dict.fromkeys(values)}
    return map(made.__getitem__, values)


def _time_fields(times: Sequence[datetime | None]) -> list[bytes]:
    """A time column's fields, ISO-8601 in UTC as :func:`iso_utc` writes them.

    orjson writes the same text for a datetime whose offset is zero, several times
    faster, and a whole column of them in one call; any other datetime (a non-zero
    offset, a naive one) makes the column take :func:`iso_utc`, value by value.
    """
    present = [when for when in times if when is not None]
    try:
        text = orjson.dumps(present, option=orjson.OPT_UTC_Z)
    except TypeError:  # a value orjson does not take for a datetime
        text = b""
    if text.count(b'Z"') != len(present):
        return [b"" if when is None else iso_utc(when).encode() for when in times]
    made = text[2:-2].split(b'","')
    if len(made) == len(times):
        return made
    texts = iter(made)
    return [b"" if when is None else next(texts) for when in times]


def _int_field(number: int | None) -> bytes:
    return b"" if number is None else b"%d" % number


def _typed_records(rows: Sequence[TypedRow]) -> Iterator[bytes]:
    envelopes = [row.envelope for row in rows]
    for record, row in zip(_records(envelopes), rows, strict=True):
        yield record + b"," + _text_record(row.values)


def _text_size(texts: tuple[str | None, ...]) -> int:
    """Bytes typed texts take in a record: their separators, text and quoting."""
    size = len(texts)
    for text in texts:
        if text is not None:
            size += len(text)
            if not _NEEDS_QUOTES.isdisjoint(text):
                size += 2 + text.count('"')
    return size
