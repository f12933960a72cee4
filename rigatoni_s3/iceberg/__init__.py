"""Apache Iceberg tables over the Parquet objects (needs the ``iceberg`` extra).

With ``S3Config(format=PARQUET, iceberg=IcebergConfig(...))`` each object the
destination writes is registered with an Iceberg table, in batched commits that
carry the consumer's resume token (snapshot summary and table property). The pieces:

- :mod:`rigatoni_s3.iceberg._schema`: the envelope in Iceberg types, the partition
  spec of each key layout, and what makes an existing table compatible;
- :mod:`rigatoni_s3.iceberg._table`: the pyiceberg calls (blocking, in a thread);
- :mod:`rigatoni_s3.iceberg._committer`: when to commit, and what.

Objects uploaded but never committed (a process that died, a ``close()`` whose
commit failed) are not part of the table and never will be: the events in them are
after the committed resume token, so a restart writes them again into new objects.
:func:`find_orphans` lists such leftovers for clean-up.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3

from rigatoni_s3._uploader import open_client
from rigatoni_s3.config import S3Config

__all__ = ["find_orphans"]

_OBJECT_NAME = re.compile(r"(^|/|_)\d+-[a-z0-9-]+-\d{6,}\.parquet$")
"""The file names the destination gives its Parquet objects (see :func:`keys.file_name`)."""


async def find_orphans(config: S3Config, *, older_than: float = 3600.0) -> list[str]:
    """Keys of Parquet objects under ``config.prefix`` that no snapshot of the table references.

    Only objects named the way a destination names them count, and only those last
    modified more than ``older_than`` seconds ago: a younger object may still be
    waiting for its writer's next commit. Deleting what this returns is safe once no
    writer stays uncommitted that long (``commit_interval`` plus any catalog outage).
    """
    if config.iceberg is None:
        raise ValueError("find_orphans needs an Iceberg table (S3Config.iceberg)")
    from rigatoni_s3.iceberg._table import IcebergTable

    def referenced() -> set[str]:
        return IcebergTable.load(config).referenced_paths()

    in_table = await asyncio.to_thread(referenced)
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
    prefix = f"{config.prefix}/" if config.prefix else ""
    orphans: list[str] = []
    session = aioboto3.Session()
    async with open_client(session, config) as client:
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=config.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if _is_orphan(item, in_table, config.bucket, cutoff):
                    orphans.append(item["Key"])
    return sorted(orphans)


def _is_orphan(item: dict[str, Any], in_table: set[str], bucket: str, cutoff: datetime) -> bool:
    key: str = item["Key"]
    return (
        _OBJECT_NAME.search(key) is not None
        and f"s3://{bucket}/{key}" not in in_table
        and item["LastModified"] < cutoff
    )
