"""Split change events put back together: the reassembly stage alone, no S3."""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import bson
import pytest
from bson import Int64, ObjectId, Timestamp
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rigatoni_s3 import ChangeEvent, Compression, KeyGenerationStrategy, SerializationFormat
from rigatoni_s3._encoder import Encoder, PreparedEvents
from rigatoni_s3._fragments import NOTHING_HELD, HeldFragments, Reassembled, reassemble
from rigatoni_s3.compression import codec_for
from rigatoni_s3.errors import IncompleteEventError, InvalidEventError
from rigatoni_s3.formats import serializer_for
from tests.helpers import ALL_FORMATS

NOW = datetime(2025, 3, 3, 12, tzinfo=UTC)
START = datetime(2025, 3, 3, 6, 0, 0, tzinfo=UTC)


def token(n: int) -> dict[str, str]:
    """A resume token as long as real ones, unique per ``n``."""
    return {"_data": f"8267C5A1B2000000{n:04d}2B042C0100296E5A1004" + "AB" * 30 + "0004"}


def change(n: int, size: int = 40) -> dict[str, Any]:
    """A whole update event with every envelope field, ``size`` bytes of text in each document."""
    oid = ObjectId(f"{n:024x}")
    return {
        "_id": token(n),
        "operationType": "update",
        "clusterTime": Timestamp(int((START + timedelta(seconds=n)).timestamp()), 3),
        "ns": {"db": "shop", "coll": "orders"},
        "documentKey": {"_id": oid},
        "updateDescription": {"updatedFields": {"notes": "u" * size}, "removedFields": []},
        "fullDocument": {"_id": oid, "total": Int64(2**40 + n), "notes": "f" * size},
    }


GROUPS = (
    ("operationType", "clusterTime", "ns", "documentKey"),
    ("updateDescription",),
    ("fullDocument",),
)
"""How :func:`split` spreads an event's fields: the small ones first, as MongoDB does."""


def split(
    event: dict[str, Any], groups: tuple[tuple[str, ...], ...] = GROUPS, first_token: int = 100
) -> list[dict[str, Any]]:
    """``event`` as MongoDB's fragments: ``_id``, ``splitEvent``, then the group's fields."""
    return [
        {
            "_id": token(first_token + i),
            "splitEvent": {"fragment": i + 1, "of": len(groups)},
            **{key: event[key] for key in group},
        }
        for i, group in enumerate(groups)
    ]


def merged(fragments: list[dict[str, Any]]) -> dict[str, Any]:
    """What the fragments make: the last ``_id`` first, the other fields in fragment order."""
    out: dict[str, Any] = {"_id": fragments[-1]["_id"]}
    for fragment in fragments:
        out.update((k, v) for k, v in fragment.items() if k not in ("_id", "splitEvent"))
    return out


def raw(document: dict[str, Any]) -> RawBSONDocument:
    return RawBSONDocument(bson.encode(document))


def encoder(fmt: SerializationFormat) -> Encoder:
    return Encoder(
        serializer_for(fmt, Compression.ZSTD),
        codec_for(Compression.ZSTD),
        KeyGenerationStrategy.FLAT,
    )


def bodies(enc: Encoder, prepared: PreparedEvents) -> list[bytes]:
    return [
        enc.encode(part.rows, part.cumulative_bytes[-1]).body
        for part in prepared.partitions.values()
    ]


def run(*calls: list[Any]) -> list[Reassembled]:
    """Each call reassembled in turn, holding what the one before left."""
    held = NOTHING_HELD
    results = []
    for events in calls:
        result = reassemble(events, held)
        held = result.held
        results.append(result)
    return results


# -- events that are no fragments -----------------------------------------------------------


