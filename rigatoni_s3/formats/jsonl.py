"""JSON Lines: one change event per line, documents as nested JSON objects."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from rigatoni_s3.errors import SerializationError
from rigatoni_s3.events import EventFields
from rigatoni_s3.formats._values import dumps


class JsonLinesSerializer:
    """``.jsonl``: ``{"operation": ..., "cluster_time": "…Z", "full_document": {...}, ...}``."""

    extension = "jsonl"
    content_type = "application/x-ndjson"
    compresses_internally = False

    def encode_event(self, event: EventFields) -> tuple[bytes, int]:
        """The event's line, newline included, and its length."""
        try:
            head = orjson.dumps(
                {
                    "operation": event.operation,
                    "database": event.database,
                    "collection": event.collection,
                    "cluster_time": event.cluster_time,
                },
                option=orjson.OPT_UTC_Z,
            )
        except TypeError as exc:
            raise SerializationError(
                f"envelope field cannot be encoded: {exc}", field="envelope"
            ) from exc
        line = b"".join(
            (
                head[:-1],
                b',"document_key":',
                dumps(event.document_key, "document_key"),
                b',"full_document":',
                dumps(event.full_document, "full_document"),
                b',"update_description":',
                dumps(event.update_description, "update_description"),
                b',"resume_token":',
                dumps(event.resume_token, "resume_token"),
                b"}\n",
            )
        )
        return line, len(line)

    def serialize(self, rows: Sequence[bytes]) -> bytes:
        return b"".join(rows)
