"""The event pool as a MongoDB driver receives it: one BSON document per change event.

Built from :func:`generator.build_pool`'s events, value by value, with the types a
real change stream carries:

- 24-hex id strings become ``ObjectId``;
- ``Decimal`` prices become ``Decimal128``;
- integers beyond 32 bits become ``Int64`` (``bson.encode`` would pick int64 anyway);
- ``uuid.UUID`` becomes ``Binary.from_uuid`` (subtype 4, the standard representation);
- ``clusterTime`` becomes ``Timestamp(t, i)``. Half the dict pool's events hold a
  datetime there; their increment is read back from the resume token, which
  carries it;
- datetimes, floats, strings, bytes, lists and nested documents stay as they are.

Each event is encoded once with ``bson.encode``. Replaying works as for the dict
pool: the first cycle yields the pool's own ``bytes``; later cycles yield a copy
whose Timestamp has moved forward by the pool's span. The offset of the
Timestamp's 8 bytes is found once per event when the pool is built, so the patch
is a copy plus one 8-byte write, paid alike by every writer under test.

pymongo's ``bson`` is a dev dependency only; this module imports it, the dict
generator does not.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import attrs
import bson
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp
from generator import EventPool, RawEvent

_HEX = frozenset("0123456789abcdef")
_INT32_MAX = 2**31 - 1
_INT32_MIN = -(2**31)
_TIMESTAMP_ELEMENT = b"\x11clusterTime\x00"
"""Type byte 0x11 (Timestamp) and the key: what precedes the 8 bytes to patch."""
_PACK_TIMESTAMP = struct.Struct("<II").pack_into
"""A BSON Timestamp: increment (uint32, little-endian), then seconds (uint32)."""


@attrs.frozen
class BsonPool:
    """The dict pool's events as BSON, in the same order, and how to replay them."""

    documents: list[bytes]
    timestamp_offsets: list[int]
    """Per event, where the 8 bytes of ``clusterTime``'s Timestamp start."""
    timestamps: list[tuple[int, int]]
    """Per event, the Timestamp as (increment, seconds)."""
    span_seconds: int
    """How much ``clusterTime`` advances per replay cycle."""

    @property
    def average_bytes(self) -> float:
        return sum(map(len, self.documents)) / len(self.documents)

    def nbytes(self, count: int) -> int:
        """BSON bytes of the first ``count`` replayed events (patching keeps sizes equal)."""
        cycles, rest = divmod(count, len(self.documents))
        sizes = [len(d) for d in self.documents]
        return cycles * sum(sizes) + sum(sizes[:rest])

    def batches(self, count: int, batch_size: int) -> Iterator[list[bytes]]:
        """``count`` events in lists of ``batch_size``, cycling through the pool."""
        size = len(self.documents)
        documents, offsets, stamps = self.documents, self.timestamp_offsets, self.timestamps
        produced = 0
        while produced < count:
            n = min(batch_size, count - produced)
            batch: list[bytes] = []
            while len(batch) < n:
                cycle, index = divmod(produced + len(batch), size)
                take = min(n - len(batch), size - index)
                if cycle == 0:
                    batch.extend(documents[index : index + take])
                else:
                    shift = cycle * self.span_seconds
                    for i in range(index, index + take):
                        copy = bytearray(documents[i])
                        increment, seconds = stamps[i]
                        _PACK_TIMESTAMP(copy, offsets[i], increment, seconds + shift)
                        batch.append(bytes(copy))
            produced += n
            yield batch


def build_bson_pool(pool: EventPool) -> BsonPool:
    """The events of ``pool`` as BSON documents with real BSON types."""
    documents: list[bytes] = []
    offsets: list[int] = []
    stamps: list[tuple[int, int]] = []
    for event in pool.events:
        converted = _bson_values(event)
        stamp = _timestamp_of(event)
        converted["clusterTime"] = stamp
        data = bson.encode(converted)
        at = data.find(_TIMESTAMP_ELEMENT)
        if at < 0 or data.find(_TIMESTAMP_ELEMENT, at + 1) >= 0:
            raise ValueError("expected exactly one top-level clusterTime Timestamp")
        offset = at + len(_TIMESTAMP_ELEMENT)
        if struct.unpack_from("<II", data, offset) != (stamp.inc, stamp.time):
            raise ValueError("the Timestamp is not where it was expected")
        documents.append(data)
        offsets.append(offset)
        stamps.append((stamp.inc, stamp.time))
    return BsonPool(documents, offsets, stamps, pool.span_seconds)


def _bson_values(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _bson_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_bson_values(item) for item in value]
    if isinstance(value, str):
        return ObjectId(value) if len(value) == 24 and _HEX.issuperset(value) else value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return Int64(value) if not _INT32_MIN <= value <= _INT32_MAX else value
    if isinstance(value, Decimal):
        return Decimal128(value)
    if isinstance(value, uuid.UUID):
        return Binary.from_uuid(value)
    return value


def _timestamp_of(event: RawEvent) -> Timestamp:
    when = event["clusterTime"]
    if isinstance(when, datetime):
        # The resume token is "82" + seconds (8 hex) + increment (8 hex) + ...
        token: str = event["_id"]["_data"]
        seconds = int(when.replace(tzinfo=UTC).timestamp())
        return Timestamp(seconds, int(token[10:18], 16))
    ts = when["$timestamp"]
    return Timestamp(int(ts["t"]), int(ts["i"]))
