"""Values at paths of a raw BSON event: the decoded event, walked the same way, is the oracle."""

from __future__ import annotations

import contextlib
import math
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

import bson
import pytest
from bson import Decimal128, Int64, ObjectId
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.dbref import DBRef
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rigatoni_s3._bsonpath import MalformedBsonError, PathTree, array_index, decode
from rigatoni_s3.errors import SerializationError
from rigatoni_s3.formats._json import dumps
from tests.test_bsonjson import documents

DECODE: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=False, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)


def walk(value: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` of a decoded event, in MongoDB's dot notation: a document by
    key, an array by a whole number written plainly, a DBRef as its document."""
    for name in path:
        if isinstance(value, DBRef):
            value = value.as_doc()
        if isinstance(value, dict):
            value = value.get(name)
        elif isinstance(value, list) and re.fullmatch("0|[1-9][0-9]*", name):
            value = value[int(name)] if int(name) < len(value) else None
        else:
            return None
    return value


def same(found: Any, expected: Any) -> bool:
    """Equal as our JSON writes them (an int64 read directly is an int, pymongo's an Int64)."""
    try:
        expected_json = dumps(expected, "x")
    except SerializationError:
        expected_json = None
    try:
        found_json = dumps(found, "x")
    except SerializationError:
        found_json = None
    return found_json == expected_json and (found_json is not None or repr(found) == repr(expected))


def values_at(raw: bytes, paths: Sequence[tuple[str, ...]]) -> list[Any]:
    spans = PathTree(paths).spans(raw)
    return [None if span is None else decode(raw, span) for span in spans]


def element(kind: int, key: bytes, payload: bytes) -> bytes:
    return bytes((kind,)) + key + b"\0" + payload


def document(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return struct.pack("<i", len(body) + 5) + body + b"\0"


def int32(value: int) -> bytes:
    return struct.pack("<i", value)


def string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<i", len(data)) + data


# -- paths ----------------------------------------------------------------------------------


@st.composite
def events_and_paths(draw: Callable[..., Any]) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    """An event whose fullDocument is any document, and paths into it: most lead to a
    value (also inside arrays), some lead nowhere."""
    full = draw(documents)
    event = {"operationType": "insert", "fullDocument": full, "documentKey": {"_id": 1}}
    paths = []
    for _ in range(draw(st.integers(1, 4))):
        path = ["fullDocument"]
        node: Any = full
        for _ in range(draw(st.integers(1, 4))):
            if isinstance(node, dict) and node and draw(st.booleans()):
                name = draw(st.sampled_from(sorted(node)))
                node = node[name]
            elif isinstance(node, list) and node and draw(st.booleans()):
                index = draw(st.integers(0, len(node) - 1))
                name, node = str(index), node[index]
            else:
                name = draw(st.sampled_from(["0", "01", "-1", "x", "$ref", "$id", ""]))
                node = None
            path.append(name)
        paths.append(tuple(path))
    return event, paths


@given(case=events_and_paths())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_value_at_a_path_is_the_decoded_ones(
    case: tuple[dict[str, Any], list[tuple[str, ...]]],
) -> None:
    """Any document, any path: the element found and decoded is what the decoded event holds there."""
    event, paths = case
    raw = bson.encode(event)
    decoded = bson.decode(raw, DECODE)
    for path, found in zip(paths, values_at(raw, paths), strict=True):
        expected = walk(decoded, path)
        assert same(found, expected), (path, found, expected)


@pytest.mark.parametrize(
    "value",
    [
        "ünïcode",
        -(2**31),
        Int64(2**62),
        -0.0,
        math.inf,
        True,
        False,
        None,
        ObjectId("65a4f0c2e1b2c3d4e5f60718"),
        Decimal128("1.10"),
        bson.datetime_ms.DatetimeMS(2**62),
        {"a": [1, {"b": 2}]},
    ],
)
def test_every_scalar_reads_as_pymongo_decodes_it(value: Any) -> None:
    """Scalars read without bson.decode equal what it gives; the others come from it."""
    raw = bson.encode({"fullDocument": {"v": value}})
    [found] = values_at(raw, [("fullDocument", "v")])
    expected = bson.decode(raw, DECODE)["fullDocument"]["v"]
    assert same(found, expected)
    assert type(found) is type(expected) or type(expected) is Int64


def test_the_last_of_equal_keys_wins_at_every_level() -> None:
    """As a dict keeps the last of repeated keys, so does the walk, at the top and below."""
    inner_first = document(element(0x10, b"v", int32(1)))
    inner_last = document(element(0x10, b"v", int32(2)), element(0x10, b"v", int32(3)))
    raw = document(
        element(0x03, b"fullDocument", inner_first),
        element(0x03, b"fullDocument", inner_last),
    )
    assert values_at(raw, [("fullDocument", "v")]) == [3]
    assert bson.decode(raw)["fullDocument"]["v"] == 3


def test_arrays_are_indexed_by_position_not_by_their_keys() -> None:
    """Array keys are not read (pymongo ignores them); only canonical whole numbers index."""
    array = document(element(0x02, b"x", string("first")), element(0x02, b"7", string("second")))
    raw = document(element(0x03, b"fullDocument", document(element(0x04, b"tags", array))))
    paths = [("fullDocument", "tags", name) for name in ("0", "1", "2", "01", "-1", "x", "7")]
    assert values_at(raw, paths) == ["first", "second", None, None, None, None, None]
    assert bson.decode(raw)["fullDocument"]["tags"] == ["first", "second"]


def test_whole_numbers_are_keys_in_documents() -> None:
    """In a document, '0' and '01' are plain field names."""
    raw = bson.encode({"fullDocument": {"0": "zero", "01": "one"}})
    assert values_at(raw, [("fullDocument", "0"), ("fullDocument", "01")]) == ["zero", "one"]


def test_paths_through_scalars_and_code_find_nothing() -> None:
    """A path into a string, a number or code with scope leads nowhere, as in the decoded event."""
    raw = bson.encode(
        {"fullDocument": {"s": "text", "n": 1, "c": bson.Code("f()", {"x": 1}), "z": None}}
    )
    paths = [("fullDocument", name, "x") for name in ("s", "n", "c", "z", "missing")]
    assert values_at(raw, paths) == [None] * 5
    assert values_at(raw, [("documentKey", "_id")]) == [None]


def test_paths_sharing_documents_each_get_their_value() -> None:
    """Several paths through the same documents, or to the same element, all find theirs."""
    raw = bson.encode(
        {
            "documentKey": {"_id": 7},
            "fullDocument": {"a": {"b": 1, "c": [10, {"d": 20}]}, "e": 2},
        }
    )
    paths = [
        ("fullDocument", "a", "b"),
        ("fullDocument", "a", "c", "1", "d"),
        ("fullDocument", "e"),
        ("documentKey", "_id"),
        ("fullDocument", "a", "b"),
        ("fullDocument", "a", "c"),
    ]
    assert values_at(raw, paths) == [1, 20, 2, 7, 1, [10, {"d": 20}]]


@pytest.mark.parametrize(
    ("name", "index"),
    [("0", 0), ("12", 12), ("01", None), ("-1", None), ("1.0", None), ("²", None)],
)
def test_array_index_is_mongodbs_dot_notation(name: str, index: int | None) -> None:
    """Only a whole number without a sign or leading zeros indexes an array."""
    assert array_index(name) == index


# -- malformed bytes ------------------------------------------------------------------------

VALID = bson.encode(
    {
        "_id": {"_data": "82"},
        "fullDocument": {
            "name": "n",
            "tags": ["a", {"b": 1.5}],
            "re": bson.Regex("^a", "i"),
            "code": bson.Code("f()", {"x": 1}),
            "bin": bson.Binary(b"\x00\x01", 0),
            "price": Decimal128("1.5"),
            "when": bson.datetime_ms.DatetimeMS(0),
            "ptr": bson.DBRef("c", 1),
        },
        "documentKey": {"_id": 1},
    }
)
PATHS = [
    ("fullDocument", "tags", "1", "b"),
    ("fullDocument", "price"),
    ("fullDocument", "name"),
    ("fullDocument", "code"),
    ("fullDocument", "re"),
    ("documentKey", "_id"),
    ("fullDocument", "ptr", "$id"),
]


def read_or_reject(raw: bytes) -> None:
    """Walk and decode; only MalformedBsonError may come out of bad bytes."""
    with contextlib.suppress(MalformedBsonError):
        values_at(raw, PATHS)


def test_every_truncation_and_corrupted_byte_is_caught() -> None:
    """Cut short or with any byte changed, the event raises MalformedBsonError or reads;
    nothing reads past the end or fails in another way."""
    for end in range(len(VALID)):
        read_or_reject(VALID[:end])
    for at in range(len(VALID)):
        for byte in (0x00, 0x01, 0x7F, 0x80, 0xFF):
            corrupted = bytearray(VALID)
            corrupted[at] = byte
            read_or_reject(bytes(corrupted))


@given(data=st.binary(max_size=200), length_ok=st.booleans())
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_never_crash_the_walk(data: bytes, length_ok: bool) -> None:
    """Random bytes, with or without a matching length prefix, raise only MalformedBsonError."""
    if length_ok and len(data) >= 4:
        data = struct.pack("<i", len(data)) + data[4:]
    read_or_reject(data)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        document(element(0x02, b"fullDocument", struct.pack("<i", -5))),
        document(element(0x03, b"fullDocument", struct.pack("<i", 4) + b"\0")),
        document(element(0x42, b"fullDocument", b"")),
        document(element(0x0B, b"fullDocument", b"no terminators")),
        document(element(0x0C, b"fullDocument", struct.pack("<i", 0) + b"x" * 12)),
        document(
            element(
                0x03, b"fullDocument", document(element(0x02, b"name", b"\x02\x00\x00\x00\xff\x00"))
            )
        ),
        b"\x05\x00\x00\x00\x01",
        b"\x0a\x00\x00\x00\x10fullDocument",
    ],
)
def test_bad_lengths_types_and_text_are_malformed(raw: bytes) -> None:
    """Lengths out of bounds, unknown types, unterminated names and bad UTF-8 are named errors."""
    with pytest.raises(MalformedBsonError):
        values_at(raw, [("fullDocument", "name")])
