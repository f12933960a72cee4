"""Typed columns: the Column value, the columns option, and the conversion of each type."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from bson import Code, Decimal128, Int64, ObjectId, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from hypothesis import given, settings
from hypothesis import strategies as st

from rigatoni_s3 import Column, KeyGenerationStrategy, S3Config
from rigatoni_s3.errors import ConfigError, SerializationError
from rigatoni_s3.formats._typed import MISMATCH, _decimal_of, converter_for


def build(**overrides: Any) -> S3Config:
    options: dict[str, Any] = {"bucket": "my-data-lake", "region": "us-east-1", **overrides}
    return S3Config(**options)


# -- Column and the option ----------------------------------------------------------------


def test_column_parses_its_path_and_type() -> None:
    """A Column knows its root, its fields, and a decimal's precision and scale."""
    column = Column("full_document.address.city", "string")
    assert (column.root, column.fields, column.kind) == (
        "full_document",
        ("address", "city"),
        "string",
    )
    price = Column("full_document.price", " Decimal( 12, 2 )")
    assert (price.type, price.kind, price.precision, price.scale) == (
        "decimal(12,2)",
        "decimal",
        12,
        2,
    )
    assert price == Column("full_document.price", "decimal(12,2)")


@pytest.mark.parametrize(
    ("path", "type_", "rule"),
    [
        ("fullDocument.age", "int64", "'full_document', the column, not the change-stream field"),
        ("document.age", "int64", "must start with one of document_key, full_document"),
        ("full_document", "int64", "must name a field inside full_document"),
        ("full_document.a..b", "int64", "empty field name"),
        ("full_document.a.", "int64", "empty field name"),
        ("full_document.a\0b", "int64", "NUL"),
        ("full_document.age", "int", "is not one of string, int64, float64, bool, timestamp"),
        ("full_document.age", "decimal", "decimal needs a precision and a scale"),
        ("full_document.age", "decimal(0,0)", "1 to 38 digits"),
        ("full_document.age", "decimal(39,2)", "1 to 38 digits"),
        ("full_document.age", "decimal(4,5)", "scale of at most its precision"),
        ("full_document.age", 64, "must be a string"),
        (["full_document", "age"], "int64", "must be a string"),
    ],
)
def test_bad_paths_and_types_are_config_errors(path: Any, type_: Any, rule: str) -> None:
    """A path outside the document columns or an unknown type fails when the Column is made."""
    with pytest.raises(ConfigError, match=rule.replace("(", r"\(").replace(")", r"\)")):
        Column(path, type_)


def test_every_root_and_type_is_accepted() -> None:
    """Each document column may start a path, and each type is known."""
    roots = ["document_key", "full_document", "full_document_before_change", "update_description"]
    types = ["string", "int64", "float64", "bool", "timestamp", "date", "decimal(38,0)", "json"]
    columns = {
        f"c{i}_{j}": Column(f"{root}.x", type_)
        for i, root in enumerate(roots)
        for j, type_ in enumerate(types)
    }
    assert build(columns=columns).columns == columns


def test_columns_keep_their_order_and_come_from_the_builder_too() -> None:
    """Keywords and the builder's .column() give the same config, columns in the order given."""
    built = (
        S3Config.builder()
        .bucket("my-data-lake")
        .region("us-east-1")
        .column("status", "full_document.status", "string")
        .column("age", "full_document.age", "int64")
        .column("total", "full_document.total", "decimal(12,2)")
        .build()
    )
    expected = {
        "status": Column("full_document.status", "string"),
        "age": Column("full_document.age", "int64"),
        "total": Column("full_document.total", "decimal(12,2)"),
    }
    assert built == build(columns=expected)
    assert list(built.columns) == ["status", "age", "total"]
    assert build().columns == {}


def test_a_config_file_may_give_columns_as_mappings() -> None:
    """{"path": ..., "type": ...} becomes a Column, as a file-based config holds it."""
    config = build(columns={"age": {"path": "full_document.age", "type": "int64"}})
    assert config.columns == {"age": Column("full_document.age", "int64")}


def test_builder_checks_columns_at_build() -> None:
    """A bad path added with .column() fails at build(), naming the column."""
    builder = S3Config.builder().bucket("my-data-lake").region("us-east-1")
    builder.column("age", "fullDocument.age", "int64")
    with pytest.raises(ConfigError, match=r"columns\['age'\]: path 'fullDocument.age'"):
        builder.build()


