"""Consume a MongoDB change stream into S3, checkpointing only what is durable.

The recipe: resume from the saved token, write changes in batches, and save a
token only when ``on_durable`` reports it, i.e. once that change and every one
before it are in S3. A crash then never skips a change; at worst, changes after
the last checkpoint are written again (at-least-once; the ``resume_token``
column identifies duplicates).

Changes are read as raw BSON (``RawBSONDocument``): the driver hands over the bytes
it received instead of decoding each change into dicts, which costs more than
everything rigatoni-s3 does with an event. The destination reads the bytes itself,
writes exactly what it would write for the decoded change, and reports the raw
resume token, which ``watch(resume_after=...)`` takes as it is.

The stream asks for everything MongoDB can say about a change: the document after it
(``updateLookup``), the document before it where the collection records pre-images
(``fullDocumentBeforeChange``, MongoDB 6.0+), and ``$changeStreamSplitLargeEvent``
(6.0.9+/7.0), which splits a change larger than 16 MiB into fragments instead of
failing the stream; the destination joins the fragments back into one event.

    python examples/mongodb_change_stream.py --mongodb-uri mongodb://localhost:27017 \\
        --database shop --checkpoint ./checkpoint.json       # needs pymongo >= 4.9

Without a MongoDB server, ``--replay FILE`` reads recorded change-stream documents
(one Extended JSON document per line) instead, resuming after the checkpoint the
same way; ``--crash-after N`` exits abruptly half a second after the N-th change
(full objects land, partly filled buffers are lost), to watch a restart pick up
exactly where the durable position was.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from _common import argument_parser, open_target, run_main

from rigatoni_s3 import KeyGenerationStrategy, S3Destination

IDLE_SECONDS = 1.0

PIPELINE: list[dict[str, Any]] = [
    # Filtering stages ($match...) go before this one: it must be the last stage.
    {"$changeStreamSplitLargeEvent": {}},
]


class FileCheckpoint:
    """A resume token in a small JSON file, replaced atomically on every save."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Any:
        return json.loads(self.path.read_text())["resume_token"] if self.path.exists() else None

    def save(self, token: Mapping[str, Any]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        # A resume token is {"_data": "<hex>"}; a raw one reads as a mapping too.
        temporary.write_text(json.dumps({"resume_token": dict(token)}))
        os.replace(temporary, self.path)


async def pump(
    changes: AsyncIterator[Mapping[str, Any]],
    destination: S3Destination,
    *,
    batch_size: int = 500,
    crash_after: int | None = None,
) -> int:
    """Write changes in batches of ``batch_size``, or whatever arrived within IDLE_SECONDS."""
    batch: list[Mapping[str, Any]] = []
    written = 0
    iterator = aiter(changes)
    while True:
        try:
            change = (
                await asyncio.wait_for(anext(iterator), IDLE_SECONDS)
                if batch
                else await anext(iterator)
            )
        except StopAsyncIteration:
            break
        except TimeoutError:
            change = None
        if change is not None:
            batch.append(change)
        if batch and (change is None or len(batch) >= batch_size):
            await destination.write_batch(batch)
            written += len(batch)
            batch = []
            if crash_after is not None and written >= crash_after:
                await asyncio.sleep(0.5)
                os._exit(3)  # as abrupt as a killed process: nothing is flushed
    if batch:
        await destination.write_batch(batch)
        written += len(batch)
    return written


async def replay(path: Path, resume_after: Any) -> AsyncIterator[Mapping[str, Any]]:
    """Recorded changes, skipping up to and including ``resume_after`` like a resumed stream."""
    skipping = resume_after is not None
    for line in await asyncio.to_thread(_read_lines, path):
        change = _load_extended_json(line)
        if skipping:
            skipping = change["_id"] != resume_after
            continue
        yield _as_raw(change)
        await asyncio.sleep(0)


async def watch(uri: str, database: str, resume_after: Any) -> AsyncIterator[Mapping[str, Any]]:
    """The live change stream of a database (pymongo's asyncio API)."""
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(uri)
    raw = CodecOptions(document_class=RawBSONDocument)  # the driver decodes nothing
    try:
        stream = await client.get_database(database, codec_options=raw).watch(
            PIPELINE,
            resume_after=resume_after,
            full_document="updateLookup",
            full_document_before_change="whenAvailable",
        )
        async with stream:
            async for change in stream:
                yield change
    finally:
        await client.close()


def _as_raw(change: dict[str, Any]) -> Mapping[str, Any]:
    """A recorded change as the driver hands it over with raw codec options."""
    try:
        import bson
        from bson.raw_bson import RawBSONDocument
    except ImportError:  # without pymongo, the decoded form is written just the same
        return change
    return RawBSONDocument(bson.encode(change))


def _read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _load_extended_json(line: str) -> dict[str, Any]:
    try:
        from bson import json_util
    except ImportError:  # without pymongo the Extended JSON wrappers stay plain dicts
        document: dict[str, Any] = json.loads(line)
        return document
    loaded: dict[str, Any] = json_util.loads(line)
    return loaded


def main() -> int:
    parser = argument_parser(__doc__, events=0)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mongodb-uri", help="MongoDB connection string")
    source.add_argument(
        "--replay", type=Path, metavar="FILE", help="recorded change-stream documents"
    )
    parser.add_argument(
        "--database", default="shop", help="database to watch (default: %(default)s)"
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="file that holds the resume token"
    )
    parser.add_argument("--prefix", default="cdc", help="key prefix (default: %(default)s)")
    parser.add_argument(
        "--crash-after", type=int, metavar="N", help="exit abruptly after N changes"
    )
    parser.add_argument("--batch-size", type=int, default=500, help="changes per write_batch")
    parser.add_argument(
        "--object-events", type=int, default=10_000, help="events per object (max_batch_events)"
    )
    args = parser.parse_args()

    checkpoint = FileCheckpoint(args.checkpoint)
    resume_after = checkpoint.load()
    print(f"resuming after {resume_after}" if resume_after else "starting from the beginning")

    async def run() -> int:
        with open_target(args) as target:
            config = (
                target.builder()
                .prefix(args.prefix)
                .key_strategy(KeyGenerationStrategy.HIVE_PARTITIONED)
                .on_durable(checkpoint.save)
                .max_batch_events(args.object_events)
                .build()
            )
            if args.replay is not None:
                changes = replay(args.replay, resume_after)
            else:
                changes = watch(args.mongodb_uri, args.database, resume_after)
            async with S3Destination(config) as destination:
                written = await pump(
                    changes, destination, batch_size=args.batch_size, crash_after=args.crash_after
                )
            print(f"wrote {written} changes; checkpoint: {checkpoint.load()}")
            return 0

    return asyncio.run(run())


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    run_main(main)
