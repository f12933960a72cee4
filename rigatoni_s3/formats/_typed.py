"""Values of typed columns: one conversion for every format and both kinds of input.

:func:`converter_for` turns a document value into the value of its column's type, or
:data:`MISMATCH` when it has none; every format then writes that typed value its own
way (:func:`json_of` for JSON Lines, :func:`text_of` for CSV, the value itself for
Parquet and Avro). Decoded events and raw BSON reach the same Python values (raw BSON
through pymongo's decoding of the one element), so both give the same bytes.

The typed value of each type:

=================  =====================================================
column type        typed value
=================  =====================================================
``string``         ``str``
``int64``          ``int`` in the signed 64-bit range
``float64``        ``float`` (NaN and infinities kept)
``bool``           ``bool``
``timestamp``      aware UTC ``datetime``
``date``           ``date``
``decimal(p,s)``   ``Decimal`` with exactly ``s`` digits after the point
``json``           the value's JSON (:mod:`._json`), as UTF-8 bytes
=================  =====================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any, Final, NamedTuple

import orjson

from rigatoni_s3.columns import Column
from rigatoni_s3.events import naive_as_utc
from rigatoni_s3.formats._envelope import EnvelopeRow
from rigatoni_s3.formats._json import decimal128_text, dumps, iso_utc, kept


class _Mismatch:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISMATCH"


MISMATCH: Final = _Mismatch()
"""What a converter returns for a value its type cannot hold exactly."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Converter = Callable[[Any], Any]
"""A present, non-null value to its typed value, or :data:`MISMATCH`."""


class TypedRow(NamedTuple):
    """A row of the tabular formats when typed columns are configured."""

    envelope: EnvelopeRow
    values: tuple[Any, ...]
    """The typed values, in the columns' order; None for null."""


def _bson_name(value: Any) -> str | None:
    """The class name of a pymongo ``bson`` value (pymongo is optional, so not imported)."""
    kind = type(value)
    return kind.__name__ if kind.__module__.startswith("bson") else None


def _decimal_of(value: Any) -> Decimal | None:
    """A ``Decimal`` or a BSON Decimal128 as a ``Decimal``; None for anything else."""
    if isinstance(value, Decimal):
        return value
    if _bson_name(value) == "Decimal128":
        text = decimal128_text()(value)
        if text.endswith("N"):  # a NaN, quiet or signalling: as pymongo builds it
            number: Decimal = value.to_decimal()
            return number
        return Decimal(text)  # the same sign, digits and exponent, built faster
    return None


def to_string(value: Any) -> Any:
    """Strings (BSON symbols and code are ``str`` subclasses), and ObjectIds as hex."""
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if _bson_name(value) == "ObjectId":
        return str(value)
    return MISMATCH


def to_int64(value: Any) -> Any:
    """Integers, and doubles and decimals holding a whole number, within 64 bits."""
    kind = type(value)
    if kind is bool:
        return MISMATCH
    if kind is int or isinstance(value, int):
        return int(value) if INT64_MIN <= value <= INT64_MAX else MISMATCH
    if isinstance(value, float):
        return int(value) if value.is_integer() and -(2.0**63) <= value < 2.0**63 else MISMATCH
    number = _decimal_of(value)
    if number is None or not number.is_finite() or number.adjusted() > 18:
        return MISMATCH
    if number != number.to_integral_value():
        return MISMATCH
    whole = int(number)
    return whole if INT64_MIN <= whole <= INT64_MAX else MISMATCH


def to_float64(value: Any) -> Any:
    """Doubles as they are; integers and decimals as the nearest double, if in range."""
    if type(value) is float:
        return value
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int) and type(value) is not bool:
        try:
            return float(value)
        except OverflowError:
            return MISMATCH
    number = _decimal_of(value)
    if number is None or number.is_snan():
        return MISMATCH
    nearest = float(number)
    if math.isinf(nearest) and number.is_finite():
        return MISMATCH
    return nearest


def to_bool(value: Any) -> Any:
    """Booleans only: neither 0/1 nor strings."""
    return value if type(value) is bool else MISMATCH


def to_timestamp(value: Any) -> Any:
    """Datetimes (BSON dates) as aware UTC; naive ones are UTC, as pymongo decodes them."""
    if not isinstance(value, datetime):
        return MISMATCH  # pymongo's DatetimeMS too: a date beyond datetime's years 1..9999
    if value.tzinfo is None:
        return naive_as_utc(value)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # an offset that moves it past year 1 or 9999
        return MISMATCH


