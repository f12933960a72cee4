"""CSV, Parquet and Avro serializers: schema, value mapping, validation, codecs (no server)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rigatoni_s3 import Compression, KeyGenerationStrategy, SerializationFormat
from rigatoni_s3._encoder import Encoder
from rigatoni_s3.columns import Column
from rigatoni_s3.compression import codec_for
from rigatoni_s3.errors import ConfigError, SerializationError
from rigatoni_s3.events import ChangeEvent, EventFields, fields_of
from rigatoni_s3.formats import Serializer, serializer_for
from rigatoni_s3.formats import avro as avro_format
from rigatoni_s3.formats import csv as csv_format
from rigatoni_s3.formats import parquet as parquet_format
from rigatoni_s3.formats._envelope import ENVELOPE_COLUMNS, EnvelopeRow, envelope_size
from rigatoni_s3.formats._json import iso_utc
from rigatoni_s3.formats._typed import TypedRow
from rigatoni_s3.formats.csv import CsvSerializer
from tests.helpers import (
    ANY_EVENT,
    BASE_TIME,
    BSON_DOCUMENT,
    BSON_EXPECTED,
    DOCUMENTS_ST,
    JSON_COLUMNS,
    LONE_SURROGATE,
    OID,
    Int64,
    ObjectId,
    Timestamp,
    Unmappable,
    decode_records,
    event,
    expected_json,
)

CSV, PARQUET, AVRO, JSON = (
    SerializationFormat.CSV,
    SerializationFormat.PARQUET,
    SerializationFormat.AVRO,
    SerializationFormat.JSON,
)
TABULAR = [CSV, PARQUET, AVRO]
COLUMNS = [
    "operation",
    "database",
    "collection",
    "cluster_time",
    "document_key",
    "full_document",
    "update_description",
    "resume_token",
    "full_document_before_change",
    "wall_time",
    "cluster_time_increment",
    "transaction",
    "extra",
]
DOCUMENTS = JSON_COLUMNS


# -- helpers -------------------------------------------------------------------------------


def write(
    fmt: SerializationFormat,
    events: Sequence[EventFields],
    compression: Compression = Compression.NONE,
) -> bytes:
    """The object body a destination would upload for ``events`` (outer codec included)."""
    encoder = Encoder(
        serializer_for(fmt, compression), codec_for(compression), KeyGenerationStrategy.FLAT
    )
    return encoder.encode(rows_of(encoder.serializer, events), 0).body


def roundtrip(
    fmt: SerializationFormat,
    events: Sequence[EventFields],
    compression: Compression = Compression.NONE,
) -> list[dict[str, Any]]:
    """``events`` written in ``fmt`` and read back with the format's own reader."""
    serializer = serializer_for(fmt, compression)
    rows = rows_of(serializer, events)
    return decode_records(f"object.{serializer.extension}", serializer.serialize(rows))


def rows_of(serializer: Serializer, events: Sequence[EventFields]) -> list[Any]:
    """Rows as the encoder makes them: all at once, or one by one when that fails."""
    try:
        rows, _ = serializer.encode_events(events)
    except Exception:
        rows = [serializer.encode_event(e)[0] for e in events]
    return rows


def expected_record(e: EventFields) -> dict[str, Any]:
    """The record an event of plain values reads back as."""
    record = dict(zip(COLUMNS, e, strict=True))
    for field in DOCUMENTS:
        record[field] = expected_json(record[field])
    return record


# -- the protocol and its wiring -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "extension", "content_type", "internal"),
    [
        (CSV, "csv", "text/csv", False),
        (PARQUET, "parquet", "application/vnd.apache.parquet", True),
        (AVRO, "avro", "application/avro", True),
    ],
)
@pytest.mark.parametrize("compression", list(Compression))
def test_serializer_for_describes_each_format(
    fmt: SerializationFormat,
    extension: str,
    content_type: str,
    internal: bool,
    compression: Compression,
) -> None:
    """serializer_for gives each format its extension, Content-Type and compression role."""
    serializer: Serializer = serializer_for(fmt, compression)
    assert serializer.extension == extension
    assert serializer.content_type == content_type
    assert serializer.compresses_internally is internal


