"""Apache Avro object container files through fastavro, the schema embedded in the header.

The record is ``rigatoni_s3.ChangeEvent``::

    operation           string
    database            ["null", "string"]
    collection          ["null", "string"]
    cluster_time        ["null", {"type": "long", "logicalType": "timestamp-micros"}]
    document_key        ["null", "string"]   JSON text
    full_document       ["null", "string"]   JSON text
    update_description  ["null", "string"]   JSON text
    resume_token        ["null", "string"]   JSON text
    full_document_before_change  ["null", "string"]   JSON text
    wall_time           ["null", {"type": "long", "logicalType": "timestamp-micros"}]
    cluster_time_increment       ["null", "long"]
    transaction         ["null", "string"]   JSON text
    extra               ["null", "string"]   JSON text

Every optional field defaults to null, so a reader schema may add or drop fields:
a reader holding the schema of the first eight fields reads newer files, and one
holding the newer schema reads old files with nulls in the last five.
The configured compression is the container's block codec (GZIP → ``deflate``,
ZSTD → ``zstandard``); the file is never wrapped, because Avro readers expect the
container header at byte 0. The same rows always give the same bytes.

Typed columns follow ``extra`` as more optional fields, null by default:

===============  =================================================================
column type      Avro type (in ``["null", T]``)
===============  =================================================================
string, json     ``string`` (json: JSON text)
int64            ``long``
float64          ``double``
bool             ``boolean``
timestamp        ``{"type": "long", "logicalType": "timestamp-micros"}``
date             ``{"type": "int", "logicalType": "date"}``
decimal(p,s)     ``{"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s}``
===============  =================================================================
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from itertools import repeat
from operator import floordiv
from typing import Any, cast

import fastavro

from rigatoni_s3._gil import GilBreaker, with_gil_breaks
from rigatoni_s3.columns import Column
from rigatoni_s3.compression import GZIP_LEVEL, ZSTD_LEVEL
from rigatoni_s3.config import Compression
from rigatoni_s3.errors import ConfigError
from rigatoni_s3.events import EventFields, since_epoch
from rigatoni_s3.formats._envelope import (
    ENVELOPE_COLUMNS,
    JSON_COLUMNS,
    EnvelopeRow,
    envelope_row,
    envelope_rows,
    envelope_size,
)
from rigatoni_s3.formats._typed import TypedRow, typed_rows

_TIMESTAMP = {"type": "long", "logicalType": "timestamp-micros"}


def _optional(name: str, avro_type: Any, doc: str) -> dict[str, Any]:
    return {"name": name, "type": ["null", avro_type], "default": None, "doc": doc}


SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "ChangeEvent",
    "namespace": "rigatoni_s3",
    "doc": "One MongoDB change-stream event; documents are JSON text.",
    "fields": [
        {"name": "operation", "type": "string", "doc": "insert, update, replace, delete..."},
        _optional("database", "string", "Database of the changed collection."),
        _optional("collection", "string", "Collection of the changed document."),
        _optional("cluster_time", _TIMESTAMP, "When the change happened, UTC."),
        _optional("document_key", "string", "Key of the changed document, JSON."),
        _optional("full_document", "string", "The document after the change, JSON."),
        _optional("update_description", "string", "Fields an update changed, JSON."),
        _optional("resume_token", "string", "Change-stream resume token, JSON."),
        _optional("full_document_before_change", "string", "The document before the change, JSON."),
        _optional("wall_time", _TIMESTAMP, "The server's wall clock at the change, UTC."),
        _optional("cluster_time_increment", "long", "Orders the changes of one cluster_time."),
        _optional("transaction", "string", "txnNumber and lsid of a transaction, JSON."),
        _optional("extra", "string", "Top-level fields no other field holds, JSON."),
    ],
}
assert tuple(field["name"] for field in SCHEMA["fields"]) == ENVELOPE_COLUMNS

_PARSED_SCHEMA = fastavro.parse_schema(SCHEMA)

_AVRO_TYPES: dict[str, Any] = {
    "string": "string",
    "int64": "long",
    "float64": "double",
    "bool": "boolean",
    "timestamp": _TIMESTAMP,
    "date": {"type": "int", "logicalType": "date"},
    "json": "string",
}


def avro_type(column: Column) -> Any:
    """The Avro type of a typed column (without the null of its union)."""
    if column.kind == "decimal":
        return {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": column.precision,
            "scale": column.scale,
        }
    return _AVRO_TYPES[column.kind]


def schema_with(columns: Mapping[str, Column]) -> dict[str, Any]:
    """The record schema with the typed columns after the envelope's fields."""
    if not columns:
        return SCHEMA
    typed = [
        _optional(name, avro_type(column), f"{column.path} as {column.type}.")
        for name, column in columns.items()
    ]
    return {**SCHEMA, "fields": [*SCHEMA["fields"], *typed]}