def to_date(value: Any) -> Any:
    """A datetime's UTC calendar day, or a date as it is."""
    if isinstance(value, datetime):
        instant = to_timestamp(value)
        return MISMATCH if instant is MISMATCH else instant.date()
    if isinstance(value, date):
        return date(value.year, value.month, value.day)
    return MISMATCH


def decimal_converter(precision: int, scale: int) -> Converter:
    """Numbers that fit ``decimal(precision, scale)`` without rounding.

    A double counts as the shortest decimal that reads back as it (``0.1``, not
    ``0.1000000000000000055511151231257827``): what its JSON shows.
    """
    exponent = Decimal(1).scaleb(-scale)
    context = Context(prec=precision, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation])

    def to_decimal(value: Any) -> Any:
        if type(value) is bool:
            return MISMATCH
        if isinstance(value, int):
            number: Decimal | None = Decimal(value)
        elif isinstance(value, float):
            number = Decimal(repr(value)) if math.isfinite(value) else None
        else:
            number = _decimal_of(value)
        if number is None or not number.is_finite():
            return MISMATCH
        try:
            fitted = number.quantize(exponent, context=context)
        except InvalidOperation:  # more digits than the precision holds
            return MISMATCH
        if fitted != number:  # it would have been rounded
            return MISMATCH
        return fitted if fitted else fitted.copy_abs()  # -0.00 is 0.00 in every format

    return to_decimal


def json_converter(path: str) -> Converter:
    """Any value as its JSON; ``path`` names it if it has none (its event is then
    rejected anyway, for its document)."""

    def to_json(value: Any) -> bytes:
        return kept(dumps(value, path))

    return to_json


_SIMPLE: dict[str, Converter] = {
    "string": to_string,
    "int64": to_int64,
    "float64": to_float64,
    "bool": to_bool,
    "timestamp": to_timestamp,
    "date": to_date,
}


def converter_for(column: Column) -> Converter:
    """The conversion of ``column``'s type."""
    if column.kind == "decimal":
        return decimal_converter(column.precision, column.scale)
    if column.kind == "json":
        return json_converter(column.path)
    return _SIMPLE[column.kind]


# -- how each format writes a typed value ------------------------------------------------

_UTC_Z = orjson.OPT_UTC_Z


def json_of(value: Any, kind: str) -> bytes:
    """A typed value as JSON Lines writes it: its JSON in the one value mapping."""
    if value is None:
        return b"null"
    if kind == "json":
        json: bytes = value
        return json
    if kind == "decimal":
        return b'"%s"' % format(value, "f").encode()
    if kind == "float64":
        return dumps(value, "")  # NaN and infinities as {"$numberDouble": ...}
    return orjson.dumps(value, option=_UTC_Z)


_NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def text_of(value: Any, kind: str) -> str | None:
    """A typed value as CSV writes it; None is an empty field.

    Numbers and times read as their JSON Lines text (timestamps as ISO-8601 UTC with
    ``Z``); non-finite doubles as ``NaN``, ``Infinity``, ``-Infinity``, which readers
    of numeric CSV columns parse; booleans as ``true``/``false``.
    """
    if value is None:
        return None
    if kind == "string":
        text: str = value
        return text
    if kind == "json":
        return bytes(value).decode()
    if kind == "int64":
        return str(value)
    if kind == "float64":
        return orjson.dumps(value).decode() if math.isfinite(value) else _NONFINITE[str(value)]
    if kind == "bool":
        return "true" if value else "false"
    if kind == "timestamp":
        return iso_utc(value)
    if kind == "decimal":
        return format(value, "f")
    iso: str = value.isoformat()  # date
    return iso


def typed_rows(
    rows: Sequence[EnvelopeRow], sizes: Sequence[int], values: Sequence[tuple[Any, ...]]
) -> tuple[list[TypedRow], list[int]]:
    """Envelope rows joined with their typed values, for the formats that keep the values
    as they are (Parquet, Avro); the sizes count the values as :func:`values_size` does."""
    joined = [TypedRow(row, typed) for row, typed in zip(rows, values, strict=True)]
    return joined, [size + values_size(typed) for size, typed in zip(sizes, values, strict=True)]


def values_size(values: Sequence[Any]) -> int:
    """Bytes the typed values of a row count for the limits: text as its length, the
    other values 8."""
    size = 0
    for value in values:
        if value is None:
            continue
        if type(value) is str or type(value) is bytes:
            size += len(value)
        else:
            size += 8
    return size