@pytest.mark.parametrize("compression", list(Compression))
def test_columnar_objects_are_never_wrapped_in_an_outer_codec(compression: Compression) -> None:
    """Parquet and Avro bodies start with their magic bytes and carry no Content-Encoding."""
    for fmt, magic in ((PARQUET, b"PAR1"), (AVRO, b"Obj\x01")):
        encoder = Encoder(
            serializer_for(fmt, compression), codec_for(compression), KeyGenerationStrategy.FLAT
        )
        obj = encoder.encode([encoder.serializer.encode_event(event())[0]], 1)
        assert obj.body.startswith(magic)
        assert obj.content_encoding is None
        assert encoder.extension == fmt.value


@pytest.mark.parametrize(
    ("compression", "suffix", "encoding"),
    [
        (Compression.NONE, "", None),
        (Compression.GZIP, ".gz", "gzip"),
        (Compression.ZSTD, ".zst", "zstd"),
    ],
)
def test_csv_objects_are_compressed_whole(
    compression: Compression, suffix: str, encoding: str | None
) -> None:
    """CSV is compressed as a whole object, with the codec's extension and Content-Encoding."""
    encoder = Encoder(
        serializer_for(CSV, compression), codec_for(compression), KeyGenerationStrategy.FLAT
    )
    obj = encoder.encode([encoder.serializer.encode_event(event())[0]], 1)
    assert encoder.extension == "csv" + suffix
    assert obj.content_encoding == encoding
    assert (
        decode_records("x.csv" + suffix, _decompress(obj.body, compression))[0]["operation"]
        == "insert"
    )


def _decompress(body: bytes, compression: Compression) -> bytes:
    import gzip

    import zstandard

    if compression is Compression.GZIP:
        return gzip.decompress(body)
    if compression is Compression.ZSTD:
        return zstandard.ZstdDecompressor().decompress(body)
    return body


@pytest.mark.parametrize("fmt", TABULAR)
def test_columns_follow_the_envelope_order(fmt: SerializationFormat) -> None:
    """Every format writes the eight envelope columns in the same order."""
    body = write(fmt, [event()])
    if fmt is CSV:
        names = next(csv.reader(io.StringIO(body.decode(), newline="")))
    elif fmt is PARQUET:
        names = pq.read_schema(io.BytesIO(body)).names
    else:
        schema: Any = fastavro.reader(io.BytesIO(body)).writer_schema
        names = [f["name"] for f in schema["fields"]]
    assert list(names) == COLUMNS


@pytest.mark.parametrize("fmt", TABULAR)
def test_empty_batch_is_a_valid_file(fmt: SerializationFormat) -> None:
    """Serializing no rows still yields a readable file with no records."""
    serializer = serializer_for(fmt, Compression.NONE)
    assert decode_records(f"x.{serializer.extension}", serializer.serialize([])) == []


@pytest.mark.parametrize("compression", list(Compression))
@pytest.mark.parametrize("fmt", TABULAR)
def test_same_rows_give_the_same_bytes(fmt: SerializationFormat, compression: Compression) -> None:
    """Encoding a batch again yields identical bytes, so a retried upload matches its first try."""
    events = [event(n, full_document={"_id": n, "v": [n, "x"]}) for n in range(20)]
    assert write(fmt, events, compression) == write(fmt, list(events), compression)


def test_avro_sync_marker_differs_between_batches() -> None:
    """Each batch gets its own Avro sync marker (the file ends with it), derived from its events."""
    first = write(AVRO, [event(n) for n in range(3)])
    second = write(AVRO, [event(n) for n in range(3, 6)])
    assert first[-16:] != second[-16:]
    assert first[-16:] in first[:-16]  # the header carries the same marker


# -- Parquet specifics ---------------------------------------------------------------------


