"""BSON and Python values as plain JSON: the one value mapping every format shares.

=====================  ==========================================================
value                  written as
=====================  ==========================================================
ObjectId               its 24-character hex string
datetime               ISO-8601; naive values are UTC, UTC is written ``Z``
Decimal128, Decimal    the decimal string (exact)
Int64, int             a JSON number, exact at any size
float NaN / ±inf       ``{"$numberDouble": "NaN" | "Infinity" | "-Infinity"}``
Binary, bytes          standard base64 string
UUID                   canonical 8-4-4-4-12 string
Timestamp              ``{"t": seconds, "i": increment}``
Regex                  ``{"$regularExpression": {"pattern": p, "options": o}}``
MinKey / MaxKey        ``{"$minKey": 1}`` / ``{"$maxKey": 1}``
DBRef                  ``{"$ref": ..., "$id": ..., "$db": ...}``
=====================  ==========================================================

Non-finite doubles follow MongoDB's relaxed Extended JSON, because plain JSON has
no such numbers and writing ``null`` would lose them. Anything else raises
:class:`~rigatoni_s3.errors.SerializationError` naming the path to the value.

The fast path is orjson; values it cannot hold exactly (integers beyond 64 bits,
non-finite floats) go through :func:`to_plain` and the standard library.

JSON Lines nests this JSON in each line; CSV, Parquet and Avro store the same JSON
as text in their document columns (:mod:`rigatoni_s3.formats._envelope`).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import compress, count, repeat
from operator import ne
from types import MappingProxyType
from typing import Any

import orjson

from rigatoni_s3._gil import GilBreaker
from rigatoni_s3.errors import SerializationError

_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def dumps(value: Any, field: str) -> bytes:
    """``value`` as compact JSON bytes; ``field`` names it in errors."""
    if value is None:
        return b"null"
    try:
        out = orjson.dumps(value, default=_orjson_default, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _dumps_exact(value, field)
    if b"null" in out and _has_nonfinite(value):  # orjson writes NaN/inf as null
        return _dumps_exact(value, field)
    return out


_SEPARATOR = orjson.Fragment(b"\n")
"""Put between values, it appears in the output as ``,\n,``: a raw line break, which
orjson never writes anywhere else, so the values' JSON can be cut apart again."""


DUMPS_CHUNK = 128
"""Values per orjson call: enough to amortise the call, few enough that one call
holds the GIL for well under a millisecond, so the event loop's thread gets it back."""


def dumps_many(
    values: Sequence[Any], nulls: Sequence[int], exact: Callable[[int], bytes]
) -> list[bytes]:
    """Each of ``values`` as compact JSON, from a few orjson calls instead of one each.

    orjson writes NaN and infinities as ``null``, so nulls are counted: ``nulls[i]`` is
    how many value ``i`` holds by design (None fields the caller put there). A value
    with more is searched, and written by ``exact(i)`` if it holds a non-finite float.

    Raises ``TypeError`` (orjson's error) or ``ValueError`` when some value needs the
    exact, value-by-value path; the caller then takes it.
    """
    pieces: list[bytes] = []
    breaker = GilBreaker()
    for start in range(0, len(values), DUMPS_CHUNK):
        chunk = values[start : start + DUMPS_CHUNK]
        items = [_SEPARATOR] * (2 * len(chunk))
        items[::2] = chunk
        body = orjson.dumps(items, default=_orjson_default, option=_OPTIONS)
        cut = body[1:-3].split(b",\n,")  # body is b"[v1,\n,v2,\n,...,vn,\n]"
        if len(cut) != len(chunk):  # e.g. a user's orjson.Fragment
            raise ValueError("a value's JSON holds the separator")
        for i in _unexpected_nulls(cut, nulls[start : start + DUMPS_CHUNK]):
            if _has_nonfinite(chunk[i]):
                cut[i] = exact(start + i)
        pieces += cut
        breaker()
    return pieces


def _unexpected_nulls(cut: list[bytes], expected: Sequence[int]) -> list[int]:
    """Indices of the pieces whose count of ``null`` is not the expected one.

    Every piece is counted, in C-level loops: a change event's documents often hold
    nulls of their own, and a Python step per ``null`` found cost more than the count.
    """
    return list(compress(count(), map(ne, map(bytes.count, cut, repeat(b"null")), expected)))


def _dumps_exact(value: Any, field: str) -> bytes:
    plain = to_plain(value, field)
    try:
        return json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError as exc:
        raise SerializationError(
            f"string is not valid UTF-8 ({exc.reason}); fix or drop the character", field=field
        ) from exc


