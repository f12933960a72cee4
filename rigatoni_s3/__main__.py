"""Command line.

- ``python -m rigatoni_s3 replay DIR`` uploads saved dead letters;
- ``python -m rigatoni_s3 iceberg-orphans`` lists Parquet objects no Iceberg snapshot references.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from rigatoni_s3.config import S3Config
from rigatoni_s3.deadletter import load_dead_letters, replay_dead_letters
from rigatoni_s3.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rigatoni_s3", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="upload the dead letters saved in DIR")
    replay.add_argument("directory", help="the destination's dead_letter_dir")
    replay.add_argument(
        "--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    )
    replay.add_argument("--endpoint-url", default=os.environ.get("S3_ENDPOINT_URL"))
    replay.add_argument("--force-path-style", action="store_true")
    replay.add_argument("--max-retries", type=int, default=5)
    orphans = commands.add_parser(
        "iceberg-orphans",
        help="list Parquet objects under the prefix that no snapshot of the table references",
    )
    orphans.add_argument("--bucket", required=True)
    orphans.add_argument("--prefix", default="")
    orphans.add_argument("--table", required=True, help="namespace.table")
    orphans.add_argument(
        "--catalog",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a catalog property, as load_catalog takes it (repeat it: --catalog type=sql ...)",
    )
    orphans.add_argument("--catalog-name", default="default")
    orphans.add_argument(
        "--older-than",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="only objects last modified longer ago than this (default: an hour)",
    )
    orphans.add_argument(
        "--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    )
    orphans.add_argument("--endpoint-url", default=os.environ.get("S3_ENDPOINT_URL"))
    orphans.add_argument("--force-path-style", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.command == "iceberg-orphans":
        return _orphans(args)

    letters = load_dead_letters(Path(args.directory))
    if not letters:
        print(f"no dead letters in {args.directory}")
        return 0
    try:
        config = S3Config(
            bucket=letters[0].bucket,
            region=args.region or "",
            endpoint_url=args.endpoint_url,
            force_path_style=args.force_path_style,
            max_retries=args.max_retries,
        )
    except ConfigError as exc:
        print(f"error: {exc} (use --region or AWS_REGION)", file=sys.stderr)
        return 2
    result = asyncio.run(replay_dead_letters(args.directory, config))
    print(f"uploaded {result.uploaded} object(s); {len(result.failed)} still saved")
    for error in result.failed:
        print(f"  {error}", file=sys.stderr)
    return 1 if result.failed else 0


def _orphans(args: argparse.Namespace) -> int:
    from rigatoni_s3.config import IcebergConfig
    from rigatoni_s3.errors import CatalogError
    from rigatoni_s3.iceberg import find_orphans

    try:
        properties = dict(item.split("=", 1) for item in args.catalog)
        config = S3Config(
            bucket=args.bucket,
            prefix=args.prefix,
            region=args.region or "",
            endpoint_url=args.endpoint_url,
            force_path_style=args.force_path_style,
            format="parquet",
            iceberg=IcebergConfig(
                catalog=properties, table=args.table, catalog_name=args.catalog_name
            ),
        )
    except ValueError as exc:  # ConfigError, or a --catalog without '='
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        keys = asyncio.run(find_orphans(config, older_than=args.older_than))
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key in keys:
        print(f"s3://{config.bucket}/{key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
