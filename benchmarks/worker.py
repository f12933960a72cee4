"""One measured run, in a process of its own.

``run.py`` starts this script once per run and passes a :class:`~measure.RunSpec`
as JSON on stdin; the result comes back as one JSON line on stdout. A process
per run keeps peak RSS, heap and thread pools of one configuration out of the
next one's numbers.

Kinds of run:

``ours``           S3Destination driven through its public API by an async producer.
``baseline``       What naive code does: sync boto3, ``json.dumps`` per event, gzip,
                   one PutObject per batch.
``s3-floor``       Plain aioboto3 PUTs of given object sizes and nothing else: the
                   time the S3 server alone needs for the bytes ``ours`` stored.
``stages``         The encode stage alone (no S3, no event loop), per step.

From what the driver receives, BSON bytes per event (``bsonpool.py``):

``baseline-bson``  ``bson.decode`` per event, then exactly what ``baseline`` does.
``ours-decoded``   The producer decodes each batch with ``bson.decode`` (inside the
                   measured window) and passes the dicts to ``write_batch``.
``ours-raw``       The producer wraps each event's bytes in ``RawBSONDocument``
                   (inside the measured window) and passes those to ``write_batch``.

With ``compress_floor``, an ``ours*`` run whose objects are compressed whole (JSONL,
CSV with gzip or zstd) also reports the CPU of the library's codec alone on the
run's own uncompressed object bodies, after the measured window.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import gzip
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aioboto3
import bson
from bson.raw_bson import RawBSONDocument
from bsonpool import BsonPool, build_bson_pool
from generator import EventPool, build_pool
from measure import (
    Distribution,
    LoopLagMonitor,
    RunSpec,
    cpu_seconds,
    reset_peak_rss,
    rss_kib,
    ru_maxrss_kib,
)

from rigatoni_s3 import Compression, S3Destination, SerializationFormat
from rigatoni_s3._uploader import open_client
from rigatoni_s3.compression import codec_for
from rigatoni_s3.formats import serializer_for
from rigatoni_s3.testing import S3Endpoint

FLOOR_ROUNDS = 3
"""The S3 floor PUTs its objects this many times and reports the fastest round."""


class _Timed:
    """Wraps the batch iterator to count the producer's own time apart from the writer's."""

    def __init__(self, batches: Iterator[list[Any]]) -> None:
        self._batches = batches
        self.seconds = 0.0

    def __iter__(self) -> Iterator[list[Any]]:
        while True:
            start = time.perf_counter()
            batch = next(self._batches, None)
            self.seconds += time.perf_counter() - start
            if batch is None:
                return
            yield batch


class _Window:
    """Wall time, CPU time and peak RSS of the measured part of a run only."""

    def __enter__(self) -> _Window:
        self.rss_before_kib = rss_kib()[0]
        self.peak_reset = reset_peak_rss()
        self.cpu = cpu_seconds()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall_s = time.perf_counter() - self.start
        self.cpu_s = cpu_seconds() - self.cpu
        self.peak_rss_kib = rss_kib()[1]

    def report(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "rss_before_kib": self.rss_before_kib,
            "peak_rss_kib": self.peak_rss_kib,
            "peak_rss_is_window_only": self.peak_reset,
            "ru_maxrss_kib": ru_maxrss_kib(),
        }


def _load_pool(spec: RunSpec) -> EventPool:
    """The same pool in every child: building it is not part of any measurement."""
    pool = build_pool(spec.pool_size, hours=spec.hours, seed=spec.seed)
    # The pool lives for the whole run; keep the collector from walking it over and
    # over, which the writer under test would otherwise pay for.
    gc.collect()
    gc.freeze()
    return pool


def _load_bson_pool(spec: RunSpec) -> tuple[BsonPool, int]:
    """The same pool as BSON bytes, and the JSON input bytes of ``spec.events`` of it.

    The dicts it was built from are dropped: a consumer that receives BSON never had them.
    """
    pool = build_pool(spec.pool_size, hours=spec.hours, seed=spec.seed)
    input_bytes = pool.input_bytes(spec.events)
    bson_pool = build_bson_pool(pool)
    del pool
    gc.collect()
    gc.freeze()
    return bson_pool, input_bytes


def _decoded(batch: list[bytes]) -> list[dict[str, Any]]:
    """What pymongo hands the application with its default CodecOptions."""
    return [bson.decode(document) for document in batch]


def _raw(batch: list[bytes]) -> list[RawBSONDocument]:
    """What pymongo hands the application with ``document_class=RawBSONDocument``."""
    return [RawBSONDocument(document) for document in batch]


# -- ours -------------------------------------------------------------------------------


async def run_ours(spec: RunSpec) -> dict[str, Any]:
    """Drive S3Destination like an application would: write_batch calls, then close().

    ``ours`` writes the dict pool's events. ``ours-decoded`` and ``ours-raw`` start from
    BSON bytes and turn each batch into what the driver would hand over (decoded dicts,
    or RawBSONDocuments) inside the measured window, timed apart as ``convert_s``.
    """
    convert: Callable[[list[bytes]], list[Any]] | None = None
    source: Iterator[list[Any]]
    extra: dict[str, Any] = {}
    if spec.kind == "ours":
        pool = _load_pool(spec)
        source = pool.batches(spec.events, spec.batch_size)
        input_bytes = pool.input_bytes(spec.events)
    else:
        bson_pool, input_bytes = _load_bson_pool(spec)
        source = bson_pool.batches(spec.events, spec.batch_size)
        convert = _decoded if spec.kind == "ours-decoded" else _raw
        extra["bson_bytes"] = bson_pool.nbytes(spec.events)
        extra["bson_bytes_per_event"] = bson_pool.average_bytes
    if spec.switch_interval is not None:
        # How long a thread holding the GIL may keep it while another waits: shorter
        # means the event loop gets it back sooner from an encoding thread.
        sys.setswitchinterval(spec.switch_interval)
    endpoint = S3Endpoint(spec.endpoint_url)
    config = endpoint.config(
        spec.bucket, format=spec.format, compression=spec.compression, **spec.options
    )
    profiler = _ThreadProfiler() if spec.profile_path else None
    destination = S3Destination(config, executor=None if profiler is None else profiler.executor())
    await destination.start()  # opening the client is a one-off, not per event
    batches = _Timed(source)
    latencies: list[float] = []
    convert_s = 0.0
    monitor = LoopLagMonitor()
    gc.collect()  # not while the ticker runs: a full collection would read as loop lag
    monitor.start()
    await asyncio.sleep(0.01)  # let the ticker take its first sample
    with _Window() as window:
        if profiler is not None:
            profiler.main.enable()
        for batch in batches:
            events = batch
            if convert is not None:  # what the driver hands over, from the bytes it received
                start = time.perf_counter()
                events = convert(batch)
                convert_s += time.perf_counter() - start
            start = time.perf_counter()
            await destination.write_batch(events)
            latencies.append(time.perf_counter() - start)
        closing = time.perf_counter()
        await destination.close()
        close_s = time.perf_counter() - closing
        if profiler is not None:
            profiler.main.disable()
    await monitor.stop()
    if profiler is not None and spec.profile_path:
        profiler.dump(spec.profile_path)
    if spec.compress_floor:
        extra["compress_floor"] = _compress_floor(endpoint, spec)
    stored = _stored_objects(endpoint, spec.bucket)
    return {
        **window.report(),
        "events": spec.events,
        "input_bytes": input_bytes,
        "producer_s": batches.seconds,
        "convert_s": None if convert is None else convert_s,
        "close_s": close_s,
        "write_batch": _dist(latencies),
        "loop_lag": _dist(monitor.lags),
        **extra,
        **stored,
    }


def _compress_floor(endpoint: S3Endpoint, spec: RunSpec) -> dict[str, Any] | None:
    """CPU of the library's codec alone, one thread, on the bodies this run compressed.

    The stored objects are read back and decompressed, which gives exactly the bytes
    the writer compressed; they are compressed again with ``codec_for(compression)``
    (zstandard at ``ZSTD_LEVEL``, gzip at ``GZIP_LEVEL``), best of 5, timed with
    ``time.thread_time``. None when there is nothing to compare: no compression, or a
    format that compresses inside the file (Parquet, Avro).
    """
    compression = Compression(spec.compression)
    serializer = serializer_for(SerializationFormat(spec.format), compression)
    if compression is Compression.NONE or serializer.compresses_internally:
        return None
    client = endpoint.client()
    stored: list[bytes] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=spec.bucket):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=spec.bucket, Key=obj["Key"])["Body"].read()
            stored.append(bytes(body))
    bodies = [_decompress(compression, body) for body in stored]
    compress = codec_for(compression).compress
    gc.collect()
    best = float("inf")
    for _ in range(5):  # short and exposed to a shared machine: keep the best
        start = time.thread_time()
        recompressed = [compress(body) for body in bodies]
        best = min(best, time.thread_time() - start)
    return {
        "codec": compression.value,
        "cpu_s": best,
        "objects": len(bodies),
        "raw_bytes": sum(map(len, bodies)),
        # zstd and gzip (mtime=0) are deterministic: equal sizes confirm the same input.
        "same_bytes_as_stored": sum(map(len, recompressed)) == sum(map(len, stored)),
    }


def _decompress(compression: Compression, body: bytes) -> bytes:
    if compression is Compression.GZIP:
        return gzip.decompress(body)
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True)
    return bytes(reader.read())


class _ThreadProfiler:
    """cProfile for the event loop thread and for every encode thread of the destination.

    cProfile sees one thread only, so the destination is given an executor whose
    threads each run their own profiler; the profiles are merged at the end.
    """

    def __init__(self) -> None:
        self.main = cProfile.Profile()
        self.threads: list[cProfile.Profile] = []
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def executor(self) -> ThreadPoolExecutor:
        """A pool like the destination's own, each of whose threads profiles itself."""
        from rigatoni_s3.destination import ENCODE_THREADS

        def start_thread_profile() -> None:
            thread_profile = cProfile.Profile()
            with self._lock:
                self.threads.append(thread_profile)
            thread_profile.enable()

        self._executor = ThreadPoolExecutor(
            ENCODE_THREADS, "rigatoni-s3-encode", initializer=start_thread_profile
        )
        return self._executor

    def dump(self, path: str) -> None:
        import pstats

        if self._executor is not None:  # ours to stop: the destination leaves it running
            self._executor.shutdown(wait=True)
        stats = pstats.Stats(self.main)
        for thread_profile in self.threads:
            stats.add(thread_profile)
        stats.dump_stats(path)