def test_parquet_schema_types() -> None:
    """Parquet stores the times as timestamp[us, UTC], the increment as int64, the rest as string."""
    schema = pq.read_schema(io.BytesIO(write(PARQUET, [event()])))
    assert schema.field("cluster_time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("wall_time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("cluster_time_increment").type == pa.int64()
    for name in COLUMNS:
        if name not in ("cluster_time", "wall_time", "cluster_time_increment"):
            assert schema.field(name).type == pa.string(), name
    assert not schema.field("operation").nullable
    assert all(schema.field(name).nullable for name in COLUMNS[1:])


@pytest.mark.parametrize(
    ("compression", "codec"),
    [(Compression.NONE, "UNCOMPRESSED"), (Compression.GZIP, "GZIP"), (Compression.ZSTD, "ZSTD")],
)
def test_parquet_compression_is_the_column_codec(compression: Compression, codec: str) -> None:
    """The configured compression becomes the codec of every Parquet column chunk."""
    metadata = pq.read_metadata(
        io.BytesIO(write(PARQUET, [event(n) for n in range(10)], compression))
    )
    group = metadata.row_group(0)
    assert {group.column(i).compression for i in range(group.num_columns)} == {codec}


def test_parquet_dictionary_encodes_low_cardinality_columns_only() -> None:
    """operation, database and collection are dictionary-encoded; documents are plain."""
    metadata = pq.read_metadata(io.BytesIO(write(PARQUET, [event(n) for n in range(50)])))
    group = metadata.row_group(0)
    encodings = {group.column(i).path_in_schema: group.column(i).encodings for i in range(8)}
    for name in ("operation", "database", "collection"):
        assert "RLE_DICTIONARY" in encodings[name], name
    for name in ("full_document", "document_key", "cluster_time"):
        assert "RLE_DICTIONARY" not in encodings[name], name


def test_parquet_statistics_cover_the_small_columns() -> None:
    """cluster_time min/max is in the footer (for pruning); full_document has no statistics."""
    events = [event(n, cluster_time=BASE_TIME + timedelta(minutes=n)) for n in range(5)]
    group = pq.read_metadata(io.BytesIO(write(PARQUET, events))).row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(8)}
    stats = columns["cluster_time"].statistics
    assert stats is not None
    assert stats.has_min_max
    assert (stats.min, stats.max) == (BASE_TIME, BASE_TIME + timedelta(minutes=4))
    assert (
        columns["full_document"].statistics is None
        or not columns["full_document"].statistics.has_min_max
    )


def test_parquet_row_groups_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch larger than the row-group size is split into several row groups, in order."""
    monkeypatch.setattr(parquet_format, "ROW_GROUP_ROWS", 100)
    body = write(PARQUET, [event(n) for n in range(250)])
    metadata = pq.read_metadata(io.BytesIO(body))
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [
        100,
        100,
        50,
    ]
    assert [r["document_key"]["_id"] for r in decode_records("x.parquet", body)] == list(range(250))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.datetimes(
                timezones=st.sampled_from(
                    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))]
                )
            ),
        ),
        min_size=1,
    )
)
def test_parquet_timestamp_columns_convert_as_pyarrow_does(times: list[datetime | None]) -> None:
    """The timestamp conversion through distances from the epoch gives pyarrow's array,
    with nulls, offsets other than UTC and the ends of the datetime range."""
    kind = parquet_format.TIMESTAMP
    expected = pa.array(times, type=kind)
    converted = parquet_format._timestamp_array(times, kind)
    assert converted.type == kind
    assert converted.equals(expected)
    if None not in times:
        assert converted.to_pylist() == times


@given(
    st.lists(
        st.one_of(
            st.none(), st.text().map(lambda text: json.dumps(text, ensure_ascii=False).encode())
        )
    )
)
def test_parquet_json_columns_convert_as_pyarrow_does(values: list[bytes | None]) -> None:
    """JSON taken as binary and viewed as strings is pyarrow's own string array."""
    converted = parquet_format._json_array(values, pa.string())
    assert converted.type == pa.string()
    assert converted.equals(pa.array(values, type=pa.string()))


# -- Avro specifics ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compression", "codec"),
    [(Compression.NONE, "null"), (Compression.GZIP, "deflate"), (Compression.ZSTD, "zstandard")],
)
def test_avro_compression_is_the_container_codec(compression: Compression, codec: str) -> None:
    """The configured compression becomes the Avro container's block codec."""
    reader = fastavro.reader(io.BytesIO(write(AVRO, [event(n) for n in range(10)], compression)))
    assert reader.codec == codec
    assert len(list(reader)) == 10


def test_avro_schema_is_embedded() -> None:
    """The container header holds the ChangeEvent schema with nullable unions and timestamp-micros."""
    reader = fastavro.reader(io.BytesIO(write(AVRO, [event()])))
    schema: Any = reader.writer_schema
    assert schema["name"] == "rigatoni_s3.ChangeEvent"
    fields = {f["name"]: f["type"] for f in schema["fields"]}
    assert fields["operation"] == "string"
    timestamp = ["null", {"type": "long", "logicalType": "timestamp-micros"}]
    assert fields["cluster_time"] == timestamp
    assert fields["wall_time"] == timestamp
    assert fields["cluster_time_increment"] == ["null", "long"]
    for name in COLUMNS[1:]:
        if name not in ("cluster_time", "wall_time", "cluster_time_increment"):
            assert fields[name] == ["null", "string"], name


