"""The reassembly stage: split change events put back together before they are encoded.

MongoDB's ``$changeStreamSplitLargeEvent`` stage (6.0.9+, 7.0) splits an event larger
than 16 MiB into fragments: consecutive documents, each with its own ``_id`` (a resume
token) and ``splitEvent: {fragment: i, of: n}``, the event's other top-level fields
spread among them, each in exactly one fragment. :func:`reassemble` takes the events
of one ``write_batch`` call in order and returns the events to encode: every other
event untouched, and each complete run of fragments as one event: ``_id`` (the last
fragment's) first, then the other fields in fragment order, ``splitEvent`` gone.

Raw fragments (BSON bytes, ``RawBSONDocument``) are joined as BSON: a new document
whose elements are the fragments' top-level elements, copied byte for byte, so the
raw path reads the merged event like any other and writes what the merged decoded
event would give.

Fragments still waiting for the rest of their event come back as
:class:`HeldFragments`, which the destination keeps for the next call; the function
itself keeps nothing, so a call that is cancelled before it accepts simply drops its
result. A batch without fragments costs one pass over the events and comes back as
the same list. A call of raw events is spared even that pass when nothing is held:
the encoder's walk looks for the same bytes without the GIL
(:meth:`~rigatoni_s3._encoder.Encoder.prepare_whole`), and only a call where it finds
them comes here.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from operator import attrgetter
from typing import Any

import attrs

from rigatoni_s3._bsonjson import SPLIT_MARK
from rigatoni_s3._encoder import Event, is_raw_bson, raw_document
from rigatoni_s3._gil import GilBreaker, with_gil_breaks
from rigatoni_s3.errors import EventError, IncompleteEventError, InvalidEventError, _short
from rigatoni_s3.events import ChangeEvent

SPLIT_KEY = "splitEvent"
"""The top-level field that marks a fragment."""

# Raw events without the bytes of SPLIT_MARK are no fragments (a search, in C, as fast as
# any Python-level look at one event, and it finds the field wherever it is).
_search_needle = re.compile(re.escape(SPLIT_MARK)).search  # works on any byte buffer
_raw_of = attrgetter("raw")
_INT32 = struct.Struct("<i")
_INT64 = struct.Struct("<q")
_MAX_DOCUMENT = 2**31 - 1
"""The largest size a BSON document can state in its int32 header."""
_FIXED = {1: 8, 6: 0, 7: 12, 8: 1, 9: 8, 10: 0, 16: 4, 17: 8, 18: 8, 19: 16, 127: 0, 255: 0}
"""Value sizes of the element types that have one."""
_SIZED = {
    2: (4, 1),
    13: (4, 1),
    14: (4, 1),
    3: (0, 5),
    4: (0, 5),
    15: (0, 14),
    5: (5, 0),
    12: (16, 1),
}
"""Types whose value starts with an int32 n: (value size - n, smallest valid n)."""


@attrs.frozen
class RawFields:
    """Where a raw fragment's top-level elements are, type byte to value end."""

    data: bytes = attrs.field(repr=False)
    token: tuple[int, int, int] | None
    """The last ``_id`` element: its start, the start of its value, its end."""
    fields: tuple[tuple[bytes, int, int], ...]
    """(key, start, end) of every other element but ``splitEvent``, in order."""


@attrs.frozen
class Fragment:
    """One fragment of a split event."""

    event: Event = attrs.field(repr=False)
    """As given; a raw buffer that may change after the call (bytearray,
    memoryview) is held as a bytes copy."""
    number: int
    of: int
    resume_token: Any
    """The fragment's ``_id``: as given, or a ``RawBSONDocument`` for raw fragments."""
    raw: RawFields | None
    """For raw fragments, where their elements are; None for decoded ones."""