def _orjson_default(obj: Any) -> Any:
    converted = _convert_special(obj)
    if converted is _UNSUPPORTED:
        raise TypeError
    return converted


def to_plain(value: Any, path: str) -> Any:
    """``value`` with every BSON/Python special replaced by plain JSON types."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {
            "$numberDouble": "NaN"
            if math.isnan(value)
            else ("Infinity" if value > 0 else "-Infinity")
        }
    if isinstance(value, Mapping):
        plain: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(
                    f"document keys must be strings, got {type(key).__name__}", field=path
                )
            plain[key] = to_plain(item, f"{path}.{key}")
        return plain
    if isinstance(value, list | tuple):
        return [to_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, datetime):
        return _iso(value)
    converted = _convert_special(value)
    if converted is _UNSUPPORTED:
        raise SerializationError(
            f"{type(value).__module__}.{type(value).__qualname__} has no JSON mapping; "
            "convert it to a str, number, bool, list or dict before writing",
            field=path,
        )
    return to_plain(converted, path)


_UNSUPPORTED = object()


def _convert_special(obj: Any) -> Any:
    """One step of conversion for values orjson does not know; ``_UNSUPPORTED`` if none."""
    kind: Any = type(obj)
    convert = _converter_for(kind)
    return _UNSUPPORTED if convert is None else convert(obj)


@functools.lru_cache(maxsize=256)
def _converter_for(kind: Any) -> Callable[[Any], Any] | None:
    """How values of exactly ``kind`` convert, decided once per type rather than by a
    chain of isinstance tests per value (a memo of a pure function of the type)."""
    if issubclass(kind, bytes | bytearray | memoryview):  # bson.Binary is a bytes subclass
        return _base64
    if issubclass(kind, Decimal | uuid.UUID):
        return str
    if issubclass(kind, datetime):
        return _iso
    if issubclass(kind, date):
        return date.isoformat
    if issubclass(kind, Mapping):  # e.g. RawBSONDocument, which is not a dict
        return dict
    if not kind.__module__.startswith("bson"):
        return None
    if kind.__name__ == "Decimal128":
        return decimal128_text()
    return _BSON_CONVERTERS.get(kind.__name__)


@functools.cache
def decimal128_text() -> Callable[[Any], str]:
    """``str`` of a Decimal128: the compiled core's formatter when it is built. Imported
    on first use, since the core imports this module."""
    from rigatoni_s3._bsonjson import decimal128_str

    return decimal128_str


def _base64(value: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


def _datetime_ms(value: Any) -> Any:
    try:
        return _iso(value.as_datetime())
    except Exception:  # out of datetime's range; pymongo >= 4.x raises InvalidBSON for it
        return int(value)


_BSON_CONVERTERS: Mapping[str, Callable[[Any], Any]] = MappingProxyType(
    {
        "ObjectId": str,
        "Timestamp": lambda ts: {"t": ts.time, "i": ts.inc},
        "Regex": lambda regex: {
            "$regularExpression": {
                "pattern": str(regex.pattern),
                "options": _regex_flags(regex.flags),
            }
        },
        "MinKey": lambda _: {"$minKey": 1},
        "MaxKey": lambda _: {"$maxKey": 1},
        "DBRef": lambda ref: dict(ref.as_doc()),
        "DatetimeMS": _datetime_ms,
        "Int64": int,
    }
)
"""pymongo's bson types by class name (pymongo is optional, so not imported here)."""


def _regex_flags(flags: int | str) -> str:
    if isinstance(flags, str):
        return flags
    import re

    letters = {
        re.IGNORECASE: "i",
        re.LOCALE: "l",
        re.MULTILINE: "m",
        re.DOTALL: "s",
        re.UNICODE: "u",
        re.VERBOSE: "x",
    }
    return "".join(letter for flag, letter in letters.items() if flags & flag)


def _iso(value: datetime) -> str:
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    text = aware.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def kept(json_bytes: bytes) -> bytes:
    """A right-sized copy for rows that stay buffered: orjson's output objects keep a
    capacity of several KiB, which would make a small row cost far more memory than
    ``max_buffer_bytes`` accounts for."""
    return bytes(memoryview(json_bytes))


def _has_nonfinite(value: Any) -> bool:
    """True if a NaN or infinity hides anywhere in ``value`` (iterative; plain types first)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is int or item is None or kind is bool:
            continue
        if kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def iso_utc(value: datetime) -> str:
    """``value`` as ISO-8601 in UTC with a ``Z``, as JSON Lines writes ``cluster_time``."""
    return _iso(value if value.tzinfo is None else value.astimezone(UTC))
