"""Compression: the same change events as JSON Lines, plain, gzip and zstd, side by side.

    python examples/s3_with_compression.py
    python examples/s3_with_compression.py --endpoint-url http://127.0.0.1:4566

Compression applies to whole objects: the key gets ``.gz`` or ``.zst`` and the
object a ``Content-Encoding`` header. zstd needs ``pip install 'rigatoni-s3[zstd]'``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from _common import (
    StoredObject,
    Target,
    argument_parser,
    batches,
    compare,
    list_keys,
    open_target,
    read_objects,
    render_table,
    run_main,
    sample_events,
)

from rigatoni_s3 import Compression, KeyGenerationStrategy, S3Destination

CODECS = (Compression.NONE, Compression.GZIP, Compression.ZSTD)
COLUMNS = (
    "codec",
    "extension",
    "encoding",
    "objects",
    "events",
    "bytes",
    "bytes/event",
    "of plain",
)


async def write(target: Target, compression: Compression, events: Sequence[Any]) -> str:
    """Write ``events`` under ``compression/{codec}``; returns the writer id."""
    config = (
        target.builder()
        .prefix(f"compression/{compression.value}")
        .compression(compression)
        .key_strategy(KeyGenerationStrategy.DATE_PARTITIONED)
        .build()
    )
    async with S3Destination(config) as destination:
        for batch in batches(events, 500):
            await destination.write_batch(batch)
        return destination.writer_id


def main() -> int:
    args = argument_parser(__doc__, events=2000).parse_args()
    events = sample_events(args.events)
    stored: dict[Compression, list[StoredObject]] = {}
    with open_target(args) as target:
        print(f"writing {len(events):,} change events to {target}, three times")
        client = target.client()
        for compression in CODECS:
            writer_id = asyncio.run(write(target, compression, events))
            prefix = f"compression/{compression.value}"
            keys = list_keys(client, target.bucket, prefix, writer_id)
            stored[compression] = read_objects(client, target.bucket, keys)

    plain = sum(obj.size for obj in stored[Compression.NONE])
    rows: list[tuple[object, ...]] = []
    problems: list[str] = []
    for compression, objects in stored.items():
        size = sum(obj.size for obj in objects)
        read_back = sum(len(obj.records) for obj in objects)
        first = objects[0] if objects else None
        rows.append(
            (
                compression.name,
                first.key.rsplit("/", 1)[-1].split(".", 1)[-1] if first else "-",
                first.content_encoding if first and first.content_encoding else "-",
                len(objects),
                read_back,
                size,
                size / max(read_back, 1),
                f"{size / plain:.1%}" if plain else "-",
            )
        )
        problems += compare(events, objects)
    print(render_table(COLUMNS, rows))
    for problem in problems[:10]:
        print(f"  {problem}", file=sys.stderr)
    if not problems:
        print(f"every codec: {len(events):,} events read back intact")
    return 1 if problems else 0


if __name__ == "__main__":
    run_main(main)