@attrs.frozen
class HeldFragments:
    """The first fragments of a split event whose last ones have not come yet."""

    fragments: tuple[Fragment, ...] = ()

    def __len__(self) -> int:
        return len(self.fragments)

    def incomplete_error(self) -> IncompleteEventError:
        """What ``close()`` raises when these fragments never get their event."""
        held = [(fragment, None) for fragment in self.fragments]
        return IncompleteEventError(
            f"a split event never got its last fragments: {_named(held, where=False)}; "
            "none of them was written, and durable_resume_token stays before them, so a "
            "change stream resumed from it delivers the whole event again",
            fragments=[fragment.event for fragment in self.fragments],
            resume_tokens=[fragment.resume_token for fragment in self.fragments],
        )


NOTHING_HELD = HeldFragments()


@attrs.frozen
class Reassembled:
    """A ``write_batch`` call after reassembly: what to encode, and what to hold."""

    events: Sequence[Event]
    """The events to encode: the call's own list when it held no fragment."""
    positions: Sequence[int] | None
    """The caller's index of each of :attr:`events` (an event made of fragments is at
    its first fragment in this call); None when they are the call's events unchanged."""
    rejected: list[EventError]
    """Broken runs of fragments and unreadable fragments."""
    held: HeldFragments
    """Fragments to hold for the next call, once this one accepts."""

    def rejections(self, encoded: Sequence[EventError]) -> list[EventError]:
        """Every rejection of the call in input order: ours, and the encoder's moved to
        the caller's indices. Errors about fragments of earlier calls alone come first."""
        if self.positions is None and not self.rejected:
            return list(encoded)
        positions = self.positions
        moved = [
            error
            if positions is None or error.index is None
            else _at(error, positions[error.index])
            for error in encoded
        ]
        return sorted([*self.rejected, *moved], key=_input_order)


def reassemble(events: Sequence[Event], held: HeldFragments = NOTHING_HELD) -> Reassembled:
    """Put the split events of one call together, ``held`` being the fragments that
    earlier calls left waiting.

    Broken runs become an :class:`InvalidEventError` each, naming the fragments with
    their resume tokens: a fragment missing or out of order, a fragment 1 or another
    event arriving while fragments wait, a different ``of``. Its ``index`` is the
    position of the first named fragment in this call, None when all of them came in
    earlier calls. Every complete event around them is kept.
    """
    if not held.fragments and not (events and _may_hold_fragments(events)):
        return Reassembled(events, None, [], held)
    out: list[Event] = []
    positions: list[int] = []
    rejected: list[EventError] = []
    pending: list[tuple[Fragment, int | None]] = [(fragment, None) for fragment in held.fragments]
    for index, event in enumerate(with_gil_breaks(events)):
        fragment = _read(event)
        if fragment is None:  # a whole event
            if pending:
                due = len(pending) + 1
                what = (
                    f"then event #{index}, which is not one of them, where fragment {due} was due"
                )
                rejected.append(_broken(pending, what))
                pending = []
            out.append(event)
            positions.append(index)
            continue
        if isinstance(fragment, str):
            rejected.append(InvalidEventError(fragment, index=index))
            continue
        if pending:
            due, of = len(pending) + 1, pending[0][0].of
            if fragment.number != due or fragment.of != of:
                if fragment.number == 1:  # a new event begins: the waiting one is lost
                    what = (
                        f"then fragment 1 of another event (#{index}) where fragment {due} was due"
                    )
                    rejected.append(_broken(pending, what))
                    pending = []
                else:
                    what = f"where fragment {due} of {of} was due"
                    rejected.append(_broken([*pending, (fragment, index)], what))
                    pending = []
                    continue
        elif fragment.number != 1:
            rejected.append(_broken([(fragment, index)], "without the fragments before it"))
            continue
        pending.append((fragment, index))
        if len(pending) == fragment.of:
            at = next(i for _, i in pending if i is not None)
            merged = _merged([f for f, _ in pending])
            if isinstance(merged, str):
                what = f"split event {_named(pending)} makes no event: {merged}"
                rejected.append(InvalidEventError(what, index=at))
            else:
                out.append(merged)
                positions.append(at)
            pending = []
    rest = HeldFragments(tuple(fragment for fragment, _ in pending)) if pending else NOTHING_HELD
    return Reassembled(out, positions, rejected, rest)


