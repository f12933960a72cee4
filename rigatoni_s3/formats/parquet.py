"""Apache Parquet through pyarrow: one row group per 128 Ki events, compression per column.

===========================  ============================  ==========================
column                       Parquet type                  Arrow type
===========================  ============================  ==========================
operation                    BYTE_ARRAY (STRING) required  string, dictionary-encoded
database                     BYTE_ARRAY (STRING)           string, dictionary-encoded
collection                   BYTE_ARRAY (STRING)           string, dictionary-encoded
cluster_time                 INT64 TIMESTAMP(MICROS, UTC)  timestamp[us, tz=UTC]
document_key                 BYTE_ARRAY (STRING)           string (JSON)
full_document                BYTE_ARRAY (STRING)           string (JSON)
update_description           BYTE_ARRAY (STRING)           string (JSON)
resume_token                 BYTE_ARRAY (STRING)           string (JSON)
full_document_before_change  BYTE_ARRAY (STRING)           string (JSON)
wall_time                    INT64 TIMESTAMP(MICROS, UTC)  timestamp[us, tz=UTC]
cluster_time_increment       INT64                         int64
transaction                  BYTE_ARRAY (STRING)           string (JSON)
extra                        BYTE_ARRAY (STRING)           string (JSON)
===========================  ============================  ==========================

Every column but ``operation`` is optional (nullable). The configured compression
is the column codec, so the file is never wrapped in gzip/zstd: readers need the
Parquet footer at the end of a plain file. Min/max statistics are written for the
small columns (not for the documents, ``transaction`` and ``extra``, whose statistics
would only bloat the footer). Files written before the last five columns existed
read together with newer ones when the reader unifies schemas by name (pyarrow
datasets, DuckDB's ``union_by_name``): the old files' rows hold null there.

Typed columns follow ``extra``, optional, with statistics (except ``json`` ones):

===============  =====================================  ==============================
column type      Parquet type                           Arrow type
===============  =====================================  ==============================
string           BYTE_ARRAY (STRING)                    string, dictionary-encoded
int64            INT64                                  int64
float64          DOUBLE                                 double
bool             BOOLEAN                                bool
timestamp        INT64 TIMESTAMP(MICROS, UTC)           timestamp[us, tz=UTC]
date             INT32 DATE                             date32
decimal(p,s)     FIXED_LEN_BYTE_ARRAY DECIMAL(p, s)     decimal128(p, s)
json             BYTE_ARRAY (STRING)                    string (JSON)
===============  =====================================  ==============================
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from itertools import chain
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rigatoni_s3._gil import GilBreaker
from rigatoni_s3.columns import Column
from rigatoni_s3.compression import GZIP_LEVEL, ZSTD_LEVEL
from rigatoni_s3.config import Compression
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

ROW_GROUP_ROWS = 128 * 1024
"""Rows per row group: big enough for good compression and scans, small enough to
let readers parallelise over large objects."""

SCHEMA = pa.schema(
    [
        pa.field("operation", pa.string(), nullable=False),
        pa.field("database", pa.string()),
        pa.field("collection", pa.string()),
        pa.field("cluster_time", pa.timestamp("us", tz="UTC")),
        pa.field("document_key", pa.string()),
        pa.field("full_document", pa.string()),
        pa.field("update_description", pa.string()),
        pa.field("resume_token", pa.string()),
        pa.field("full_document_before_change", pa.string()),
        pa.field("wall_time", pa.timestamp("us", tz="UTC")),
        pa.field("cluster_time_increment", pa.int64()),
        pa.field("transaction", pa.string()),
        pa.field("extra", pa.string()),
    ]
)
assert tuple(SCHEMA.names) == ENVELOPE_COLUMNS

SLICE_ROWS = 1024
"""Rows converted to Arrow per call: a column of them takes well under a millisecond."""

DICTIONARY_COLUMNS = ["operation", "database", "collection"]
"""Low-cardinality columns; everything else is plain-encoded."""
STATISTICS_COLUMNS = [
    "operation",
    "database",
    "collection",
    "cluster_time",
    "document_key",
    "resume_token",
    "wall_time",
    "cluster_time_increment",
]

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "json": pa.string(),
}


def arrow_type(column: Column) -> pa.DataType:
    """The Arrow type of a typed column."""
    if column.kind == "decimal":
        return pa.decimal128(column.precision, column.scale)
    return _ARROW_TYPES[column.kind]


_CODECS: dict[Compression, tuple[str, int | None]] = {
    Compression.NONE: ("none", None),
    Compression.GZIP: ("gzip", GZIP_LEVEL),
    Compression.ZSTD: ("zstd", ZSTD_LEVEL),
}


TIMESTAMP = pa.timestamp("us", tz="UTC")
_MICROS = pa.duration("us")


def _array(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    """pyarrow's own conversion, for columns with nothing faster."""
    return pa.array(values, type=kind)


