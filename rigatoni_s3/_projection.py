"""The typed columns of one destination: their values, read from each accepted event.

Decoded events are looked up in their documents; raw BSON events in their bytes
(:mod:`rigatoni_s3._bsonpath`), whichever core encoded them. Either way the value goes
through the same conversion (:mod:`rigatoni_s3.formats._typed`), so the two give the
same bytes. A value that cannot take its column's type is null there and counted; the
first one of each column is logged, with the path, never the value.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from rigatoni_s3 import _bsonpath
from rigatoni_s3._bsonjson import PathFinder
from rigatoni_s3._bsonjson_py import raw_bytes
from rigatoni_s3._gil import with_gil_breaks
from rigatoni_s3.columns import ROOTS, Column
from rigatoni_s3.events import EventFields
from rigatoni_s3.formats._typed import MISMATCH, Converter, converter_for

log = logging.getLogger(__name__)

_ROOT_INDEX = {name: EventFields._fields.index(name) for name in ROOTS}
"""Where each root of a path is in :class:`EventFields`."""


class _Lookup:
    """One column: where its value is, how it converts, and whether a mismatch was logged."""

    __slots__ = ("column", "convert", "fields", "name", "root", "warned")

    def __init__(self, name: str, column: Column) -> None:
        self.name = name
        self.column = column
        self.convert: Converter = converter_for(column)
        self.root = _ROOT_INDEX[column.root]
        self.fields = column.fields
        self.warned = False


class Projection:
    """Reads the typed columns' values out of events; one per destination.

    Thread-safe: the encoding threads share it, and only the first-mismatch logging
    changes it.
    """

    def __init__(self, columns: Mapping[str, Column]) -> None:
        self._lookups = [_Lookup(name, column) for name, column in columns.items()]
        paths = [(ROOTS[column.root], *column.fields) for column in columns.values()]
        self._tree = _bsonpath.PathTree(paths)
        self._finder = None if PathFinder is None else PathFinder(paths)
        self._lock = threading.Lock()

    def values_of(self, events: Sequence[EventFields]) -> tuple[list[tuple[Any, ...]], int]:
        """The typed values of each decoded event, and how many were mismatches."""
        rows = []
        mismatches = 0
        lookups = self._lookups
        for fields in with_gil_breaks(events):
            found = []
            for lookup in lookups:
                value = fields[lookup.root]
                for name in lookup.fields:
                    if value is None:
                        break
                    value = value.get(name) if type(value) is dict else _step(value, name)
                found.append(value)
            mismatches += self._convert(found)
            rows.append(tuple(found))
        return rows, mismatches

    def values_of_raw(self, documents: Sequence[Any]) -> tuple[list[tuple[Any, ...]], int]:
        """The typed values of each raw BSON event (bytes, a buffer or a
        ``RawBSONDocument``, already read by a core), and how many were mismatches."""
        rows = []
        mismatches = 0
        tree, decode = self._tree, _bsonpath.decode
        # The compiled walk finds every event's elements at once, without the GIL;
        # where it has none (no extension, or bytes it cannot read) the Python walk
        # finds them, or says what is wrong.
        spans_of = (
            [None] * len(documents) if self._finder is None else self._finder.spans_batch(documents)
        )
        for document, spans in with_gil_breaks(zip(documents, spans_of, strict=True)):
            raw = raw_bytes(document)
            if isinstance(raw, str):
                raise _bsonpath.MalformedBsonError(raw)
            if spans is None:
                spans = tree.spans(raw)
            found = [None if span is None else decode(raw, span) for span in spans]
            mismatches += self._convert(found)
            rows.append(tuple(found))
        return rows, mismatches

    def _convert(self, found: list[Any]) -> int:
        """Converts the values found for each column in place; a value that cannot take
        its column's type becomes None. Returns how many could not."""
        mismatches = 0
        for at, (lookup, value) in enumerate(zip(self._lookups, found, strict=True)):
            if value is not None:
                typed = lookup.convert(value)
                if typed is MISMATCH:
                    mismatches += 1
                    self._mismatched(lookup, value)
                    typed = None
                found[at] = typed
        return mismatches

    def _mismatched(self, lookup: _Lookup, value: Any) -> None:
        """Log the first mismatch of a column: its name, path and type, and the type of
        the value found (never the value)."""
        if lookup.warned:
            return
        with self._lock:
            if lookup.warned:
                return
            lookup.warned = True
        column = lookup.column
        got = type(value).__name__
        log.warning(
            "typed column %r: a value of type %s at %s cannot be %s and is written as null "
            "(counted in stats().type_mismatches; logged once per column)",
            lookup.name,
            got,
            column.path,
            column.type,
            extra={
                "column": lookup.name,
                "path": column.path,
                "column_type": column.type,
                "value_type": got,
            },
        )


def _step(node: Any, name: str) -> Any:
    """The value named ``name`` below ``node``, as in the bytes: a mapping by key, a
    list by position, a DBRef as its document; None when there is none."""
    if isinstance(node, list | tuple):
        index = _bsonpath.array_index(name)
        return node[index] if index is not None and index < len(node) else None
    if isinstance(node, Mapping):
        return node.get(name)
    kind = type(node)
    if kind.__name__ == "DBRef" and kind.__module__.startswith("bson"):
        return node.as_doc().get(name)
    return None
