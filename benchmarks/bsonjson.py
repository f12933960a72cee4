"""Raw BSON change events to JSON: what each path costs per event, and whether it scales.

Events come from :mod:`benchmarks.generator` with real BSON types put back (ObjectId,
Decimal128, UUID as binary, Timestamp clusterTime) and are encoded once; every path
then converts the same bytes. Paths:

* ``native``: ``_bsonjson_c.convert_batch`` (the walk runs without the GIL)
* ``native walk``: only that walk, the part two threads can run at once
* ``python``: ``_bsonjson_py.convert_batch``, the fallback
* ``decode``: ``bson.decode`` alone, the floor of any dict-based path
* ``decode+dumps``: ``bson.decode``, ``fields_of`` and ``dumps`` of each document
* ``decode+rows``: ``bson.decode``, ``fields_of`` and the batched ``envelope_rows``

Then the native path (and the Python one, for contrast) on one thread and on two
threads at once: with the GIL released, two threads should do nearly twice the work.

    .venv/bin/python benchmarks/bsonjson.py [--events 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import bson
from bson import Binary, Decimal128, ObjectId, Timestamp
from bson.codec_options import CodecOptions, DatetimeConversion
from generator import build_pool

from rigatoni_s3 import _bsonjson_py
from rigatoni_s3.events import fields_of
from rigatoni_s3.formats._envelope import envelope_rows
from rigatoni_s3.formats._json import dumps

OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=False, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
BATCH = 256
FIELDS = (
    ("documentKey", "document_key"),
    ("fullDocument", "full_document"),
    ("updateDescription", "update_description"),
    ("_id", "resume_token"),
)


def bsonify(value: Any, key: str = "") -> Any:
    """The generator's stand-ins replaced by the BSON types a change stream yields."""
    if isinstance(value, dict):
        if set(value) == {"$timestamp"}:
            return Timestamp(value["$timestamp"]["t"], value["$timestamp"]["i"])
        return {k: bsonify(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [bsonify(v) for v in value]
    if isinstance(value, Decimal):
        return Decimal128(value)
    if isinstance(value, uuid.UUID):
        return Binary.from_uuid(value)
    if isinstance(value, str) and key.endswith("_id") and len(value) == 24:
        try:
            return ObjectId(value)
        except bson.errors.InvalidId:
            return value
    return value


def encoded_events(count: int) -> list[bytes]:
    pool = build_pool(min(count, 20_000))
    raws = []
    for event in pool.events[:count]:
        event = bsonify(event)
        if "clusterTime" in event and not isinstance(event["clusterTime"], Timestamp):
            event["clusterTime"] = Timestamp(int(event["clusterTime"].timestamp()), 1)
        raws.append(bson.encode(event))
    return raws


def decode_only(raws: Sequence[bytes]) -> None:
    for raw in raws:
        bson.decode(raw, codec_options=OPTIONS)


def decode_dumps(raws: Sequence[bytes]) -> None:
    for raw in raws:
        doc = bson.decode(raw, codec_options=OPTIONS)
        fields_of(doc)
        for name, field in FIELDS:
            value = doc.get(name)
            if value is not None:
                dumps(value, field)


def decode_rows(raws: Sequence[bytes]) -> None:
    envelope_rows([fields_of(bson.decode(raw, codec_options=OPTIONS)) for raw in raws])


def batched(convert: Callable[[Sequence[bytes]], object]) -> Callable[[Sequence[bytes]], None]:
    def run(raws: Sequence[bytes]) -> None:
        for start in range(0, len(raws), BATCH):
            convert(raws[start : start + BATCH])

    return run


def per_event(run: Callable[[Sequence[bytes]], None], raws: Sequence[bytes], repeat: int) -> float:
    """Median seconds per event over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run(raws)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / len(raws)


def throughput(
    run: Callable[[Sequence[bytes]], None], raws: Sequence[bytes], threads: int, repeat: int
) -> float:
    """Events per second with ``threads`` threads each converting all of ``raws``."""
    rates = []
    for _ in range(repeat):
        workers = [threading.Thread(target=run, args=(raws,)) for _ in range(threads)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        rates.append(threads * len(raws) / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from rigatoni_s3 import _bsonjson_c

    raws = encoded_events(args.events)
    sizes = sorted(len(raw) for raw in raws)
    print(
        f"{len(raws)} events, BSON size median {sizes[len(sizes) // 2]} B, mean {sum(sizes) / len(sizes):.0f} B"
    )
    assert _bsonjson_c.convert_batch(raws[:BATCH]) == _bsonjson_py.convert_batch(raws[:BATCH])

    paths = {
        "native": batched(_bsonjson_c.convert_batch),
        "native walk": batched(_bsonjson_c._walk_only),
        "python": batched(_bsonjson_py.convert_batch),
        "decode": decode_only,
        "decode+dumps": decode_dumps,
        "decode+rows": decode_rows,
    }
    costs = {name: per_event(run, raws, args.repeat) for name, run in paths.items()}
    print("\nsingle thread, per event (ratio: the path's cost over native's)")
    for name, cost in costs.items():
        print(f"  {name:<14} {cost * 1e6:8.2f} µs   x{cost / costs['native']:.2f}")

    print("\ntwo threads at once (ratio: events/s over one thread's)")
    for name in ("native", "native walk", "python"):
        one = throughput(paths[name], raws, 1, args.repeat)
        two = throughput(paths[name], raws, 2, args.repeat)
        print(f"  {name:<14} 1 thread {one:10.0f}/s   2 threads {two:10.0f}/s   x{two / one:.2f}")


if __name__ == "__main__":
    main()