def test_builder_refuses_a_name_given_twice() -> None:
    """Adding the same name twice is an error, not a silent replacement."""
    builder = S3Config.builder().bucket("my-data-lake").region("us-east-1")
    builder.column("age", "full_document.age", "int64").column("age", "full_document.a", "json")
    with pytest.raises(ConfigError, match=r"columns\['age'\]: is added twice"):
        builder.build()


@pytest.mark.parametrize(
    ("columns", "rule"),
    [
        ({"operation": Column("full_document.op", "string")}, "already an envelope column"),
        ({"Full_Document": Column("full_document.x", "json")}, "already an envelope column"),
        (
            {"age": Column("full_document.age", "int64"), "AGE": Column("full_document.a", "json")},
            "another typed column",
        ),
        ({"first name": Column("full_document.name", "string")}, "letters, digits or '_'"),
        ({"1st": Column("full_document.name", "string")}, "not starting with a digit"),
        ({"": Column("full_document.name", "string")}, "letters, digits or '_'"),
        ({"x" * 129: Column("full_document.name", "string")}, "1-128"),
        ({3: Column("full_document.name", "string")}, "letters, digits or '_'"),
        ({"age": ("full_document.age", "int64")}, "must be a Column"),
        ({"age": {"path": "full_document.age"}}, "must be a Column"),
        ([Column("full_document.age", "int64")], "must map column names to Column"),
    ],
)
def test_bad_names_and_values_are_config_errors(columns: Any, rule: str) -> None:
    """Names every format and engine can hold, unique ignoring case, apart from the envelope."""
    with pytest.raises(ConfigError, match=rule.replace("[", r"\[")):
        build(columns=columns)


def test_partition_names_are_taken_only_under_hive_keys() -> None:
    """'year' is free with date-hour keys but taken by the Hive layout's partition column."""
    columns = {"year": Column("full_document.year", "int64")}
    assert build(columns=columns).columns == columns
    with pytest.raises(ConfigError, match="already a Hive partition column"):
        build(columns=columns, key_strategy=KeyGenerationStrategy.HIVE_PARTITIONED)


# -- the conversion of each type ------------------------------------------------------------

OID = ObjectId("65a4f0c2e1b2c3d4e5f60718")
NAIVE = datetime(2025, 1, 15, 23, 30, 0, 250000)
AWARE = datetime(2025, 1, 16, 1, 30, 0, 250000, tzinfo=timezone(timedelta(hours=2)))
UTC_TIME = datetime(2025, 1, 15, 23, 30, 0, 250000, tzinfo=UTC)

