"""File formats, one module each, behind the :class:`Serializer` protocol.

Encoding happens in two steps, both off the event loop:

1. ``encode_events`` turns the events of a ``write_batch`` call into *rows* when it
   accepts them, in one pass where the format allows (one orjson call for all the
   documents). If any event cannot be encoded, ``encode_event`` takes them one by
   one, so that a value the format cannot hold is rejected for its event alone.
   Raw BSON events arrive with their documents already JSON (``_bsonjson``) and
   take ``encode_envelopes``. Row sizes feed the batch and memory limits exactly.
2. ``serialize`` turns the rows of one partition buffer into an object body.

With typed columns configured, ``with_columns`` adds their values to the rows of
accepted events between the two steps (:mod:`rigatoni_s3._projection` reads them);
without, the rows and the code path are the envelope's alone.

Formats that compress internally (Parquet, Avro) take the codec at construction
and are never wrapped in an outer gzip/zstd layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rigatoni_s3.columns import Column
from rigatoni_s3.config import Compression, SerializationFormat
from rigatoni_s3.events import EventFields
from rigatoni_s3.formats._envelope import EnvelopeRow


class Serializer(Protocol):
    """Turns events into rows, and rows into an object body."""

    extension: str
    """File extension without the dot and without a compression suffix."""
    content_type: str
    compresses_internally: bool
    """True when ``serialize`` applies the configured compression itself."""
    rows_are_lines: bool
    """True when a row is the event's JSON Lines row, which the raw BSON reader can
    write whole (``convert_batch(lines=True)``) instead of ``encode_envelopes``."""
    columns: Mapping[str, Column]
    """The typed columns written after the envelope, in order; empty for none."""

    def encode_event(self, event: EventFields) -> tuple[Any, int]:
        """One event as a row and the row's size in bytes; raises SerializationError."""
        ...

    def encode_events(self, events: Sequence[EventFields]) -> tuple[list[Any], list[int]]:
        """Rows and sizes of all ``events``; raises if one of them cannot be encoded."""
        ...

    def encode_envelopes(self, envelopes: Sequence[EnvelopeRow]) -> tuple[list[Any], list[int]]:
        """Rows and sizes of events whose documents are already JSON (raw BSON input).

        Cannot fail: the envelopes were checked when they were read. The rows equal
        what ``encode_events`` gives for the same events decoded.
        """
        ...

    def with_columns(
        self, rows: list[Any], sizes: list[int], values: Sequence[tuple[Any, ...]]
    ) -> tuple[list[Any], list[int]]:
        """The rows of accepted events with their typed values (one tuple per row, in
        the columns' order, None for null) added, and the rows' new sizes."""
        ...

    def serialize(self, rows: Sequence[Any]) -> bytes:
        """The object body holding ``rows`` in order."""
        ...


def serializer_for(
    fmt: SerializationFormat,
    compression: Compression,
    columns: Mapping[str, Column] | None = None,
) -> Serializer:
    """The serializer of a format; columnar formats take ``compression`` as their codec.
    ``columns`` are the typed columns written after the envelope."""
    columns = columns or {}
    if fmt is SerializationFormat.JSON:
        from rigatoni_s3.formats.jsonl import JsonLinesSerializer

        return JsonLinesSerializer(columns)
    if fmt is SerializationFormat.CSV:
        from rigatoni_s3.formats.csv import CsvSerializer

        return CsvSerializer(columns)
    # pyarrow and fastavro are optional extras: import them only when chosen.
    if fmt is SerializationFormat.PARQUET:
        from rigatoni_s3.formats.parquet import ParquetSerializer

        return ParquetSerializer(compression, columns)
    if fmt is SerializationFormat.AVRO:
        from rigatoni_s3.formats.avro import AvroSerializer

        return AvroSerializer(compression, columns)
    raise ValueError(f"unknown format {fmt!r}")