def test_avro_schemas_old_and_new_resolve_both_ways() -> None:
    """A reader holding the eight-field schema reads new files, and the new schema reads old
    files with nulls in the last five fields: they all default to null."""
    old_schema = dict(avro_format.SCHEMA, fields=avro_format.SCHEMA["fields"][:8])
    new_event = event(
        1,
        full_document_before_change={"_id": 1},
        wall_time=BASE_TIME,
        cluster_time_increment=3,
        transaction={"txnNumber": 2},
        extra={"to": {"coll": "b"}},
    )
    (seen_by_old,) = cast(
        list[dict[str, Any]],
        list(
            fastavro.reader(
                io.BytesIO(write(AVRO, [new_event])),
                reader_schema=fastavro.parse_schema(old_schema),
            )
        ),
    )
    assert list(seen_by_old) == COLUMNS[:8]
    assert seen_by_old["document_key"] == '{"_id":1}'

    old_file = io.BytesIO()
    fastavro.writer(
        old_file,
        fastavro.parse_schema(old_schema),
        [{"operation": "insert", "collection": "users", "cluster_time": BASE_TIME}],
    )
    old_file.seek(0)
    (seen_by_new,) = cast(
        list[dict[str, Any]],
        list(fastavro.reader(old_file, reader_schema=fastavro.parse_schema(avro_format.SCHEMA))),
    )
    assert list(seen_by_new) == COLUMNS
    assert seen_by_new["collection"] == "users"
    assert all(seen_by_new[name] is None for name in COLUMNS[8:])


def test_avro_stores_cluster_time_as_epoch_microseconds() -> None:
    """cluster_time is a long of microseconds since the epoch, whatever the reader makes of it."""
    when = datetime(2025, 1, 15, 10, 0, 0, 654321, tzinfo=UTC)
    body = write(AVRO, [event(cluster_time=when)])
    record: Any = next(iter(fastavro.reader(io.BytesIO(body))))
    assert record["cluster_time"] == when
    plain_schema = {
        **avro_format.SCHEMA,
        "fields": [
            {**f, "type": ["null", "long"]} if f["name"] == "cluster_time" else f
            for f in avro_format.SCHEMA["fields"]
        ],
    }
    # Decode the block's bytes with the same layout minus the logical type: the raw long.
    block: Any = next(iter(fastavro.block_reader(io.BytesIO(body))))
    plain: Any = fastavro.schemaless_reader(block.bytes_, fastavro.parse_schema(plain_schema), None)
    assert plain["cluster_time"] == (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1
    )


def test_avro_reports_a_missing_codec_library_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When fastavro lacks a codec's library, building the serializer raises ConfigError."""
    real_writer = fastavro.writer

    def writer(fo: Any, schema: Any, records: Any, codec: str = "null", **kw: Any) -> None:
        if codec == "zstandard":
            raise ValueError("zstandard codec is supported but you need to install backports.zstd")
        real_writer(fo, schema, records, codec=codec, **kw)

    monkeypatch.setattr(fastavro, "writer", writer)
    with pytest.raises(ConfigError, match=r"backports\.zstd") as caught:
        serializer_for(AVRO, Compression.ZSTD)
    assert caught.value.field == "compression"
    serializer_for(AVRO, Compression.GZIP)  # other codecs are unaffected


# -- CSV specifics -------------------------------------------------------------------------


def test_csv_layout() -> None:
    """CSV has a header, CRLF line ends, ISO-8601 UTC times, JSON documents and empty nulls."""
    when = datetime(2025, 1, 15, 10, 0, 0, 250000, tzinfo=UTC)
    body = write(
        CSV,
        [
            event(1, cluster_time=BASE_TIME),
            EventFields("delete", "shop", "users", when, {"_id": 2}, None, None, None),
            EventFields("dropDatabase", "shop", None, None, None, None, None, {"_data": "82"}),
            event(
                3,
                full_document_before_change={"_id": 3},
                wall_time=when,
                cluster_time_increment=7,
                transaction={"txnNumber": 1},
                extra={"to": {"db": "a"}},
            ),
        ],
    ).decode()
    lines = body.split("\r\n")
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1] == (
        'insert,shop,users,2025-01-15T10:00:00Z,"{""_id"":1}",'
        '"{""_id"":1,""name"":""user 1""}",,"{""_data"":""8263000000000001""}",,,,,'
    )
    assert lines[2] == 'delete,shop,users,2025-01-15T10:00:00.250000Z,"{""_id"":2}",,,,,,,,'
    assert lines[3] == 'dropDatabase,shop,,,,,,"{""_data"":""82""}",,,,,'
    assert lines[4] == (
        'insert,shop,users,2025-01-15T10:00:00Z,"{""_id"":3}",'
        '"{""_id"":3,""name"":""user 3""}",,"{""_data"":""8263000000000003""}",'
        '"{""_id"":3}",2025-01-15T10:00:00.250000Z,7,"{""txnNumber"":1}",'
        '"{""to"":{""db"":""a""}}"'
    )
    assert lines[5] == ""