@pytest.mark.parametrize("shape", ["dict", "bytes", "memoryview", "RawBSONDocument", "mixed"])
def test_a_call_without_fragments_is_passed_on_as_it_is(shape: str) -> None:
    """The very list comes back, with nothing held or rejected, whatever the events' shape."""
    changes = [change(n) for n in range(40)]
    given_as: dict[str, list[Any]] = {
        "dict": changes,
        "bytes": [bson.encode(c) for c in changes],
        "memoryview": [memoryview(bson.encode(c)) for c in changes],
        "RawBSONDocument": [raw(c) for c in changes],
        "mixed": [
            ChangeEvent("insert", "shop", "orders"),
            raw(changes[0]),
            changes[1],
            bytearray(bson.encode(changes[2])),
        ],
    }
    batch = given_as[shape]
    result = reassemble(batch)
    assert result.events is batch
    assert (result.positions, result.rejected, result.held) == (None, [], NOTHING_HELD)


@pytest.mark.parametrize("as_raw", [False, True])
def test_a_nested_field_named_split_event_is_no_fragment(as_raw: bool) -> None:
    """Only a top-level splitEvent makes a fragment; one inside a document is user data."""
    event = change(1)
    event["fullDocument"]["splitEvent"] = {"fragment": 1, "of": 2}
    event["updateDescription"]["updatedFields"]["splitEvent"] = "x"
    given: Any = raw(event) if as_raw else event
    result = reassemble([given, given])
    assert list(result.events) == [given, given]
    assert (result.rejected, result.held) == ([], NOTHING_HELD)


def test_malformed_raw_events_are_left_to_the_encoder() -> None:
    """Broken BSON that shows no top-level splitEvent passes on untouched, to be rejected there."""
    fragment = bson.encode(split(change(1))[1])
    garbage: list[Any] = [
        fragment[:-1],  # the size no longer matches
        fragment[:4] + b"\x99" + fragment[5:],  # an unknown type before splitEvent
        b"\x05\x00\x00\x00",
        b"splitEvent",
        memoryview(fragment)[::2],  # no contiguous buffer
    ]
    result = reassemble(garbage)
    assert list(result.events) == garbage
    assert (result.rejected, result.held) == ([], NOTHING_HELD)


# -- reassembly -------------------------------------------------------------------------


def test_three_fragments_across_two_calls_make_one_event() -> None:
    """The last fragment's _id comes first, then every other field in fragment order."""
    whole = change(7)
    fragments = split(whole)
    first, second = run([change(1), *fragments[:2]], [fragments[2], change(2)])
    assert list(first.events) == [change(1)]
    assert [f.number for f in first.held.fragments] == [1, 2]
    assert second.held == NOTHING_HELD
    [event, after] = second.events
    assert event == merged(fragments)
    assert list(event) == ["_id", *GROUPS[0], *GROUPS[1], *GROUPS[2]]
    assert event["_id"] == token(102)
    assert {k: v for k, v in event.items() if k != "_id"} == {
        k: v for k, v in whole.items() if k != "_id"
    }
    assert after == change(2)
    assert list(second.positions or ()) == [0, 1]


@pytest.mark.parametrize("wrap", ["bytes", "memoryview", "bytearray", "RawBSONDocument"])
def test_raw_fragments_make_the_bson_of_the_merged_event(wrap: str) -> None:
    """Raw fragments are joined element by element into the BSON of the merged event."""
    fragments = split(change(7))
    wrappers: dict[str, Callable[[dict[str, Any]], Any]] = {
        "bytes": bson.encode,
        "memoryview": lambda d: memoryview(bson.encode(d)),
        "bytearray": lambda d: bytearray(bson.encode(d)),
        "RawBSONDocument": raw,
    }
    wrapped = wrappers[wrap]
    first, second = run([wrapped(f) for f in fragments[:2]], [wrapped(fragments[2])])
    assert first.events == []
    [event] = second.events
    assert event == bson.encode(merged(fragments))


def test_held_raw_buffers_are_copies() -> None:
    """A bytearray reused by the caller after the call does not change the held fragment."""
    fragments = split(change(7))
    buffer = bytearray(bson.encode(fragments[0]))
    first = reassemble([buffer])
    buffer[:] = bytes(len(buffer))
    second = reassemble([bson.encode(f) for f in fragments[1:]], first.held)
    assert second.events == [bson.encode(merged(fragments))]
    assert first.held.fragments[0].event == bson.encode(fragments[0])