# -- baseline ---------------------------------------------------------------------------


def run_baseline(spec: RunSpec) -> dict[str, Any]:
    """The yardstick: what a few lines of naive synchronous code achieve.

    ``baseline-bson`` starts from BSON bytes and ``bson.decode``s each event first
    (default CodecOptions), inside the per-batch time.
    """
    extra: dict[str, Any] = {}
    source: Iterator[list[Any]]
    if spec.kind == "baseline-bson":
        bson_pool, input_bytes = _load_bson_pool(spec)
        source = bson_pool.batches(spec.events, spec.batch_size)
        extra["bson_bytes"] = bson_pool.nbytes(spec.events)
        extra["bson_bytes_per_event"] = bson_pool.average_bytes
    else:
        pool = _load_pool(spec)
        source = pool.batches(spec.events, spec.batch_size)
        input_bytes = pool.input_bytes(spec.events)
    decode = spec.kind == "baseline-bson"
    endpoint = S3Endpoint(spec.endpoint_url)
    endpoint.create_bucket(spec.bucket)
    client = endpoint.client()
    batches = _Timed(source)
    latencies: list[float] = []
    gc.collect()
    with _Window() as window:
        for number, batch in enumerate(batches):
            start = time.perf_counter()
            if decode:
                lines = "\n".join(json.dumps(bson.decode(doc), default=str) for doc in batch)
            else:
                lines = "\n".join(json.dumps(event, default=str) for event in batch)
            body = gzip.compress(lines.encode(), compresslevel=spec.gzip_level)
            client.put_object(Bucket=spec.bucket, Key=f"events/{number:08d}.jsonl.gz", Body=body)
            latencies.append(time.perf_counter() - start)
    stored = _stored_objects(endpoint, spec.bucket)
    return {
        **window.report(),
        "events": spec.events,
        "input_bytes": input_bytes,
        "producer_s": batches.seconds,
        "write_batch": _dist(latencies),
        "loop_lag": None,
        **extra,
        **stored,
    }