_CODECS: dict[Compression, tuple[str, int | None]] = {
    Compression.NONE: ("null", None),
    Compression.GZIP: ("deflate", GZIP_LEVEL),
    Compression.ZSTD: ("zstandard", ZSTD_LEVEL),
}


class AvroSerializer:
    """``.avro``: an object container file of ``rigatoni_s3.ChangeEvent`` records."""

    extension = "avro"
    content_type = "application/avro"
    compresses_internally = True
    rows_are_lines = False

    def __init__(
        self,
        compression: Compression = Compression.NONE,
        columns: Mapping[str, Column] | None = None,
    ) -> None:
        self.compression = compression
        self._codec, self._level = _CODECS[compression]
        _check_codec(self._codec)
        self.columns: Mapping[str, Column] = dict(columns or {})
        schema = schema_with(self.columns)
        self._schema = fastavro.parse_schema(schema) if self.columns else _PARSED_SCHEMA
        self._fields = _fields(
            schema["fields"],
            {
                *JSON_COLUMNS,
                *(name for name, column in self.columns.items() if column.kind == "json"),
            },
        )

    def encode_event(self, event: EventFields) -> tuple[EnvelopeRow, int]:
        """The event's checked envelope and its size; raises SerializationError."""
        return envelope_row(event)

    def encode_events(self, events: Sequence[EventFields]) -> tuple[list[EnvelopeRow], list[int]]:
        """Rows and sizes of all ``events``; raises if one of them cannot be encoded."""
        return envelope_rows(events)

    def encode_envelopes(
        self, envelopes: Sequence[EnvelopeRow]
    ) -> tuple[list[EnvelopeRow], list[int]]:
        """The envelopes are the rows already; only their sizes are counted."""
        return list(envelopes), [envelope_size(row) for row in envelopes]

    with_columns = staticmethod(typed_rows)
    """Rows holding their typed values; sizes count text as its length, others as 8."""

    def serialize(self, rows: Sequence[EnvelopeRow] | Sequence[TypedRow]) -> bytes:
        """One container file holding ``rows`` in order."""
        if self.columns:
            typed = cast(Sequence[TypedRow], rows)
            envelopes: Sequence[EnvelopeRow] = [row.envelope for row in typed]
            records = _records(self._fields, [row.envelope + row.values for row in typed])
        else:
            envelopes = cast(Sequence[EnvelopeRow], rows)
            records = _records(_ENVELOPE_FIELDS, envelopes)
        out = io.BytesIO()
        fastavro.writer(
            out,
            self._schema,
            records,
            codec=self._codec,
            sync_marker=_sync_marker(envelopes),
            codec_compression_level=self._level,
        )
        return out.getvalue()


_Field = tuple[str, str | None, bool]
"""A record field as written: its name, the union branch its values take (None when
the field is not a union), and whether its values are JSON bytes to write as text."""


def _fields(fields: Sequence[Mapping[str, Any]], json: set[str]) -> list[_Field]:
    """How each of the schema's ``fields`` is written (see :data:`_Field`)."""
    out: list[_Field] = []
    for field in fields:
        kind = field["type"]
        branch = None
        if isinstance(kind, list):  # ["null", T]: T by name, its logical type aside
            (other,) = [t for t in kind if t != "null"]
            branch = other if isinstance(other, str) else other["type"]
        out.append((field["name"], branch, field["name"] in json))
    return out