def test_fragment_numbers_may_be_int64() -> None:
    """splitEvent's numbers are read as pymongo reads them: int32 or int64."""
    fragments = split(change(7), tuple((k,) for k in change(7) if k != "_id"))
    for fragment in fragments:
        fragment["splitEvent"] = {k: Int64(v) for k, v in fragment["splitEvent"].items()}
    [result] = run([raw(f) for f in fragments])
    assert result.events == [bson.encode(merged(fragments))]


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_merged_raw_and_decoded_events_give_the_same_objects(fmt: SerializationFormat) -> None:
    """A split event written raw and decoded gives the bytes of the whole event, both ways."""
    wholes = [change(n, size=3000) for n in range(3)]
    fragments = [f for n, w in enumerate(wholes) for f in split(w, first_token=10 * n)]
    enc = encoder(fmt)
    [decoded] = run(fragments)
    [raws] = run([raw(f) for f in fragments])
    from_decoded = enc.prepare(decoded.events, NOW)
    from_raw = enc.prepare(raws.events, NOW)
    expected = enc.prepare(
        [merged(split(w, first_token=10 * n)) for n, w in enumerate(wholes)], NOW
    )
    assert from_raw.accepted == from_decoded.accepted == 3
    assert bodies(enc, from_raw) == bodies(enc, from_decoded) == bodies(enc, expected)
    assert isinstance(from_raw.last_resume_token, RawBSONDocument)
    assert dict(from_raw.last_resume_token) == from_decoded.last_resume_token == token(22)


def test_a_merged_event_may_exceed_16_mib() -> None:
    """Nothing limits the size of the event the fragments make."""
    text = "x" * (6 * 2**20)
    event = change(1)
    event["updateDescription"] = {"updatedFields": {"notes": text}, "removedFields": []}
    event["fullDocument"]["notes"] = text
    event["fullDocument"]["more"] = text
    [result] = run([bson.encode(f) for f in split(event)])
    [joined] = result.events
    assert isinstance(joined, bytes)
    assert len(joined) > 18 * 2**20
    prepared = encoder(SerializationFormat.JSON).prepare(result.events, NOW)
    assert (prepared.accepted, prepared.rejected) == (1, [])
    assert prepared.nbytes > 3 * len(text)


def test_a_batch_larger_than_one_search_step_is_searched_to_its_end() -> None:
    """The fragment at the end of a long call is found, and one after a mixed start too."""
    events: list[Any] = [bson.encode(change(n, size=2000)) for n in range(400)]
    fragment = bson.encode(split(change(7))[0])
    assert len(reassemble([*events, fragment]).held) == 1
    assert len(reassemble([*events[:3], split(change(7))[0]]).held) == 1
    decoded = [change(n) for n in range(3000)]
    assert len(reassemble([*decoded, split(change(7))[0]]).held) == 1


# -- broken runs ------------------------------------------------------------------------


@pytest.mark.parametrize("as_raw", [False, True])
def test_a_missing_fragment_breaks_the_run(as_raw: bool) -> None:
    """Fragments 1 and 3 without 2: one error naming both, at the first one's index."""
    fragments = split(change(7))
    shape: Any = raw if as_raw else (lambda d: d)
    [result] = run([change(1), shape(fragments[0]), shape(fragments[2]), change(2)])
    assert list(result.events) == [change(1), change(2)]
    [error] = result.rejected
    assert isinstance(error, InvalidEventError)
    assert error.index == 1
    message = str(error)
    assert "fragment 1 of 3 (#1" in message
    assert "fragment 3 of 3 (#2" in message
    assert "where fragment 2 of 3 was due" in message
    assert "8267C5A1B20000000100" in message  # the tokens, shortened
    assert "8267C5A1B20000000102" in message
    assert "AB" * 30 not in message
    assert result.held == NOTHING_HELD