# -- finding fragments ----------------------------------------------------------------


def _may_hold_fragments(events: Sequence[Event]) -> bool:
    """Whether some event may be a fragment; false ones are certain.

    A call of one kind of event is asked in C-level loops: a dict lookup per decoded
    event, a byte search per raw one (a nested field of that name also matches;
    :func:`_read` tells them apart). A mixed call is asked event by event.
    """
    first: Any = events[0]
    kind = type(first)
    try:
        if kind is dict:
            return _asked(_dicts_may_hold, events, _STEP)
        if kind is bytes:
            return _asked(_bytes_may_hold, events, _raw_step(len(first)))
        if kind is memoryview:
            return _asked(_views_may_hold, events, _raw_step(first.nbytes))
        if kind is not bytearray and is_raw_bson(first):  # RawBSONDocument
            return _asked(_documents_may_hold, events, _raw_step(len(first.raw)))
    except (TypeError, AttributeError, ValueError, BufferError):  # not all of one kind
        pass
    return _asked(_each_may_hold, events, _SLOW_STEP)


_STEP = 1024
"""Events asked between two looks at the clock, at most."""
_SLOW_STEP = 16
"""Events of a mixed call asked between two looks at the clock."""
_SEARCH_BYTES = 1 << 17
"""Bytes of raw events searched between two looks at the clock: about 0.1 ms."""