_ENVELOPE_FIELDS = _fields(SCHEMA["fields"], set(JSON_COLUMNS))


def _column(field: _Field, values: Sequence[Any]) -> Iterable[Any]:
    """One field's values as fastavro takes them: each non-null union value names its
    branch, so fastavro writes it without trying the union's types in turn (most of
    its time per record otherwise); the bytes are the same either way. JSON becomes
    ``str``, which fastavro wants for Avro strings (the JSON is valid UTF-8), and times
    become epoch microseconds, which fastavro would otherwise work out value by value."""
    _, branch, is_json = field
    if branch is None:
        return values
    nulls = values.count(None)
    if nulls == len(values):  # a field most events leave empty
        return repeat(None, nulls)
    if is_json:
        values = (
            list(map(bytes.decode, values))
            if not nulls
            else [None if value is None else value.decode() for value in values]
        )
    elif not nulls and branch == "long" and isinstance(values[0], datetime):
        with suppress(TypeError):  # a naive datetime: fastavro converts it itself
            values = list(map(floordiv, since_epoch(values), repeat(_MICROSECOND)))
    if not nulls:
        return zip(repeat(branch), values)
    return [None if value is None else (branch, value) for value in values]


_MICROSECOND = timedelta(microseconds=1)
_SLICE_ROWS = 256
"""Rows whose values are converted together, a field at a time."""


def _records(fields: list[_Field], rows: Sequence[Sequence[Any]]) -> Iterator[dict[str, Any]]:
    """The records of ``rows`` (envelopes, or envelopes with their typed values after),
    made a field at a time over slices of rows, so that most of the work runs in
    C-level loops rather than a Python step per value."""
    names = [name for name, _, _ in fields]
    breaker = GilBreaker()
    for start in range(0, len(rows), _SLICE_ROWS):
        values = []
        for field, column in zip(
            fields, zip(*rows[start : start + _SLICE_ROWS], strict=True), strict=True
        ):
            values.append(_column(field, column))
            breaker()
        # fastavro writes each record as it comes, holding the GIL: a hand-over now and
        # then lets the event loop's thread run between them.
        records = map(dict, map(zip, repeat(names), zip(*values, strict=True)))
        yield from with_gil_breaks(records, breaker)


def _sync_marker(rows: Sequence[EnvelopeRow]) -> bytes:
    """The 16-byte block separator: the same for the same rows, unforgeable by a document.

    fastavro draws a random marker by default, which would make every encoding of a
    batch different; the uploader's conditional writes recognise a retry that already
    landed by its identical bytes. Readers that split files search for the marker, so
    it must not be guessable from inside a document: it is a digest of the events'
    resume tokens and document keys, which the server assigns.
    """
    digest = hashlib.blake2b(digest_size=16, person=b"rigatoni-avro")
    digest.update(len(rows).to_bytes(8, "little"))
    for row in rows:
        digest.update(row.resume_token or b"")
        digest.update(row.document_key or b"")
        digest.update(b"\x00")
    return digest.digest()


def _check_codec(codec: str) -> None:
    """Fail now, not at the first flush, when fastavro lacks the library a codec needs.

    ``null`` and ``deflate`` are built in. fastavro compresses ``zstandard`` blocks with
    ``compression.zstd`` (Python 3.14+) or the ``backports.zstd`` package, not with the
    ``zstandard`` package, and only says so when it writes its first block.
    """
    if codec != "zstandard":
        return
    try:
        fastavro.writer(io.BytesIO(), _PARSED_SCHEMA, [{"operation": "probe"}], codec=codec)
    except ValueError as exc:
        raise ConfigError(
            "compression",
            f"fastavro cannot write the {codec!r} Avro codec ({exc}); "
            "install it with: pip install 'fastavro[zstandard]'",
        ) from exc
