"""Differential fuzzing of the compiled BSON-to-JSON core against the pure-Python module.

A finding is an input on which the two disagree (one accepts, one rejects, or the JSON
differs; or the rows (JSON Lines or envelopes), their partitions or their grouping by
partition differ, or the typed columns' path walk finds other elements, or a
Decimal128's text differs from ``str()``), a crash, or a sanitizer report. atheris is
not a project dependency::

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/fuzz_bsonjson.py --seed /tmp/bsonjson-corpus

Then either fuzz the extension as built (Python coverage only)::

    .venv/bin/python tests/fuzz/fuzz_bsonjson.py /tmp/bsonjson-corpus -max_total_time=600

or, better, a copy built with clang, libFuzzer's coverage instrumentation and
AddressSanitizer, loaded from the path in ``BSONJSON_SO`` (the installed one is untouched)::

    CC=clang LDSHARED="clang -shared" RIGATONI_S3_EXTRA_CFLAGS="-fsanitize=address,fuzzer-no-link -g -O1" \\
        .venv/bin/python setup.py build_ext --build-lib /tmp/bsonjson-asan --build-temp /tmp/bsonjson-asan-tmp --force
    BSONJSON_SO=$(ls /tmp/bsonjson-asan/rigatoni_s3/_bsonjson_c*.so) \\
        ASAN_OPTIONS=detect_leaks=0:suppressions=$PWD/tests/fuzz/asan.supp \\
        LD_PRELOAD=$(.venv/bin/python -c "import atheris; print(atheris.path())")/asan_with_fuzzer.so \\
        .venv/bin/python tests/fuzz/fuzz_bsonjson.py /tmp/bsonjson-corpus -max_total_time=600

``asan.supp`` keeps out-of-bounds reads made by pymongo's own C decoder (the reference
side hands it arbitrary bytes) from ending the run; see the file for the one known.

The first input byte steers the harness: bit 0 rewrites the length prefix to the input's
length (so mutations get past the first check), bit 1 converts the event twice in one
batch (the doubles of both are formatted by one orjson call), bit 2 asks for the JSON
Lines rows too (and their rows and partitions, not envelope rows), bits 3-4 pick the
partitions' period (none, hour, day).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import atheris
from bson.decimal128 import Decimal128

from rigatoni_s3 import _bsonjson_py as python_module
from rigatoni_s3._bsonpath import MalformedBsonError, PathTree
from rigatoni_s3.formats._envelope import EnvelopeRow
from rigatoni_s3.keys import new_partition_key


def _compiled() -> ModuleType:
    path = os.environ.get("BSONJSON_SO")
    if not path:
        from rigatoni_s3 import _bsonjson_c

        return _bsonjson_c
    loader = importlib.machinery.ExtensionFileLoader("rigatoni_s3._bsonjson_c", path)
    spec = importlib.util.spec_from_file_location("rigatoni_s3._bsonjson_c", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


compiled_module = _compiled()

PATHS = [
    ("fullDocument", "v"),
    ("fullDocument", "list", "0"),
    ("fullDocument", "list", "1", "nested"),
    ("fullDocument", "list", "1"),
    ("documentKey", "_id"),
    ("updateDescription", "updatedFields", "v"),
    ("fullDocumentBeforeChange", "v", "a", "b", "1"),
    ("to", "coll"),
    ("fullDocument", "v"),
]
"""Paths the seeds' documents hold (some twice, some through arrays), for typed columns."""
finder = compiled_module.PathFinder(PATHS)
tree = PathTree(PATHS)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    flags, raw = data[0], bytearray(data[1:])
    if flags & 1 and len(raw) >= 4:
        raw[0:4] = len(raw).to_bytes(4, "little")
    event = bytes(raw)
    batch = [event, event] if flags & 2 else [event]
    lines = bool(flags & 4)
    native = compiled_module.convert_batch(batch, lines)
    python = python_module.convert_batch(batch, lines)
    for ours, reference in zip(native, python, strict=True):
        if isinstance(ours, str) != isinstance(reference, str):
            raise AssertionError(f"accept/reject differs: {ours!r} vs {reference!r} for {event!r}")
        if not isinstance(ours, str) and ours != reference:
            raise AssertionError(f"output differs: {ours!r} vs {reference!r} for {event!r}")
    # Rows with their partitions (JSON Lines or envelopes): the same rows, keys and
    # rejections. Reasons for malformed bytes are worded differently; positions must agree.
    step = (None, 3600, 86400, None)[flags >> 3 & 3]
    args = (batch, step, 1_736_935_200, new_partition_key)
    if lines:
        ours_rows = compiled_module.lines_batch(*args)
        reference_rows = python_module.lines_batch(*args)
    else:
        ours_rows = compiled_module.envelopes_batch(*args, EnvelopeRow)
        reference_rows = python_module.envelopes_batch(*args, EnvelopeRow)
    if [position for position, _ in ours_rows.rejected] != [
        position for position, _ in reference_rows.rejected
    ] or ours_rows[:3] + ours_rows[4:] != reference_rows[:3] + reference_rows[4:]:
        raise AssertionError(f"rows differ: {ours_rows!r} vs {reference_rows!r}")
    # The rows grouped by partition, as the encoder hands them to the buffers.
    group_args = (ours_rows.partitions, ours_rows.rows, list(range(len(ours_rows.rows))))
    if compiled_module.group_rows(*group_args) != python_module.group_rows(*group_args):
        raise AssertionError(f"groups differ for {ours_rows!r}")
    # str() of a Decimal128 made of the input's first 16 bytes.
    if len(event) >= 16:
        value = Decimal128.from_bid(event[:16])
        if compiled_module.decimal128_str(value) != str(value):
            raise AssertionError(f"Decimal128 text differs for {event[:16]!r}")
    # The typed columns' path walk: the same elements found, or both fail.
    try:
        expected = tree.spans(event)
    except MalformedBsonError:
        expected = None
    for found in finder.spans_batch(batch):
        if found != expected:
            raise AssertionError(f"spans differ: {found!r} vs {expected!r} for {event!r}")