def _raw_step(size: int) -> int:
    """Raw events of about ``size`` bytes to search between two looks at the clock."""
    return max(1, min(_STEP, _SEARCH_BYTES // max(size, 1)))


def _asked(ask: Callable[[Sequence[Any]], bool], events: Sequence[Event], step: int) -> bool:
    """``ask`` over ``events``, ``step`` at a time, handing the GIL over between steps:
    a C-level loop keeps the GIL from the event loop's thread until it ends."""
    if len(events) <= step:
        return ask(events)
    breaker = GilBreaker()
    for start in range(0, len(events), step):
        if ask(events[start : start + step]):
            return True
        breaker()
    return False


def _dicts_may_hold(events: Sequence[Any]) -> bool:
    return any(map(dict.__contains__, events, repeat(SPLIT_KEY)))


def _bytes_may_hold(events: Sequence[Any]) -> bool:
    return any(map(bytes.count, events, repeat(SPLIT_MARK)))


def _views_may_hold(events: Sequence[Any]) -> bool:
    return any(map(_search_needle, events))


def _documents_may_hold(events: Sequence[Any]) -> bool:
    return any(map(bytes.count, map(_raw_of, events), repeat(SPLIT_MARK)))


def _each_may_hold(events: Sequence[Any]) -> bool:
    return any(map(_may_be_fragment, events))


def _may_be_fragment(event: Event) -> bool:
    if type(event) is ChangeEvent:
        return False
    if not is_raw_bson(event):
        return isinstance(event, Mapping) and SPLIT_KEY in event
    buffer: Any = getattr(event, "raw", event)
    try:
        return _search_needle(buffer) is not None
    except (TypeError, ValueError, BufferError):  # no byte buffer: the encoder rejects it
        return False


def _read(event: Event) -> Fragment | str | None:
    """The fragment ``event`` is, None for a whole event, or why it is an unreadable one."""
    if is_raw_bson(event):
        return _read_raw(event)
    if not isinstance(event, Mapping) or SPLIT_KEY not in event:
        return None
    split = event[SPLIT_KEY]
    numbers = None
    if isinstance(split, Mapping):
        numbers = _numbers(split.get("fragment"), split.get("of"))
    if numbers is None:
        return f"'{SPLIT_KEY}' must be {{fragment: i, of: n}} with 1 <= i <= n"
    return Fragment(event, *numbers, event.get("_id"), None)


def _numbers(number: object, of: object) -> tuple[int, int] | None:
    if type(number) is bool or type(of) is bool:
        return None
    if isinstance(number, int) and isinstance(of, int) and 1 <= number <= of:
        return int(number), int(of)
    return None


def _read_raw(event: Event) -> Fragment | str | None:
    """A raw event's fragment, if ``splitEvent`` is one of its top-level elements.

    Malformed BSON is left to the encoder, which rejects it, unless the walk already
    found a top-level ``splitEvent``: then it is a fragment that cannot be read.
    """
    buffer: Any = getattr(event, "raw", event)
    try:
        if _search_needle(buffer) is None:
            return None
        data = buffer if type(buffer) is bytes else bytes(memoryview(buffer).cast("B"))
    except (TypeError, ValueError, BufferError):
        return None
    elements, complete = _top_level(data, 0, len(data))
    split = [element for element in elements if element[0] == b"splitEvent"]
    if not split:
        return None
    if not complete:
        return "malformed BSON in a fragment of a split event"
    _, kind, _, value, end = split[-1]  # a decoder keeps the last of a repeated key
    numbers = None
    if kind == 3:
        inner, whole = _top_level(data, value, end)
        if whole:
            found = {key: _integer(data, k, v) for key, k, _, v, _ in inner}
            numbers = _numbers(found.get(b"fragment"), found.get(b"of"))
    if numbers is None:
        return f"'{SPLIT_KEY}' must be {{fragment: i, of: n}} with 1 <= i <= n"
    tokens = [element for element in elements if element[0] == b"_id"]
    token = tokens[-1][2:] if tokens else None
    fields = tuple(
        (key, start, end)
        for key, _, start, _, end in elements
        if key not in (b"_id", b"splitEvent")
    )
    if type(event) is bytearray or type(event) is memoryview:  # may change after the call
        event = data
    resume_token = None if token is None else _raw_token(data, token)
    return Fragment(event, *numbers, resume_token, RawFields(data, token, fields))


def _top_level(
    data: bytes, start: int, stop: int
) -> tuple[list[tuple[bytes, int, int, int, int]], bool]:
    """(key, type, start, value start, end) of the elements of the document at
    ``data[start:stop]``, each checked to lie inside it; and whether the whole
    document was read. Values are not looked into."""
    elements: list[tuple[bytes, int, int, int, int]] = []
    if stop - start < 5 or _INT32.unpack_from(data, start)[0] != stop - start or data[stop - 1]:
        return elements, False
    end = stop - 1
    at = start + 4
    while at < end:
        kind = data[at]
        key_end = data.find(b"\0", at + 1, end)
        if key_end < 0:
            return elements, False
        value = key_end + 1
        size = _FIXED.get(kind)
        if size is None:
            if kind == 11:  # a regular expression: two C strings
                pattern_end = data.find(b"\0", value, end)
                options_end = data.find(b"\0", pattern_end + 1, end) if pattern_end >= 0 else -1
                if options_end < 0:
                    return elements, False
                size = options_end + 1 - value
            else:
                sized = _SIZED.get(kind)
                if sized is None or value + 4 > end:
                    return elements, False
                extra, smallest = sized
                n = _INT32.unpack_from(data, value)[0]
                if n < smallest:
                    return elements, False
                size = extra + n
        if value + size > end:
            return elements, False
        elements.append((data[at + 1 : key_end], kind, at, value, value + size))
        at = value + size
    return elements, True


def _integer(data: bytes, kind: int, at: int) -> int | None:
    """An int32 or int64 value, as pymongo would decode it to an int."""
    if kind == 16:
        return int(_INT32.unpack_from(data, at)[0])
    if kind == 18:
        return int(_INT64.unpack_from(data, at)[0])
    return None


def _raw_token(data: bytes, token: tuple[int, int, int]) -> Any:
    """A raw fragment's ``_id``: a ``RawBSONDocument`` like ``durable_resume_token``,
    or its bytes when it is no document that pymongo can read."""
    _, value, end = token
    if data[token[0]] == 3:
        try:
            return raw_document(data, (value, end))
        except Exception:  # pymongo checks the framing; the encoder says more
            pass
    return data[value:end]


# -- merging ---------------------------------------------------------------------------


def _merged(fragments: Sequence[Fragment]) -> Event | str:
    """One event from the fragments of a complete run, or why they do not make one."""
    raw = [fragment.raw for fragment in fragments if fragment.raw is not None]
    if not raw:
        return _merged_decoded(fragments)
    if len(raw) == len(fragments):
        return _merged_raw(raw, [fragment.number for fragment in fragments])
    return "its fragments came partly as raw BSON and partly decoded"


def _merged_decoded(fragments: Sequence[Fragment]) -> dict[str, Any] | str:
    merged: dict[str, Any] = {}
    last = fragments[-1].event
    assert isinstance(last, Mapping)
    if "_id" in last:
        merged["_id"] = last["_id"]
    came_in: dict[str, int] = {}
    for fragment in fragments:
        assert isinstance(fragment.event, Mapping)
        for key, value in fragment.event.items():
            if key == "_id" or key == SPLIT_KEY:
                continue
            if key in came_in:
                return f"field {key!r} is in fragments {came_in[key]} and {fragment.number}"
            came_in[key] = fragment.number
            merged[key] = value
    return merged


def _merged_raw(fragments: Sequence[RawFields], numbers: Sequence[int]) -> bytes | str:
    last = fragments[-1]
    parts: list[memoryview] = []
    if last.token is not None:
        start, _, end = last.token
        parts.append(memoryview(last.data)[start:end])
    came_in: dict[bytes, int] = {}
    for fragment, number in zip(fragments, numbers, strict=True):
        view = memoryview(fragment.data)
        for key, start, end in fragment.fields:
            if key in came_in:
                name = key.decode("utf-8", "backslashreplace")
                return f"field {name!r} is in fragments {came_in[key]} and {number}"
            came_in[key] = number
            parts.append(view[start:end])
    size = 5 + sum(len(part) for part in parts)
    if size > _MAX_DOCUMENT:
        return f"the event would take {size} bytes, more than a BSON document can hold"
    return b"".join([_INT32.pack(size), *parts, b"\0"])


# -- errors ----------------------------------------------------------------------------


def _named(fragments: Sequence[tuple[Fragment, int | None]], *, where: bool = True) -> str:
    """The fragments as an error names them: number, where it came, resume token."""
    return ", ".join(
        f"fragment {fragment.number} of {fragment.of} ("
        + (("from an earlier call, " if index is None else f"#{index}, ") if where else "")
        + f"resume token {_token_text(fragment.resume_token)})"
        for fragment, index in fragments
    )


def _token_text(token: Any) -> str:
    if is_raw_bson(token) and not isinstance(token, bytes | bytearray | memoryview):
        try:
            token = dict(token)  # a RawBSONDocument reads as the dict it holds
        except Exception:  # a token pymongo cannot read is shown as bytes
            token = _raw_of(token)
    return _short(token)


def _broken(fragments: Sequence[tuple[Fragment, int | None]], what: str) -> InvalidEventError:
    """The error of a run of fragments that cannot become an event."""
    here = next((index for _, index in fragments if index is not None), None)
    return InvalidEventError(f"split event broken: {_named(fragments)}, {what}", index=here)


def _at(error: EventError, index: int) -> EventError:
    """``error`` about the event at ``index`` of the call instead."""
    if error.index == index:
        return error
    moved = type(error)(
        error.reason,
        collection=error.collection,
        document_key=error.document_key,
        field=error.field,
        index=index,
    )
    moved.__cause__ = error.__cause__
    return moved


def _input_order(error: EventError) -> int:
    return -1 if error.index is None else error.index