def _json_array(values: Sequence[bytes | None], kind: pa.DataType) -> pa.Array:
    """A string column from JSON our writers made: taken as binary, which skips the
    UTF-8 check that costs pyarrow most of its time here (those writers only make
    valid UTF-8), and then read as strings without a copy."""
    return pa.array(values, type=pa.binary()).view(kind)


def _timestamp_array(values: Sequence[datetime | None], kind: pa.DataType) -> pa.Array:
    """A UTC timestamp column from aware datetimes, as their distances from the epoch:
    pyarrow converts a timedelta in a fifth of the time it takes for an aware datetime,
    whose offset it asks for in Python. A column with nulls takes pyarrow's way."""
    try:
        distances = since_epoch(values)  # type: ignore[arg-type]  # a null raises
    except TypeError:  # a null (or a naive datetime, which pyarrow reads as UTC)
        return pa.array(values, type=kind)
    return pa.array(distances, type=_MICROS).view(kind)


class ParquetSerializer:
    """``.parquet``: the envelope as typed columns, documents as JSON strings."""

    extension = "parquet"
    content_type = "application/vnd.apache.parquet"
    compresses_internally = True
    rows_are_lines = False

    def __init__(
        self,
        compression: Compression = Compression.NONE,
        columns: Mapping[str, Column] | None = None,
    ) -> None:
        self.compression = compression
        self._codec, self._level = _CODECS[compression]
        self.columns: Mapping[str, Column] = dict(columns or {})
        self.schema = pa.schema(
            [
                *SCHEMA,
                *(pa.field(name, arrow_type(column)) for name, column in self.columns.items()),
            ]
        )
        """The objects' Arrow schema: :data:`SCHEMA`, then the typed columns."""
        self._dictionary = DICTIONARY_COLUMNS + [
            name for name, column in self.columns.items() if column.kind == "string"
        ]
        json_columns = {*JSON_COLUMNS, *(n for n, c in self.columns.items() if c.kind == "json")}
        self._converters = [
            _json_array
            if field.name in json_columns
            else _timestamp_array
            if field.type == TIMESTAMP
            else _array
            for field in self.schema
        ]
        self.statistics_columns = STATISTICS_COLUMNS + [
            name for name, column in self.columns.items() if column.kind != "json"
        ]
        """The columns with min/max statistics: the small envelope ones, and the typed
        ones but json."""

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
        """One Parquet file holding ``rows`` in order."""
        # pyarrow converts bytes holding UTF-8 into string arrays without a round trip
        # through str, and aware datetimes into UTC microseconds. It holds the GIL while
        # it converts, so it converts one column of a slice of rows at a time.
        schema = self.schema
        batches = []
        breaker = GilBreaker()
        for start in range(0, len(rows), SLICE_ROWS):
            arrays = []
            for column, field, convert in zip(
                self._columns_of(rows[start : start + SLICE_ROWS]),
                schema,
                self._converters,
                strict=True,
            ):
                if column.count(None) == len(column):  # a column most events leave empty
                    arrays.append(pa.nulls(len(column), field.type))
                else:
                    arrays.append(convert(column, field.type))
                breaker()
            batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
        table = pa.Table.from_batches(batches, schema=schema)
        sink = pa.BufferOutputStream()
        pq.write_table(
            table,
            sink,
            row_group_size=ROW_GROUP_ROWS,
            compression=self._codec,
            compression_level=self._level,
            use_dictionary=self._dictionary,
            write_statistics=self.statistics_columns,
        )
        body: bytes = sink.getvalue().to_pybytes()
        return body

    def _columns_of(self, rows: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        """The values of each column of ``rows``, the typed columns after the envelope's."""
        if not self.columns:
            return zip(*rows, strict=True)
        return chain(
            zip(*(row.envelope for row in rows), strict=True),
            zip(*(row.values for row in rows), strict=True),
        )