def test_a_new_first_fragment_breaks_the_waiting_run() -> None:
    """Fragment 1 of another event ends the waiting one; the new event is still made."""
    one, two = split(change(1), first_token=10), split(change(2), first_token=20)
    [result] = run([one[0], one[1], *two, change(3)])
    assert list(result.events) == [merged(two), change(3)]
    assert list(result.positions or ()) == [2, 5]
    [error] = result.rejected
    assert error.index == 0
    assert "fragment 1 of 3 (#0" in str(error)
    assert "fragment 2 of 3 (#1" in str(error)
    assert "then fragment 1 of another event (#2)" in str(error)


def test_another_event_breaks_the_waiting_run() -> None:
    """A whole event while fragments wait: they are rejected, the event is kept."""
    fragments = split(change(7))
    [result] = run([fragments[0], change(1), fragments[1], fragments[2]])
    assert list(result.events) == [change(1)]
    assert [e.index for e in result.rejected] == [0, 2, 3]
    assert "then event #1, which is not one of them" in str(result.rejected[0])
    assert "fragment 2 of 3 (#2" in str(result.rejected[1])
    assert "fragment 3 of 3 (#3" in str(result.rejected[2])
    assert all("without the fragments before it" in str(e) for e in result.rejected[1:])


@pytest.mark.parametrize(
    ("numbers", "due"),
    [([(1, 3), (2, 4)], "fragment 2 of 3"), ([(1, 3), (3, 3)], "fragment 2 of 3")],
    ids=["another of", "out of order"],
)
def test_a_fragment_of_another_event_breaks_the_run(
    numbers: list[tuple[int, int]], due: str
) -> None:
    """A different total or a skipped number: the run and that fragment are one error."""
    fragments = [
        {"_id": token(n), "splitEvent": {"fragment": i, "of": of}, f"f{n}": n}
        for n, (i, of) in enumerate(numbers)
    ]
    [result] = run(fragments)
    assert list(result.events) == []
    [error] = result.rejected
    assert (error.index, result.held) == (0, NOTHING_HELD)
    assert f"where {due} was due" in str(error)
    assert str(error).count("fragment ") == 3


def test_errors_about_earlier_calls_have_no_index_and_come_first() -> None:
    """Held fragments broken by this call: index None, before this call's own rejections."""
    fragments = split(change(7))
    _, second = run(fragments[:2], [change(1), {"_id": token(1), "bad": 1}])
    enc = encoder(SerializationFormat.JSON)
    prepared = enc.prepare(second.events, NOW)
    errors = second.rejections(prepared.rejected)
    assert [e.index for e in errors] == [None, 1]
    assert str(errors[0]).startswith("split event broken: fragment 1 of 3 (from an earlier call")
    assert "operationType" in str(errors[1])


def test_the_encoders_rejections_get_the_callers_indices() -> None:
    """The encoder sees fewer events once fragments merge; its indices are mapped back."""
    good = split(change(7))
    bad = split(change(8), first_token=200)
    bad[0]["operationType"] = 42
    batch: list[Any] = [*good, {"no": "event"}, change(1), *bad, {"still": "no event"}]
    [result] = run(batch)
    prepared = encoder(SerializationFormat.JSON).prepare(result.events, NOW)
    errors = result.rejections(prepared.rejected)
    assert [e.index for e in errors] == [3, 5, 8]
    assert prepared.accepted == 2
    assert all(f"event #{e.index}:" in str(e) for e in errors)


def test_merging_keeps_what_the_encoder_reports_for_a_call_without_fragments() -> None:
    """Without fragments, the encoder's rejections are the call's, untouched."""
    [result] = run([change(1), {"no": "event"}])
    prepared = encoder(SerializationFormat.JSON).prepare(result.events, NOW)
    assert result.rejections(prepared.rejected) == prepared.rejected


