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
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from rigatoni_s3._gil import GilBreaker
from rigatoni_s3.compression import GZIP_LEVEL, ZSTD_LEVEL
from rigatoni_s3.config import Compression
from rigatoni_s3.events import EventFields
from rigatoni_s3.formats._envelope import (
    ENVELOPE_COLUMNS,
    EnvelopeRow,
    envelope_row,
    envelope_rows,
    envelope_size,
)

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

_CODECS: dict[Compression, tuple[str, int | None]] = {
    Compression.NONE: ("none", None),
    Compression.GZIP: ("gzip", GZIP_LEVEL),
    Compression.ZSTD: ("zstd", ZSTD_LEVEL),
}


class ParquetSerializer:
    """``.parquet``: the envelope as typed columns, documents as JSON strings."""

    extension = "parquet"
    content_type = "application/vnd.apache.parquet"
    compresses_internally = True
    rows_are_lines = False

    def __init__(self, compression: Compression = Compression.NONE) -> None:
        self.compression = compression
        self._codec, self._level = _CODECS[compression]

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

    def serialize(self, rows: Sequence[EnvelopeRow]) -> bytes:
        """One Parquet file holding ``rows`` in order."""
        # pyarrow converts bytes holding UTF-8 into string arrays without a round trip
        # through str, and aware datetimes into UTC microseconds. It holds the GIL while
        # it converts, so it converts one column of a slice of rows at a time.
        batches = []
        breaker = GilBreaker()
        for start in range(0, len(rows), SLICE_ROWS):
            columns = zip(*rows[start : start + SLICE_ROWS], strict=True)
            arrays = []
            for column, field in zip(columns, SCHEMA, strict=True):
                if column.count(None) == len(column):  # a column most events leave empty
                    arrays.append(pa.nulls(len(column), field.type))
                else:
                    arrays.append(pa.array(column, type=field.type))
                breaker()
            batches.append(pa.RecordBatch.from_arrays(arrays, schema=SCHEMA))
        table = pa.Table.from_batches(batches, schema=SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(
            table,
            sink,
            row_group_size=ROW_GROUP_ROWS,
            compression=self._codec,
            compression_level=self._level,
            use_dictionary=DICTIONARY_COLUMNS,
            write_statistics=STATISTICS_COLUMNS,
        )
        body: bytes = sink.getvalue().to_pybytes()
        return body
