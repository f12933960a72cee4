"""The one JSON value mapping (rigatoni_s3.formats._json): BSON values, exactness,
errors that name the field, and dumps_many's batching."""

from __future__ import annotations

import base64
import math
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rigatoni_s3.errors import SerializationError
from rigatoni_s3.formats import _json as json_module
from tests.helpers import (
    DOCUMENTS_ST,
    VALUES,
    Binary,
    Decimal128,
    Int64,
    ObjectId,
    Timestamp,
    line_of,
)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.none() | st.just("null") | st.just(math.nan) | DOCUMENTS_ST | st.lists(VALUES),
        max_size=12,
    ),
    chunk=st.integers(1, 4),
)
def test_dumps_many_equals_dumps_value_by_value(values: list[Any], chunk: int) -> None:
    """Cut into orjson calls of ``chunk`` values, with nulls, "null" text and NaN on either
    side of every cut, each value's JSON is what :func:`dumps` writes for it alone."""
    field = "full_document"

    def alone(value: Any) -> bytes | None:
        try:
            return json_module.dumps(value, field)
        except SerializationError:
            return None

    expected = [alone(value) for value in values]
    with patch.object(json_module, "DUMPS_CHUNK", chunk):
        try:
            pieces = json_module.dumps_many(
                values,
                [1 if value is None else 0 for value in values],
                lambda i: json_module.dumps(values[i], field),
            )
        except TypeError:  # the caller then goes value by value: fine if orjson cannot
            with pytest.raises(TypeError):
                orjson.dumps(values, default=json_module._orjson_default)
            return
    assert pieces == expected


def test_bson_values_become_plain_json() -> None:
    """ObjectId→hex, datetime→ISO, Decimal128→string, Int64→number, Binary→base64, UUID→string."""
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    doc = line_of(
        oid=ObjectId("65a4f0c2e13b4a0001a1b2c3"),
        when=datetime(2025, 1, 15, 10, 0, 0, 123000),
        price=Decimal128("19.99"),
        big=Int64(2**62),
        blob=Binary(b"\x00\x01\xff"),
        raw=b"hi",
        id=u,
        ts=Timestamp(1736935200, 4),
        dec=Decimal("1.10"),
    )["full_document"]
    assert doc == {
        "oid": "65a4f0c2e13b4a0001a1b2c3",
        "when": "2025-01-15T10:00:00.123000Z",
        "price": "19.99",
        "big": 2**62,
        "blob": base64.b64encode(b"\x00\x01\xff").decode(),
        "raw": "aGk=",
        "id": str(u),
        "ts": {"t": 1736935200, "i": 4},
        "dec": "1.10",
    }


def test_integers_beyond_64_bits_keep_their_value() -> None:
    """Python ints of any size are written exactly."""
    assert line_of(n=2**80 + 1, m=-(2**70))["full_document"] == {"n": 2**80 + 1, "m": -(2**70)}


def test_non_finite_floats_use_extended_json() -> None:
    """NaN and infinities are not silently turned into null."""
    doc = line_of(a=math.nan, b=math.inf, c=-math.inf, d=None, e=1.5)["full_document"]
    assert doc == {
        "a": {"$numberDouble": "NaN"},
        "b": {"$numberDouble": "Infinity"},
        "c": {"$numberDouble": "-Infinity"},
        "d": None,
        "e": 1.5,
    }


def test_unmappable_value_names_its_path() -> None:
    """An object with no JSON mapping raises SerializationError naming where it is."""
    with pytest.raises(SerializationError, match=r"full_document\.nested\.bad"):
        line_of(nested={"bad": object()})


def test_lone_surrogate_is_rejected() -> None:
    """A string that is not valid UTF-8 cannot be written and says so."""
    with pytest.raises(SerializationError, match="UTF-8"):
        line_of(name="\ud800")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_plain_documents_round_trip_exactly(document: dict[str, Any]) -> None:
    """Any JSON-able document (unicode, control characters, big ints) comes back equal."""
    assert line_of(doc=document)["full_document"] == {"doc": document}


def test_real_bson_types_map_as_documented() -> None:
    """The actual pymongo bson classes map exactly like the documented table."""
    import re as regex

    from bson import Binary as RealBinary
    from bson import Code, DBRef, MaxKey, MinKey, Regex
    from bson import Decimal128 as RealDecimal128
    from bson import Int64 as RealInt64
    from bson import ObjectId as RealObjectId
    from bson import Timestamp as RealTimestamp

    oid = RealObjectId("65a4f0c2e13b4a0001a1b2c3")
    doc = line_of(
        oid=oid,
        price=RealDecimal128("1234.5678901234567890"),
        big=RealInt64(2**63 - 1),
        blob=RealBinary(b"\x01\x02", 0),
        ts=RealTimestamp(1736935200, 9),
        pattern=Regex("^a.*z$", regex.IGNORECASE | regex.MULTILINE),
        low=MinKey(),
        high=MaxKey(),
        ref=DBRef("users", oid, "shop"),
        code=Code("function() { return 1; }"),
    )["full_document"]
    assert doc == {
        "oid": "65a4f0c2e13b4a0001a1b2c3",
        "price": "1234.5678901234567890",
        "big": 2**63 - 1,
        "blob": "AQI=",
        "ts": {"t": 1736935200, "i": 9},
        "pattern": {"$regularExpression": {"pattern": "^a.*z$", "options": "im"}},
        "low": {"$minKey": 1},
        "high": {"$maxKey": 1},
        "ref": {"$ref": "users", "$id": "65a4f0c2e13b4a0001a1b2c3", "$db": "shop"},
        "code": "function() { return 1; }",
    }