@pytest.mark.parametrize(
    "split_event",
    [
        "1 of 2",
        {"fragment": 0, "of": 2},
        {"fragment": 3, "of": 2},
        {"fragment": 1},
        {"fragment": True, "of": 2},
        {"fragment": 1.0, "of": 2},
    ],
)
@pytest.mark.parametrize("as_raw", [False, True])
def test_an_unreadable_split_event_field_is_rejected(split_event: Any, as_raw: bool) -> None:
    """splitEvent must be {fragment: i, of: n} with 1 <= i <= n, raw or decoded alike."""
    event = {"_id": token(1), "splitEvent": split_event, "operationType": "insert"}
    [result] = run([change(1), raw(event) if as_raw else event])
    assert len(result.events) == 1
    [error] = result.rejected
    assert error.index == 1
    assert "'splitEvent' must be {fragment: i, of: n}" in str(error)


def test_a_malformed_fragment_is_rejected_not_crashed_on() -> None:
    """BSON broken after a top-level splitEvent is an InvalidEventError for that fragment."""
    body = bson.encode(split(change(7))[1])
    elements = body[4:-1] + b"\x99k\x00"  # an element of no known type after the others
    broken = struct.pack("<i", len(elements) + 5) + elements + b"\x00"
    [result] = run([broken])
    [error] = result.rejected
    assert (error.index, result.held) == (0, NOTHING_HELD)
    assert "malformed BSON in a fragment" in str(error)


@pytest.mark.parametrize("as_raw", [False, True])
def test_a_field_in_two_fragments_is_rejected(as_raw: bool) -> None:
    """Each field belongs to one fragment; a repeated one makes no event."""
    fragments = split(change(7))
    fragments[2]["ns"] = {"db": "other", "coll": "x"}
    [result] = run([raw(f) if as_raw else f for f in fragments])
    assert result.events == []
    [error] = result.rejected
    assert error.index == 0
    assert "field 'ns' is in fragments 1 and 3" in str(error)


def test_fragments_of_both_shapes_make_no_event() -> None:
    """An event's fragments come all raw or all decoded."""
    fragments = split(change(7))
    [result] = run([fragments[0], raw(fragments[1]), fragments[2]])
    assert result.events == []
    assert "partly as raw BSON and partly decoded" in str(result.rejected[0])


# -- what close() reports -------------------------------------------------------------


@pytest.mark.parametrize("as_raw", [False, True])
def test_the_incomplete_error_names_and_carries_the_held_fragments(as_raw: bool) -> None:
    """Fragment numbers and tokens in the message; the fragments and tokens as attributes."""
    fragments = split(change(7))[:2]
    given = [raw(f) for f in fragments] if as_raw else fragments
    [result] = run(given)
    error = result.held.incomplete_error()
    assert isinstance(error, IncompleteEventError)
    assert list(error.fragments) == given
    tokens = [dict(cast(Any, t)) if as_raw else t for t in error.resume_tokens]
    assert tokens == [token(100), token(101)]
    assert "fragment 1 of 3 (resume token {'_data': '8267C5A1B20000000100" in str(error)
    assert "fragment 2 of 3 (resume token" in str(error)


def test_held_fragments_are_a_value() -> None:
    """The destination replaces what it holds; a result never changes what it was given."""
    held = reassemble(split(change(7))[:1]).held
    again = reassemble(split(change(7))[1:2], held)
    assert len(held) == 1
    assert len(again.held) == 2
    assert isinstance(held, HeldFragments)


# -- never a crash ----------------------------------------------------------------------

FRAGMENT_BYTES = [bson.encode(f) for f in split(change(7))]


@given(
    which=st.integers(0, 2),
    cuts=st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=6)), max_size=4),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mangled_fragments_never_crash(which: int, cuts: list[tuple[int, bytes]]) -> None:
    """Any bytes written over a fragment: an event, a rejection or a held fragment, no crash."""
    data = bytearray(FRAGMENT_BYTES[which])
    for at, patch in cuts:
        data[at : at + len(patch)] = patch
    batch: list[Any] = [*FRAGMENT_BYTES[:which], bytes(data), *FRAGMENT_BYTES[which + 1 :]]
    result = reassemble(batch)
    assert len(result.events) + len(result.rejected) + len(result.held) >= 1
    encoder(SerializationFormat.JSON).prepare(result.events, NOW)