def write_seeds(directory: Path) -> None:
    """Valid change events holding every BSON type, as a starting corpus."""
    import datetime

    import bson
    from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
    from bson.dbref import DBRef

    values: list[Any] = [
        1.5, -0.0, float("nan"), float("inf"), 5e-324, 1e16, "tëxt\n\x01😀", {"a": {"b": [1, 2]}},
        [1, "x", None], Binary(b"\x00\x01", 0), Binary(b"abc", 2), Binary(b"u" * 16, 4), None,
        ObjectId(b"0123456789ab"), True, datetime.datetime(2025, 1, 2, 3, 4, 5, 678000),
        Regex("^a.*", "imsux"), Code("f()"), Code("g()", {"x": 1.25}), 7, Timestamp(5, 6),
        Int64(-(2**63)), Decimal128("-1.2345E-40"), Decimal128("NaN"), MinKey(), MaxKey(),
        DBRef("coll", 3, "db", extra=float("nan")),
    ]  # fmt: skip
    wall = datetime.datetime(2025, 1, 2, 3, 4, 5, 678000)
    directory.mkdir(parents=True, exist_ok=True)
    for i, value in enumerate(values):
        event = {
            "_id": {"_data": f"82{i:04X}"},
            "operationType": "update",
            "clusterTime": Timestamp(1736935200 + i, i),
            "to": {"db": "shop", "coll": value} if i % 2 else None,
            "ns": {"db": "shop", "coll": "orders"},
            "documentKey": {"_id": value},
            "fullDocument": {"v": value, "list": [value, {"nested": value}]},
            "updateDescription": {"updatedFields": {"v": value}, "removedFields": []},
            "fullDocumentBeforeChange": {"v": value},
            "wallTime": value if i % 3 == 2 else wall,  # some not a date: rejected
        }
        # The transaction's parts in either order, unknown fields around them.
        parts = {"txnNumber": Int64(i), "lsid": {"id": Binary(bytes(16), 4), "x": value}}
        for key in sorted(parts, reverse=bool(i % 2)):
            event[key] = parts[key]
        event["collectionUUID"] = Binary(bytes([i]) * 16, 4)
        event["splitEvent"] = value
        (directory / f"seed{i:03d}").write_bytes(b"\x01" + bson.encode(event))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seed":
        write_seeds(Path(sys.argv[2]))
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