# -- S3 floor ---------------------------------------------------------------------------


async def run_s3_floor(spec: RunSpec) -> dict[str, Any]:
    """Only the PUTs: if this is close to a run's time, the server is the limit, not us."""
    endpoint = S3Endpoint(spec.endpoint_url)
    endpoint.create_bucket(spec.bucket)
    sizes = spec.object_sizes
    blob = os.urandom(max(sizes, default=0))
    bodies = [blob[:size] for size in sizes]  # built before the clock starts
    session = aioboto3.Session()
    # The very client of S3Destination: no botocore retries, path style, timeouts.
    config = endpoint.config(spec.bucket, create_bucket=False)
    async with open_client(session, config) as client:
        slots = asyncio.Semaphore(spec.concurrency)

        async def put(key: str, body: bytes) -> None:
            async with slots:
                await client.put_object(
                    Bucket=spec.bucket, Key=key, Body=body, ContentType="application/x-ndjson"
                )

        rounds: list[dict[str, Any]] = []
        for round_number in range(FLOOR_ROUNDS):  # short and noisy: keep the best round
            gc.collect()
            keys = [
                f"shop/orders/2025/03/03/06/{n:013d}-floor-{round_number}-{n:06d}.jsonl.zst"
                for n in range(len(bodies))
            ]
            with _Window() as window:
                await asyncio.gather(*(put(k, b) for k, b in zip(keys, bodies, strict=True)))
            rounds.append(window.report())
    _stored_objects(endpoint, spec.bucket)
    best = min(rounds, key=lambda r: float(r["wall_s"]))
    return {
        **best,
        "rounds": len(rounds),
        "round_walls_s": [r["wall_s"] for r in rounds],
        "objects": len(sizes),
        "stored_bytes": sum(sizes),
    }


