"""The compiled helpers beside the walk agree with their Python references.

Typed columns of raw events are looked up by ``_bsonjson_c.PathFinder`` when the
extension is built; the Python ``PathTree`` is the reference: it finds the same
elements and fails where it fails. ``decimal128_str`` is ``str`` of a Decimal128. These
tests need the compiled module: a missing build fails them, it never skips them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rigatoni_s3._bsonpath import MalformedBsonError, PathTree, Span
from tests.test_bsonpath import PATHS, VALID, document, element, events_and_paths, int32, string

try:
    from rigatoni_s3._bsonjson_c import PathFinder, decimal128_str
except ImportError as exc:  # pragma: no cover - the build is a prerequisite
    raise ImportError(
        f"the compiled module is not built ({exc}); build it with a C compiler"
    ) from None


def python_spans(raw: bytes, paths: Sequence[tuple[str, ...]]) -> list[Span | None] | None:
    """The reference: the spans, or None where the bytes are malformed."""
    try:
        return PathTree(paths).spans(raw)
    except MalformedBsonError:
        return None


def native_spans(raw: Any, paths: Sequence[tuple[str, ...]]) -> list[Span | None] | None:
    (found,) = PathFinder(paths).spans_batch([raw])
    return found


def agree(raw: bytes, paths: Sequence[tuple[str, ...]]) -> None:
    assert native_spans(raw, paths) == python_spans(raw, paths), raw


@given(case=events_and_paths())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_document_and_paths_give_the_same_spans(
    case: tuple[dict[str, Any], list[tuple[str, ...]]],
) -> None:
    event, paths = case
    agree(bson.encode(event), paths)


def test_equal_keys_arrays_and_shared_prefixes() -> None:
    """The last of equal keys wins, arrays go by position (not by their keys), a whole
    number is a key in a document, and paths share the documents on their way."""
    inner = document(element(0x10, b"v", int32(2)), element(0x10, b"v", int32(3)))
    array = document(element(0x02, b"x", string("first")), element(0x02, b"7", string("second")))
    raw = document(
        element(0x03, b"d", document(element(0x10, b"v", int32(1)))),
        element(0x03, b"d", inner),
        element(0x04, b"tags", array),
        element(
            0x03, b"n", document(element(0x10, b"0", int32(4)), element(0x10, b"01", int32(5)))
        ),
    )
    paths = [
        ("d", "v"),
        ("tags", "0"),
        ("tags", "1"),
        ("tags", "7"),
        ("tags", "x"),
        ("n", "0"),
        ("n", "01"),
        ("d",),
        ("d", "v"),
    ]
    spans = python_spans(raw, paths)
    assert spans is not None
    assert [span is not None for span in spans] == [1, 1, 1, 0, 0, 1, 1, 1, 1]
    agree(raw, paths)


def test_every_truncation_and_corrupted_byte_agrees() -> None:
    for end in range(len(VALID)):
        agree(VALID[:end], PATHS)
    for at in range(len(VALID)):
        for byte in (0x00, 0x01, 0x04, 0x7F, 0x80, 0xFF):
            corrupted = bytearray(VALID)
            corrupted[at] = byte
            agree(bytes(corrupted), PATHS)
            corrupted[0:4] = struct.pack("<i", len(corrupted))
            agree(bytes(corrupted), PATHS)


@given(data=st.binary(max_size=300), length_ok=st.booleans())
@settings(max_examples=800, deadline=None)
def test_arbitrary_bytes_agree(data: bytes, length_ok: bool) -> None:
    if length_ok and len(data) >= 4:
        data = struct.pack("<i", len(data)) + data[4:]
    agree(data, PATHS)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, bson.raw_bson.RawBSONDocument])
def test_every_raw_wrapper_is_read(wrap: Any) -> None:
    expected = python_spans(VALID, PATHS)
    assert expected is not None
    assert all(span is not None for span in expected)
    assert native_spans(wrap(VALID), PATHS) == expected


def test_a_batch_keeps_each_documents_result_apart() -> None:
    broken = VALID[:-3]
    batch: list[Any] = [VALID, broken, "not bson", VALID]
    found = PathFinder(PATHS).spans_batch(batch)
    assert found[0] == found[3] == python_spans(VALID, PATHS)
    assert found[1] is None
    assert found[2] is None


def test_deeper_paths_than_documents_nest_are_refused_not_recursed() -> None:
    """A document nested past the walk's depth limit is left to the Python walk."""
    depth = 140
    value: dict[str, Any] = {"v": 1}
    for _ in range(depth):
        value = {"a": value}
    raw = bson.encode(value)
    path = ("a",) * depth + ("v",)
    assert native_spans(raw, [path]) is None
    shallow = ("a",) * 50
    assert native_spans(raw, [shallow]) == python_spans(raw, [shallow])


@given(
    bid=st.binary(min_size=16, max_size=16),
    high=st.sampled_from([None, 0x6000, 0x7800, 0x7C00, 0x7E00, 0xE000, 0x3040, 0x3000]),
)
@settings(max_examples=1000, deadline=None)
def test_decimal128_text_is_pymongos(bid: bytes, high: int | None) -> None:
    """Any 16 bytes, steered to the special and non-canonical forms too: the text is
    ``str(Decimal128)``, which the JSON of decoded events holds."""
    if high is not None:
        bid = bid[:15] + bytes([high >> 8 | bid[15] & 0x01])
    value = bson.decimal128.Decimal128.from_bid(bid)
    assert decimal128_str(value) == str(value)


@pytest.mark.parametrize(
    "text", ["0", "-0", "1234.56", "-1.2345E-40", "0.000001", "1E-7", "1E+6144", "NaN", "-Infinity"]
)
def test_decimal128_text_of_typical_values(text: str) -> None:
    value = bson.decimal128.Decimal128(text)
    assert decimal128_str(value) == str(value)
