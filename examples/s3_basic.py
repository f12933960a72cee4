"""The basic example: change events to S3 as JSON Lines, then read back.

    python examples/s3_basic.py                            # embedded S3 server
    S3_ENDPOINT_URL=http://127.0.0.1:9000 python examples/s3_basic.py
    S3_BUCKET=my-data-lake python examples/s3_basic.py --aws

The defaults write one object per collection and hour under ``mongodb/events``.
"""

from __future__ import annotations

import asyncio
import json
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
    render_tree,
    run_main,
    sample_events,
)

from rigatoni_s3 import S3Config, S3Destination

PREFIX = "mongodb/events"


async def write(target: Target, events: Sequence[dict[str, Any]]) -> str:
    """Write ``events``; returns the writer id that is part of every file name."""
    builder = S3Config.builder().bucket(target.bucket).region(target.region).prefix(PREFIX)
    if target.endpoint is not None:  # MinIO, LocalStack or the embedded server, not AWS
        builder = (
            builder.endpoint_url(target.endpoint.url)
            .force_path_style(True)
            .credentials(target.endpoint.access_key_id, target.endpoint.secret_access_key)
        )
    config = builder.build()

    async with S3Destination(config) as destination:  # leaving the block drains and closes
        for batch in batches(events, 200):  # as a change stream hands them over
            await destination.write_batch(batch)
        await destination.flush()  # from here on, every event above is in S3
        return destination.writer_id


def main() -> int:
    args = argument_parser(__doc__, events=1000).parse_args()
    events = sample_events(args.events)
    with open_target(args) as target:
        print(f"writing {len(events):,} change events to {target}")
        writer_id = asyncio.run(write(target, events))
        client = target.client()
        keys = list_keys(client, target.bucket, PREFIX, writer_id)
        objects = read_objects(client, target.bucket, keys)

    print(render_tree(keys, f"{PREFIX}/"))
    if objects and objects[0].records:
        print(f"a record: {json.dumps(objects[0].records[0], ensure_ascii=False)[:300]}…")
    read_back = sum(len(obj.records) for obj in objects)
    print(f"read back {read_back:,} of {len(events):,} events from {len(keys)} objects")
    problems = compare(events, objects)
    for problem in problems[:10]:
        print(f"  {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    run_main(main)