# -- stages -----------------------------------------------------------------------------


def run_stages(spec: RunSpec) -> dict[str, Any]:
    """µs per event of each encode step, on the producer's batches, without S3.

    Uses the private encode stage (``rigatoni_s3._encoder``) on purpose: it is the
    pure function the thread pool runs, and this is its cost without any I/O.
    """
    from datetime import UTC, datetime

    from rigatoni_s3 import S3Config
    from rigatoni_s3._encoder import Encoder
    from rigatoni_s3.compression import codec_for
    from rigatoni_s3.events import fields_of
    from rigatoni_s3.formats import serializer_for

    pool = _load_pool(spec)
    config = S3Config(
        bucket="stages", region="us-east-1", format=spec.format, compression=spec.compression
    )
    serializer = serializer_for(config.format, config.compression)
    encoder = Encoder(serializer, codec_for(config.compression), config.key_strategy)
    batches = list(pool.batches(spec.events, spec.batch_size))
    now = datetime.now(UTC)
    fields = [[fields_of(event) for event in batch] for batch in batches]
    prepared = [encoder.prepare(batch, now) for batch in batches]
    # Whole partitions, as the flusher sees them once buffers fill (no batch limit here).
    partitions: dict[Any, list[Any]] = {}
    for batch in prepared:
        for key, part in batch.partitions.items():
            partitions.setdefault(key, []).extend(part.rows)
    bodies = [serializer.serialize(rows) for rows in partitions.values()]
    codec = codec_for(config.compression)
    # The inputs stay alive; keep the collector from walking them during the timings.
    gc.collect()
    gc.freeze()

    def best_of_3(step: Callable[[], None]) -> float:
        """Seconds of the fastest of 3 runs of ``step``, which keeps none of its results."""
        times = []
        for _ in range(3):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return min(times)

    def each(function: Callable[[Any], object], inputs: list[Any]) -> Callable[[], None]:
        def step() -> None:
            for item in inputs:
                function(item)

        return step

    flat_events = [event for batch in batches for event in batch]
    flat_fields = [f for batch in fields for f in batch]
    partition_rows = list(partitions.values())
    results = {
        "fields_of": best_of_3(each(fields_of, flat_events)),
        "encode_event": best_of_3(each(serializer.encode_event, flat_fields)),
        "prepare": best_of_3(each(lambda batch: encoder.prepare(batch, now), batches)),
        "serialize": best_of_3(each(serializer.serialize, partition_rows)),
        "compress": best_of_3(each(codec.compress, bodies)),
        "encode": best_of_3(each(lambda rows: encoder.encode(rows, 0), partition_rows)),
    }
    return {
        "events": spec.events,
        "us_per_event": {step: s / spec.events * 1e6 for step, s in results.items()},
        "objects": len(partitions),
        "raw_bytes": sum(len(b) for b in bodies),
    }


# -- shared -----------------------------------------------------------------------------


def _dist(seconds: list[float]) -> dict[str, Any] | None:
    dist = Distribution.of(seconds)
    return (
        None
        if dist is None
        else {
            "p50_ms": dist.p50_ms,
            "p99_ms": dist.p99_ms,
            "max_ms": dist.max_ms,
            "samples": dist.samples,
        }
    )


def _stored_objects(endpoint: S3Endpoint, bucket: str) -> dict[str, Any]:
    """Sizes of every object in ``bucket``; then empty and delete it to keep the server lean."""
    client = endpoint.client()
    sizes: list[int] = []
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            sizes.append(int(obj["Size"]))
            keys.append(str(obj["Key"]))
    for start in range(0, len(keys), 1000):
        client.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True},
        )
    client.delete_bucket(Bucket=bucket)
    return {"objects": len(sizes), "stored_bytes": sum(sizes), "object_sizes": sizes}


def main() -> None:
    spec = RunSpec.from_json(json.load(sys.stdin))
    result: dict[str, Any]
    if spec.kind in ("ours", "ours-decoded", "ours-raw"):
        result = asyncio.run(run_ours(spec))
    elif spec.kind in ("baseline", "baseline-bson"):
        result = run_baseline(spec)
    elif spec.kind == "s3-floor":
        result = asyncio.run(run_s3_floor(spec))
    else:
        result = run_stages(spec)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
