"""Every format under every key strategy, the resulting keys drawn as trees.

    python examples/s3_advanced.py
    python examples/s3_advanced.py --compression gzip
    python examples/s3_advanced.py --endpoint-url http://127.0.0.1:9000

For each key strategy, four destinations (JSON Lines, CSV, Parquet, Avro) write
the same events concurrently under one prefix, so each partition folder ends up
holding one file per format. Parquet and Avro apply the compression inside the
file (column and block codec) and keep their plain extension.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from _common import (
    Target,
    argument_parser,
    batches,
    compare,
    list_keys,
    open_target,
    read_objects,
    render_table,
    render_tree,
    run_main,
    sample_events,
)

from rigatoni_s3 import Compression, KeyGenerationStrategy, S3Destination, SerializationFormat


async def write(
    target: Target,
    strategy: KeyGenerationStrategy,
    fmt: SerializationFormat,
    compression: Compression,
    events: Sequence[Any],
) -> str:
    """One destination's run; returns its writer id."""
    config = (
        target.builder()
        .prefix(f"advanced/{strategy.value}")
        .format(fmt)
        .compression(compression)
        .key_strategy(strategy)
        .max_batch_events(100)  # an object holds at most 100 events
        .flush_interval(5.0)  # ... and waits at most 5 s after its first event
        .max_retries(5)  # throttling and 5xx are retried with backoff
        .build()
    )
    async with S3Destination(config) as destination:
        for batch in batches(events, 250):
            await destination.write_batch(batch)
        return destination.writer_id


async def write_all_formats(
    target: Target, strategy: KeyGenerationStrategy, compression: Compression, events: Sequence[Any]
) -> dict[SerializationFormat, str]:
    """The four formats at once, each with its own destination."""
    formats = list(SerializationFormat)
    writer_ids = await asyncio.gather(
        *(write(target, strategy, fmt, compression, events) for fmt in formats)
    )
    return dict(zip(formats, writer_ids, strict=True))


def main() -> int:
    parser = argument_parser(__doc__, events=800)
    parser.add_argument(
        "--compression",
        choices=[c.value for c in Compression],
        default="zstd",
        help="compression for every format (default: %(default)s)",
    )
    args = parser.parse_args()
    compression = Compression(args.compression)
    events = sample_events(args.events)
    rows: list[tuple[object, ...]] = []
    problems: list[str] = []
    read_back = 0
    with open_target(args) as target:
        print(f"writing {len(events):,} change events to {target}, 20 times")
        client = target.client()
        for strategy in KeyGenerationStrategy:
            writer_ids = asyncio.run(write_all_formats(target, strategy, compression, events))
            prefix = f"advanced/{strategy.value}"
            all_keys: list[str] = []
            counts: list[object] = [strategy.name]
            for writer_id in writer_ids.values():
                keys = list_keys(client, target.bucket, prefix, writer_id)
                objects = read_objects(client, target.bucket, keys)
                problems += compare(events, objects)
                read_back += sum(len(obj.records) for obj in objects)
                all_keys += keys
                counts.append(len(keys))
            rows.append(tuple(counts))
            print(f"\n{strategy.name}")
            print(render_tree(all_keys, f"{prefix}/", limit=1))

    print("\nobjects written")
    print(render_table(["strategy", *(fmt.name for fmt in SerializationFormat)], rows))
    expected = len(events) * len(rows) * len(SerializationFormat)
    print(f"read back {read_back:,} of {expected:,} events")
    for problem in problems[:10]:
        print(f"  {problem}", file=sys.stderr)
    return 1 if problems or read_back != expected else 0


if __name__ == "__main__":
    run_main(main)
