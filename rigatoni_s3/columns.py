"""Typed columns: chosen document fields as real columns, after the envelope.

Every format stores a document as one JSON value, so a query engine parses JSON per row
to filter on a field. A typed column declares one field and its type once::

    S3Config(..., columns={"age": Column("full_document.age", "int64")})

and every file then carries that field as a column of its own (Parquet with statistics,
Avro with a logical type), in the same place and with the same type in every file.
MongoDB documents have no schema, so the declaration is what keeps files alike: a value
that does not fit is written as null and counted, never guessed at.

===============  ============================================================
type             values taken (anything else is a mismatch)
===============  ============================================================
``string``       strings (also BSON symbols and code), and ObjectIds as hex
``int64``        integers, and doubles and decimals with a whole value, in range
``float64``      doubles (NaN and infinities included), integers and decimals,
                 as the nearest double
``bool``         booleans only
``timestamp``    BSON dates (datetimes), in UTC with microseconds
``date``         BSON dates, as their UTC calendar day; Python dates
``decimal(p,s)`` decimals, integers and doubles (as the shortest decimal that
                 reads back as that double) that fit ``p`` digits with ``s``
                 after the point without rounding
``json``         any value, as its JSON (the one mapping every format uses)
===============  ============================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from rigatoni_s3.errors import ConfigError
from rigatoni_s3.events import EventFields

ROOTS: Mapping[str, str] = {
    "document_key": "documentKey",
    "full_document": "fullDocument",
    "full_document_before_change": "fullDocumentBeforeChange",
    "update_description": "updateDescription",
}
"""Where a path may start: the envelope's document columns, and the change-stream field
each one comes from."""

KINDS = ("string", "int64", "float64", "bool", "timestamp", "date", "decimal", "json")
"""The column types; ``decimal`` takes a precision and a scale, ``decimal(p,s)``."""

MAX_DECIMAL_PRECISION = 38
"""The widest decimal Parquet's ``decimal128``, Athena and Spark hold."""

_DECIMAL = re.compile(r"^decimal\((\d+),(\d+)\)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _normalise_type(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError("columns", f"a column type must be a string, got {value!r}")
    text = "".join(value.split()).lower()
    if text in KINDS and text != "decimal":
        return text
    match = _DECIMAL.match(text)
    if match is None:
        choices = ", ".join(kind if kind != "decimal" else "decimal(p,s)" for kind in KINDS)
        hint = "; decimal needs a precision and a scale" if text.startswith("decimal") else ""
        raise ConfigError("columns", f"type {value!r} is not one of {choices}{hint}")
    precision, scale = int(match[1]), int(match[2])
    if not 1 <= precision <= MAX_DECIMAL_PRECISION or scale > precision:
        raise ConfigError(
            "columns",
            f"type {value!r}: a decimal has 1 to {MAX_DECIMAL_PRECISION} digits of precision "
            "and a scale of at most its precision",
        )
    return f"decimal({precision},{scale})"


def _check_path(_: object, __: attrs.Attribute[str], path: str) -> None:
    if not isinstance(path, str):
        raise ConfigError("columns", f"a column path must be a string, got {path!r}")
    root, _dot, rest = path.partition(".")
    if root not in ROOTS:
        column = next((column for column, field in ROOTS.items() if field == root), None)
        hint = f" ({column!r}, the column, not the change-stream field)" if column else ""
        raise ConfigError(
            "columns",
            f"path {path!r} must start with one of {', '.join(ROOTS)}{hint}, "
            "e.g. 'full_document.address.city'",
        )
    if not rest:
        raise ConfigError(
            "columns", f"path {path!r} must name a field inside {root}, e.g. '{root}._id'"
        )
    if any(not segment for segment in rest.split(".")):
        raise ConfigError("columns", f"path {path!r} has an empty field name")
    if "\0" in rest:
        raise ConfigError("columns", f"path {path!r}: field names cannot hold a NUL character")


@attrs.frozen
class Column:
    """A typed column: the field at ``path``, written with ``type``.

    ``path`` is dotted: a document column of the envelope (``document_key``,
    ``full_document``, ``full_document_before_change``, ``update_description``), then
    field names; a whole number indexes an array, as in MongoDB (``full_document.tags.0``).
    ``type`` is ``string``, ``int64``, ``float64``, ``bool``, ``timestamp``, ``date``,
    ``decimal(p,s)`` or ``json``. Both are checked here: a bad one is a ConfigError.
    """

    path: str = attrs.field(validator=_check_path)
    type: str = attrs.field(converter=_normalise_type)
    kind: str = attrs.field(init=False, eq=False, repr=False)
    """``type`` without its decimal parameters."""
    precision: int = attrs.field(init=False, eq=False, repr=False)
    """Digits of a decimal (0 for the other types)."""
    scale: int = attrs.field(init=False, eq=False, repr=False)
    """Digits of a decimal after the point (0 for the other types)."""
    root: str = attrs.field(init=False, eq=False, repr=False)
    """The envelope column the path starts in."""
    fields: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)
    """The field names after the root."""

    def __attrs_post_init__(self) -> None:
        match = _DECIMAL.match(self.type)
        kind, precision, scale = (
            ("decimal", int(match[1]), int(match[2])) if match else (self.type, 0, 0)
        )
        root, *fields = self.path.split(".")
        for name, value in (
            ("kind", kind),
            ("precision", precision),
            ("scale", scale),
            ("root", root),
            ("fields", tuple(fields)),
        ):
            object.__setattr__(self, name, value)


HIVE_PARTITION_NAMES = ("collection", "year", "month", "day", "hour")
"""Columns a Hive-partitioned key adds to what readers see."""


def to_columns(value: Any) -> dict[str, Column]:
    """The ``columns`` option as a name → :class:`Column` dict, in the order given.

    A value may also be a mapping with ``path`` and ``type``, as a config file holds it.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError("columns", f"must map column names to Column, got {type(value).__name__}")
    columns: dict[str, Column] = {}
    for name, column in value.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                "columns",
                f"name {name!r} must be 1-128 letters, digits or '_', not starting with a "
                "digit, so that every format and engine can hold it",
            )
        try:
            if isinstance(column, Mapping) and set(column) == {"path", "type"}:
                column = Column(column["path"], column["type"])
        except ConfigError as exc:
            raise ConfigError(f"columns[{name!r}]", exc.rule) from None
        if not isinstance(column, Column):
            raise ConfigError(
                f"columns[{name!r}]", f"must be a Column(path, type), got {type(column).__name__}"
            )
        columns[name] = column
    return columns


def check_names(columns: Mapping[str, Column], hive: bool) -> None:
    """Names must differ from the envelope's, from each other and, with Hive keys, from the
    partition columns; ignoring case, since Athena, Hive and DuckDB do."""
    taken = {name.lower(): "an envelope column" for name in EventFields._fields}
    if hive:
        taken.update((name, "a Hive partition column") for name in HIVE_PARTITION_NAMES)
    for name in columns:
        what = taken.get(name.lower())
        if what is not None:
            raise ConfigError(f"columns[{name!r}]", f"the name is already {what}")
        taken[name.lower()] = "another typed column (names ignore case)"