def test_csv_cluster_time_is_converted_to_utc() -> None:
    """An aware cluster_time in another zone is written as the same instant in UTC."""
    plus_two = datetime(2025, 1, 15, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    row = next(
        csv.DictReader(io.StringIO(write(CSV, [event(cluster_time=plus_two)]).decode(), newline=""))
    )
    assert row["cluster_time"] == "2025-01-15T10:00:00Z"


TRICKY_TEXT = [
    "comma, inside",
    'quote " inside',
    '""',
    "line\nbreak",
    "carriage\rreturn",
    "crlf\r\nend",
    "ユーザー 😀 naïve",
    " leading and trailing ",
    "tab\tand\x00nul",
    "\u2028line separator\x85",
    "back\\slash \\n",
    "",
]


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_csv_quoting_keeps_every_character(text: str) -> None:
    """Commas, quotes, line breaks, NUL and unicode survive in envelope fields and documents."""
    e = event(
        database=text or "db", collection=text or "c", full_document={"k": text, text: [text]}
    )
    (record,) = roundtrip(CSV, [e])
    assert record == expected_record(e)


def _csv_module_text(
    rows: Sequence[EnvelopeRow] | Sequence[TypedRow], names: Sequence[str]
) -> bytes:
    """The reference: what the standard csv module's default dialect writes for ``rows``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(names)
    for row in rows:
        envelope = row.envelope if isinstance(row, TypedRow) else row
        cells: list[Any] = [
            value.decode() if isinstance(value, bytes) else value for value in envelope
        ]
        for at in (3, 9):  # cluster_time, wall_time
            if cells[at] is not None:
                cells[at] = iso_utc(cells[at])
        if isinstance(row, TypedRow):
            cells.extend(row.values)
        writer.writerow(cells)
    return out.getvalue().encode()


_TEXTS = st.one_of(st.none(), st.text(st.characters(exclude_categories=["Cs"]), max_size=12))
_SAMPLE_TIMES = st.sampled_from(
    [
        datetime(2025, 1, 15, 10, 0, tzinfo=UTC),
        datetime(2025, 1, 15, 10, 0, 0, 500, tzinfo=UTC),  # the same second, apart
        datetime(2025, 1, 15, 12, 0, tzinfo=timezone(timedelta(hours=2))),  # the same instant
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
)
_TIMES = st.one_of(
    st.none(),
    _SAMPLE_TIMES,
    st.datetimes(  # a day inside datetime's range either side, so UTC is one too
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]),
    ),
)
_DOCUMENTS = st.one_of(
    st.none(),
    st.sampled_from([b"{}", b"[]", b'{"a":1}', b'{"a":"x,y"}']),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12).map(str.encode),
)
_ENVELOPES = st.builds(
    EnvelopeRow,
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
    _TEXTS,
    _TEXTS,
    _TIMES,
    _DOCUMENTS,
    _DOCUMENTS,
    _DOCUMENTS,
    _DOCUMENTS,
    _DOCUMENTS,
    _TIMES,
    st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70)),
    _DOCUMENTS,
    _DOCUMENTS,
)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(_ENVELOPES, max_size=6))
def test_csv_records_are_what_the_csv_module_writes(rows: list[EnvelopeRow]) -> None:
    """Records are built as bytes, and are byte for byte what ``csv.writer`` makes of the
    same cells: quoting, doubled quotes, empty nulls, times and integers."""
    expected = _csv_module_text(rows, ENVELOPE_COLUMNS)
    assert serializer_for(CSV, Compression.NONE).serialize(rows) == expected


def test_csv_records_of_many_slices_are_what_the_csv_module_writes() -> None:
    """Fields are made a slice of rows at a time: across slices, with columns empty in
    some slices only and times off UTC in one, records are still the csv module's."""
    base = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
    rows = [
        EnvelopeRow(
            "insert" if n % 3 else "update",
            "db",
            f"c{n % 4}",
            base + timedelta(seconds=n // 7),
            b'{"_id":%d}' % n,
            None if n % 5 == 0 else b'{"a":"x,y","n":%d}' % n,
            None if n < 700 else b"{}",
            b'{"_data":"%d"}' % n,
            None,
            None if n % 11 == 0 else base + timedelta(microseconds=n * 1001),
            n,
            None,
            None if n != 1200 else b'{"k":1}',
        )
        for n in range(1300)
    ]
    rows[900] = rows[900]._replace(wall_time=base.astimezone(timezone(timedelta(hours=3))))
    expected = _csv_module_text(rows, ENVELOPE_COLUMNS)
    assert serializer_for(CSV, Compression.NONE).serialize(rows) == expected


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.tuples(_ENVELOPES, st.tuples(_TEXTS, _TEXTS)), max_size=5),
    names=st.sampled_from([("a", "b"), ("with,comma", 'with"quote')]),
)
def test_csv_typed_records_are_what_the_csv_module_writes(
    rows: list[tuple[EnvelopeRow, tuple[str | None, str | None]]], names: tuple[str, str]
) -> None:
    """Typed texts and column names follow the envelope, quoted as the csv module does."""
    columns = {name: Column("full_document.x", "string") for name in names}
    serializer = CsvSerializer(columns)
    typed = [TypedRow(envelope, values) for envelope, values in rows]
    expected = _csv_module_text(typed, (*ENVELOPE_COLUMNS, *names))
    assert serializer.serialize(typed) == expected


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(_ENVELOPES, max_size=6))
def test_avro_union_branches_named_give_the_bytes_of_plain_records(
    rows: list[EnvelopeRow],
) -> None:
    """Records name their union branches for speed; the file is byte for byte what
    fastavro writes from plain records, where it finds each branch itself."""
    rows = [
        row._replace(cluster_time_increment=None)
        if row.cluster_time_increment is not None and abs(row.cluster_time_increment) >= 2**63
        else row
        for row in rows
    ]
    plain = io.BytesIO()
    fastavro.writer(
        plain,
        fastavro.parse_schema(avro_format.SCHEMA),
        [
            {
                name: value.decode() if isinstance(value, bytes) else value
                for name, value in zip(ENVELOPE_COLUMNS, row, strict=True)
            }
            for row in rows
        ],
        codec="null",
        sync_marker=avro_format._sync_marker(rows),
    )
    assert serializer_for(AVRO, Compression.NONE).serialize(rows) == plain.getvalue()


