"""One value out of a raw BSON change event, by path, without decoding the rest.

Typed columns need a few fields of a raw event. The encoding cores turn the documents
into JSON without decoding them into Python objects, so the fields are looked up here
in the bytes: a walk over the elements of each document on the path, then a decoding of
the one element found, with pymongo's ``bson`` (or directly, for the common scalars,
to the very same Python value).

A path follows MongoDB's dot notation as the decoded event would: the last of equal
keys wins (a ``dict`` keeps the last), a whole number indexes an array by position
(array keys are not read, as pymongo ignores them), and a path through anything but a
document or an array finds nothing. Every length is checked against the bytes, so
malformed input raises :class:`MalformedBsonError` rather than reading past its end.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from rigatoni_s3._bsonjson_py import _pymongo

Span = tuple[int, int, int]
"""An element found: its type byte, and where its value starts and ends."""

_INT32 = struct.Struct("<i")
_INT64 = struct.Struct("<q")
_DOUBLE = struct.Struct("<d")

_FIXED = {1: 8, 6: 0, 7: 12, 8: 1, 9: 8, 10: 0, 16: 4, 17: 8, 18: 8, 19: 16, 127: 0, 255: 0}
"""Value sizes of the element types that have one."""

_PREFIXED = {2: (4, 5), 13: (4, 5), 14: (4, 5), 3: (0, 5), 4: (0, 5), 15: (0, 14), 5: (5, 5)}
"""Types whose value starts with an int32 length: what to add to it for the value's
size, and the smallest valid size (strings, code and symbols count their own NUL;
binaries add a subtype byte; code with scope holds a string and a document)."""

DOCUMENT, ARRAY = 3, 4

_EPOCH = datetime(1970, 1, 1)


class MalformedBsonError(ValueError):
    """The bytes are not the BSON their lengths claim."""


def document_end(raw: bytes, start: int) -> int:
    """The end of the document at ``start``, checked to lie within ``raw``."""
    if start < 0 or start + 5 > len(raw):
        raise MalformedBsonError(f"no document fits at offset {start}")
    end: int = start + _INT32.unpack_from(raw, start)[0]
    if end < start + 5 or end > len(raw) or raw[end - 1] != 0:
        raise MalformedBsonError(f"the document at offset {start} has a bad length")
    return end


def _odd_size(raw: bytes, kind: int, at: int, limit: int) -> int:
    """The size of a regular expression or a DBPointer value; raises for other types."""
    if kind == 11:  # two C strings
        pattern_end = raw.find(0, at, limit)
        options_end = raw.find(0, pattern_end + 1, limit) if pattern_end >= 0 else -1
        if options_end < 0:
            raise MalformedBsonError("a regular expression runs past its document")
        return options_end + 1 - at
    if kind == 12:  # a string, then 12 bytes
        if at + 4 > limit:
            raise MalformedBsonError("a DBPointer runs past its document")
        size: int = 4 + _INT32.unpack_from(raw, at)[0] + 12
        if size < 17:
            raise MalformedBsonError("a DBPointer has a bad length")
        return size
    raise MalformedBsonError(f"unknown element type {kind}")


def find_all(raw: bytes, start: int, keys: Collection[bytes]) -> dict[bytes, Span]:
    """The last element of each of ``keys`` in the document at ``start``, in one pass:
    a decoded document (a ``dict``) keeps the last of equal keys too."""
    return _scan(raw, start, keys, None)


def at_positions(raw: bytes, start: int, positions: Collection[int]) -> dict[int, Span]:
    """The elements at ``positions`` of the array at ``start``, in one pass; array keys
    are not read, as pymongo ignores them."""
    return _scan(raw, start, None, positions)


def _scan(
    raw: bytes, start: int, keys: Collection[bytes] | None, positions: Collection[int] | None
) -> dict[Any, Span]:
    """Elements of the document at ``start`` by name (``keys``) or by position."""
    limit = document_end(raw, start) - 1
    found: dict[Any, Span] = {}
    fixed, prefixed, unpack, find = _FIXED, _PREFIXED, _INT32.unpack_from, raw.find
    at = start + 4
    position = 0
    while at < limit:
        kind = raw[at]
        name_end = find(0, at + 1, limit)
        if name_end < 0:
            raise MalformedBsonError("an element name runs past its document")
        value = name_end + 1
        size = fixed.get(kind)
        if size is None:
            sizing = prefixed.get(kind)
            if sizing is None:
                size = _odd_size(raw, kind, value, limit)
            else:
                if value + 4 > limit:
                    raise MalformedBsonError(f"a value of type {kind} runs past its document")
                size = unpack(raw, value)[0] + sizing[0]
                if size < sizing[1]:
                    raise MalformedBsonError(f"a value of type {kind} has a bad length")
        end = value + size
        if end > limit:
            raise MalformedBsonError(f"a value of type {kind} runs past its document")
        if keys is not None:
            name = raw[at + 1 : name_end]
            if name in keys:
                found[name] = (kind, value, end)
        elif position in positions:  # type: ignore[operator]
            found[position] = (kind, value, end)
        position += 1
        at = end
    return found


def array_index(name: str) -> int | None:
    """The array position a path's field name stands for: a whole number written
    without a sign or leading zeros, as MongoDB reads it."""
    if name.isascii() and name.isdigit() and (name == "0" or name[0] != "0"):
        return int(name)
    return None


class _Node:
    """Where some paths continue below one element: by name in a document, by position
    in an array; and which paths end at the element."""

    __slots__ = ("ends", "keys", "positions")

    def __init__(self) -> None:
        self.ends: list[int] = []
        self.keys: dict[bytes, _Node] = {}
        self.positions: dict[int, _Node] = {}

    def child(self, name: str) -> _Node:
        key = name.encode("utf-8")
        node = self.keys.get(key)
        if node is None:
            node = self.keys[key] = _Node()
            index = array_index(name)
            if index is not None:
                self.positions[index] = node
        return node


class PathTree:
    """The elements several paths lead to in a raw event, each document on the way
    read once for all of them.

    A path is a tuple of field names from the event's top level, e.g.
    ``("fullDocument", "address", "city")``. A path through anything but a document
    or an array leads nowhere.
    """

    def __init__(self, paths: Sequence[tuple[str, ...]]) -> None:
        self._count = len(paths)
        self._root = _Node()
        for number, path in enumerate(paths):
            node = self._root
            for name in path:
                node = node.child(name)
            node.ends.append(number)

    def spans(self, raw: bytes) -> list[Span | None]:
        """Where each path leads in the event ``raw``; None where it leads nowhere."""
        found: list[Span | None] = [None] * self._count
        self._below(raw, (DOCUMENT, 0, len(raw)), self._root, found)
        return found

    def _below(self, raw: bytes, span: Span, node: _Node, found: list[Span | None]) -> None:
        kind, at, _end = span
        if kind == DOCUMENT:
            children: dict[Any, _Node] = node.keys
            elements = _scan(raw, at, children, None)
        elif kind == ARRAY and node.positions:
            children = node.positions
            elements = _scan(raw, at, None, children)
        else:
            return
        for name, element in elements.items():
            child = children[name]
            for number in child.ends:
                found[number] = element
            if child.keys:
                self._below(raw, element, child, found)


def decode(raw: bytes, span: Span) -> Any:
    """The Python value of an element, as pymongo decodes it in the whole event.

    Common scalars, ObjectIds and decimals are read directly (an int64 as ``int``, not
    ``Int64``, and a date as a naive UTC ``datetime``: equal values to every typed
    conversion); the rest
    goes through ``bson.decode`` with the options the pure-Python core uses.
    """
    kind, at, end = span
    if kind == 2:
        try:
            return raw[at + 4 : end - 1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedBsonError(f"a string is not UTF-8: {exc.reason}") from None
    if kind == 16:
        return _INT32.unpack_from(raw, at)[0]
    if kind == 18:
        return _INT64.unpack_from(raw, at)[0]
    if kind == 1:
        return _DOUBLE.unpack_from(raw, at)[0]
    if kind == 10 or kind == 6:  # null, undefined
        return None
    if kind == 8 and raw[at] in (0, 1):
        return raw[at] == 1
    if kind == 9:
        try:
            return _EPOCH + timedelta(milliseconds=_INT64.unpack_from(raw, at)[0])
        except OverflowError:  # beyond datetime's years: pymongo's DatetimeMS
            pass
    pymongo = _pymongo()
    if kind == 7:
        return pymongo.bson.ObjectId(raw[at:end])
    if kind == 19:
        return pymongo.bson.Decimal128.from_bid(raw[at:end])
    # The element alone, renamed "", in a document of its own.
    element = bytes((kind,)) + b"\0" + raw[at:end]
    wrapped = (len(element) + 5).to_bytes(4, "little") + element + b"\0"
    try:
        return pymongo.bson.decode(wrapped, codec_options=pymongo.options)[""]
    except Exception as exc:  # InvalidBSON and what pymongo wraps in it
        raise MalformedBsonError(f"malformed BSON: {exc}") from None