CASES: dict[str, list[tuple[Any, Any]]] = {
    "string": [
        ("plain", "plain"),
        ("", ""),
        (Code("x = 1"), "x = 1"),
        (OID, "65a4f0c2e1b2c3d4e5f60718"),
        (1, MISMATCH),
        (True, MISMATCH),
        (NAIVE, MISMATCH),
        (Decimal128("1.5"), MISMATCH),
        ({"a": 1}, MISMATCH),
        (["a"], MISMATCH),
    ],
    "int64": [
        (42, 42),
        (Int64(2**63 - 1), 2**63 - 1),
        (-(2**63), -(2**63)),
        (2**63, MISMATCH),
        (-(2**63) - 1, MISMATCH),
        (31.0, 31),
        (-0.0, 0),
        (2.0**62, 2**62),
        (2.0**63, MISMATCH),
        (31.5, MISMATCH),
        (math.nan, MISMATCH),
        (math.inf, MISMATCH),
        (Decimal128("12.000"), 12),
        (Decimal("-7"), -7),
        (Decimal128("1E+2"), 100),
        (Decimal128("12.5"), MISMATCH),
        (Decimal128("9223372036854775808"), MISMATCH),
        (Decimal128("1E+6000"), MISMATCH),
        (Decimal128("NaN"), MISMATCH),
        (True, MISMATCH),
        ("42", MISMATCH),
        (NAIVE, MISMATCH),
    ],
    "float64": [
        (1.5, 1.5),
        (7, 7.0),
        (Int64(2**53 + 1), float(2**53 + 1)),
        (2**1100, MISMATCH),
        (Decimal128("0.1"), 0.1),
        (Decimal128("-Infinity"), -math.inf),
        (Decimal128("1E+400"), MISMATCH),
        (Decimal("sNaN"), MISMATCH),
        (math.inf, math.inf),
        (False, MISMATCH),
        ("1.5", MISMATCH),
    ],
    "bool": [
        (True, True),
        (False, False),
        (1, MISMATCH),
        (0, MISMATCH),
        ("true", MISMATCH),
    ],
    "timestamp": [
        (NAIVE, UTC_TIME),
        (AWARE, UTC_TIME),
        (UTC_TIME, UTC_TIME),
        (DatetimeMS(2**62), MISMATCH),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), MISMATCH),
        (date(2025, 1, 15), MISMATCH),
        (Timestamp(1736935200, 1), MISMATCH),
        ("2025-01-15T00:00:00Z", MISMATCH),
        (1736935200000, MISMATCH),
    ],
    "date": [
        (NAIVE, date(2025, 1, 15)),
        (AWARE, date(2025, 1, 15)),
        (datetime(2025, 1, 15, 0, 30, tzinfo=timezone(timedelta(hours=1))), date(2025, 1, 14)),
        (date(2025, 1, 15), date(2025, 1, 15)),
        (DatetimeMS(-(2**62)), MISMATCH),
        ("2025-01-15", MISMATCH),
    ],
    "decimal(5,2)": [
        (Decimal128("123.45"), Decimal("123.45")),
        (Decimal128("12.5"), Decimal("12.50")),
        (Decimal128("1.2E+2"), Decimal("120.00")),
        (Decimal128("123.450000"), Decimal("123.45")),
        (Decimal128("-0.00"), Decimal("0.00")),
        (7, Decimal("7.00")),
        (0.1, Decimal("0.10")),
        (123.45, Decimal("123.45")),
        (Decimal128("123.456"), MISMATCH),
        (Decimal128("1234.5"), MISMATCH),
        (1000, MISMATCH),
        (0.125, MISMATCH),
        (Decimal128("1E-6176"), MISMATCH),
        (Decimal128("1E+6000"), MISMATCH),
        (Decimal128("Infinity"), MISMATCH),
        (math.nan, MISMATCH),
        (True, MISMATCH),
        ("1.50", MISMATCH),
    ],
    "json": [
        ({"a": [1, OID]}, b'{"a":[1,"65a4f0c2e1b2c3d4e5f60718"]}'),
        ("text", b'"text"'),
        (math.nan, b'{"$numberDouble":"NaN"}'),
        (Decimal128("1.10"), b'"1.10"'),
        (NAIVE, b'"2025-01-15T23:30:00.250000Z"'),
        (DBRef("users", 1, "shop"), b'{"$ref":"users","$id":1,"$db":"shop"}'),
    ],
}


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [(type_, value, expected) for type_, cases in CASES.items() for value, expected in cases],
    ids=[f"{type_}-{i}" for type_, cases in CASES.items() for i in range(len(cases))],
)
def test_each_type_takes_what_it_can_hold_exactly(type_: str, value: Any, expected: Any) -> None:
    """A value becomes its column's type exactly, or is a mismatch; never rounded or guessed."""
    got = converter_for(Column("full_document.v", type_))(value)
    if expected is MISMATCH:
        assert got is MISMATCH
        return
    assert got == expected
    assert type(got) is type(expected)
    if isinstance(expected, datetime):
        assert got.utcoffset() == timedelta(0)
    if isinstance(expected, Decimal):
        assert str(got) == str(expected)  # the scale too, not just the value


def test_a_json_value_without_a_mapping_names_its_path() -> None:
    """The json type raises for an unmappable value, naming the column's path (its
    document column rejects the event anyway)."""
    convert = converter_for(Column("full_document.v", "json"))
    with pytest.raises(SerializationError, match=r"full_document\.v"):
        convert(object())


@given(
    bid=st.binary(min_size=16, max_size=16),
    high=st.sampled_from([None, 0x6000, 0x7800, 0x7C00, 0x7E00, 0xE000, 0x3040, 0x3000]),
)
@settings(max_examples=500, deadline=None)
def test_a_decimal128_converts_as_its_decimal_does(bid: bytes, high: int | None) -> None:
    """Any Decimal128, steered to the special and non-canonical forms too, is read with the
    sign, digits and exponent of pymongo's to_decimal(), so every type converts it alike."""
    if high is not None:
        bid = bid[:15] + bytes([high >> 8 | bid[15] & 0x01])
    value = Decimal128.from_bid(bid)
    expected = value.to_decimal()
    read = _decimal_of(value)
    assert read is not None
    assert read.as_tuple() == expected.as_tuple()
    for kind in ("int64", "float64", "decimal(12,2)", "decimal(38,10)", "string"):
        convert = converter_for(Column("full_document.x", kind))
        ours, theirs = convert(value), convert(expected)
        assert ours == theirs or (ours != ours and theirs != theirs), (kind, ours, theirs)