# -- the one value mapping, in every format ------------------------------------------------


@pytest.mark.parametrize("fmt", TABULAR)
def test_bson_values_map_as_in_json_lines(fmt: SerializationFormat) -> None:
    """BSON types come back as the documented JSON in every format, identical to JSON Lines."""
    e = event(
        document_key={"_id": ObjectId(OID)},
        full_document=BSON_DOCUMENT,
        update_description={"updatedFields": {"count": Int64(3), "ts": Timestamp(5, 1)}},
    )
    (record,) = roundtrip(fmt, [e])
    assert record["document_key"] == {"_id": OID}
    assert record["full_document"] == BSON_EXPECTED
    assert record["update_description"] == {"updatedFields": {"count": 3, "ts": {"t": 5, "i": 1}}}
    assert record == roundtrip(JSON, [e])[0]


BIG_INTS = [2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 2**64 + 1, -(2**70) + 3, 10**40 + 7]


@pytest.mark.parametrize("fmt", TABULAR)
def test_integers_beyond_double_precision_are_exact(fmt: SerializationFormat) -> None:
    """Integers beyond 2^53, 2^64 and far beyond keep their exact value."""
    e = event(full_document={"n": BIG_INTS, "top": 2**64 + 1})
    (record,) = roundtrip(fmt, [e])
    assert record["full_document"] == {"n": BIG_INTS, "top": 2**64 + 1}
    assert b"18446744073709551617" in write(fmt, [e])  # the digits, not a rounded double


@pytest.mark.parametrize("fmt", TABULAR)
def test_non_finite_floats_use_extended_json(fmt: SerializationFormat) -> None:
    """NaN and ±infinity read back as {"$numberDouble": ...}, never as null."""
    e = event(full_document={"a": math.nan, "b": [math.inf, -math.inf], "c": 1.5, "d": None})
    (record,) = roundtrip(fmt, [e])
    assert record["full_document"] == {
        "a": {"$numberDouble": "NaN"},
        "b": [{"$numberDouble": "Infinity"}, {"$numberDouble": "-Infinity"}],
        "c": 1.5,
        "d": None,
    }


@pytest.mark.parametrize("fmt", TABULAR)
def test_deeply_nested_documents_survive(fmt: SerializationFormat) -> None:
    """Documents nested deeper than orjson's limit still come back whole."""
    deep: Any = "bottom"
    for level in range(300):
        deep = {"l": [deep, level]} if level % 2 else {"d": deep}
    (record,) = roundtrip(fmt, [event(full_document={"root": deep})])
    assert record["full_document"] == {"root": deep}


@pytest.mark.parametrize("fmt", TABULAR)
def test_update_and_delete_events(fmt: SerializationFormat) -> None:
    """Updates keep removedFields/truncatedArrays; deletes have a null full_document."""
    update = EventFields(
        "update",
        "shop",
        "users",
        BASE_TIME,
        {"_id": 7},
        None,
        {
            "updatedFields": {"name": "new", "tags.1": "x"},
            "removedFields": ["legacy", "address.zip"],
            "truncatedArrays": [{"field": "history", "newSize": 2}],
        },
        {"_data": "8263000000000007"},
    )
    delete = EventFields(
        "delete", "shop", "users", BASE_TIME, {"_id": 8}, None, None, {"_data": "83"}
    )
    records = roundtrip(fmt, [update, delete])
    assert records == [expected_record(update), expected_record(delete)]
    assert records[1]["full_document"] is None
    assert records[1]["update_description"] is None


@pytest.mark.parametrize("fmt", TABULAR)
def test_missing_values_are_null(fmt: SerializationFormat) -> None:
    """A missing cluster_time, collection, database or resume token is null in every format."""
    e = EventFields("invalidate", None, None, None, None, None, None, None)
    (record,) = roundtrip(fmt, [e])
    assert record == dict.fromkeys(COLUMNS) | {"operation": "invalidate"}


@pytest.mark.parametrize("fmt", TABULAR)
def test_change_events_and_raw_documents_agree(fmt: SerializationFormat) -> None:
    """A ChangeEvent and the raw change-stream document it came from read back identically."""
    raw = {
        "_id": {"_data": "8263"},
        "operationType": "replace",
        "ns": {"db": "shop", "coll": "users"},
        "documentKey": {"_id": 1},
        "fullDocument": {"_id": 1, "v": 2},
        "clusterTime": {"$timestamp": {"t": 1736935200, "i": 3}},
    }
    as_event = ChangeEvent.from_change_stream(raw)
    assert roundtrip(fmt, [fields_of(raw)]) == roundtrip(fmt, [fields_of(as_event)])


# -- validation happens in encode_event ----------------------------------------------------


class LoudStr(str):
    """A str subclass whose own methods misbehave; only its characters may be written."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("encode must not be called")

    def __str__(self) -> str:
        raise RuntimeError("__str__ must not be called")


BAD_EVENTS: list[tuple[str, EventFields]] = [
    ("full_document.thing", event(full_document={"thing": Unmappable()})),
    ("full_document.list[1]", event(full_document={"list": [1, Unmappable()]})),
    ("document_key", event(document_key={"_id": LONE_SURROGATE})),
    ("full_document", event(full_document={LONE_SURROGATE: 1})),
    ("full_document", event(full_document={1: "non-string key"})),
    ("update_description", event(update_description={"x": LoudStr(LONE_SURROGATE)})),
    ("resume_token._data", event(resume_token={"_data": Unmappable()})),
    ("operation", event(operation=None)),
    ("operation", event(operation=42)),
    ("operation", event(operation=LONE_SURROGATE)),
    ("database", event(database=LONE_SURROGATE)),
    ("database", event(database=b"bytes")),
    ("collection", event(collection=LoudStr(LONE_SURROGATE))),
    ("collection", event(collection=7)),
    ("cluster_time", event(cluster_time="2025-01-15")),
]


@pytest.mark.parametrize("fmt", TABULAR)
@pytest.mark.parametrize(("field", "bad"), BAD_EVENTS, ids=[f for f, _ in BAD_EVENTS])
def test_unwritable_values_are_rejected_by_encode_event(
    fmt: SerializationFormat, field: str, bad: EventFields
) -> None:
    """A value the format cannot hold raises SerializationError naming the field, in encode_event."""
    with pytest.raises(SerializationError) as caught:
        serializer_for(fmt, Compression.NONE).encode_event(bad)
    assert caught.value.field == field


@pytest.mark.parametrize("fmt", TABULAR)
def test_str_subclasses_are_written_as_plain_text(fmt: SerializationFormat) -> None:
    """A str subclass is stored as its characters, without calling its own methods."""
    e = event(
        database=LoudStr("shop"), collection=LoudStr("ユーザー"), full_document={"k": LoudStr("v")}
    )
    (record,) = roundtrip(fmt, [e])
    assert (record["database"], record["collection"], record["full_document"]) == (
        "shop",
        "ユーザー",
        {"k": "v"},
    )


@pytest.mark.parametrize("fmt", TABULAR)
def test_row_size_estimates_the_written_bytes(fmt: SerializationFormat) -> None:
    """The size encode_event reports is close to what the row occupies in the object."""
    serializer = serializer_for(fmt, Compression.NONE)
    events = [
        event(n, full_document={"_id": n, "name": f"user {n}", "bio": "x" * 400, "q": '"'})
        for n in range(200)
    ]
    encoded = [serializer.encode_event(e) for e in events]
    estimated = sum(size for _, size in encoded)
    actual = len(serializer.serialize([row for row, _ in encoded]))
    assert 0.85 < estimated / actual < 1.2, (estimated, actual)


@pytest.mark.parametrize("fmt", TABULAR)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(ANY_EVENT, max_size=6), rows=st.lists(_ENVELOPES, max_size=6))
def test_sizes_of_many_rows_are_the_sizes_of_each(
    fmt: SerializationFormat, events: list[EventFields], rows: list[EnvelopeRow]
) -> None:
    """Sizes worked out a column at a time, for decoded events and for envelope rows,
    are what one event or one row at a time gives."""
    serializer = serializer_for(fmt, Compression.NONE)
    accepted = []
    for e in events:
        try:
            accepted.append(serializer.encode_event(e))
        except SerializationError:
            continue
    if len(accepted) == len(events):
        assert serializer.encode_events(events) == (
            [row for row, _ in accepted],
            [size for _, size in accepted],
        )
    quoting = csv_format._quoting if fmt is CSV else (lambda row: 0)
    expected = [envelope_size(row) + quoting(row) for row in rows]
    assert serializer.encode_envelopes(rows) == (rows, expected)


# -- generated documents -------------------------------------------------------------------

NAMES = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)


@pytest.mark.parametrize("fmt", TABULAR)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    documents=st.lists(DOCUMENTS_ST, min_size=1, max_size=4),
    database=NAMES,
    collection=NAMES,
    update=st.none() | DOCUMENTS_ST,
)
def test_generated_documents_round_trip(
    fmt: SerializationFormat,
    documents: list[dict[str, Any]],
    database: str,
    collection: str,
    update: dict[str, Any] | None,
) -> None:
    """Arbitrary documents (unicode, control characters, big ints, NaN, nesting) come back equal."""
    events = [
        event(
            n,
            database=database,
            collection=collection,
            full_document=doc,
            update_description=update,
        )
        for n, doc in enumerate(documents)
    ]
    assert roundtrip(fmt, events) == [expected_record(e) for e in events]


@pytest.mark.parametrize("fmt", TABULAR)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(ANY_EVENT, min_size=1, max_size=6))
def test_serialize_never_fails_on_accepted_rows(
    fmt: SerializationFormat, events: list[EventFields]
) -> None:
    """Whatever the input, encode_event either rejects an event or its row serializes and reads back."""
    serializer = serializer_for(fmt, Compression.GZIP)
    rows, unnamed = [], []
    for e in events:
        try:
            rows.append(serializer.encode_event(e)[0])
        except SerializationError as exc:
            if exc.field is None:
                unnamed.append(exc)
    assert unnamed == []
    records = decode_records(f"x.{serializer.extension}", serializer.serialize(rows))
    assert len(records) == len(rows)


# -- extras --------------------------------------------------------------------------------


def test_documents_are_compact_json_text() -> None:
    """Document cells hold compact JSON with unicode unescaped, as JSON Lines writes it."""
    doc = {"b": 1, "a": [True, None, "é ✓"]}
    table = pq.read_table(io.BytesIO(write(PARQUET, [event(full_document=doc)])))
    cell = table.column("full_document")[0].as_py()
    assert cell == '{"b":1,"a":[true,null,"é ✓"]}'
    assert json.loads(cell) == json.loads(write(JSON, [event(full_document=doc)]))["full_document"]
