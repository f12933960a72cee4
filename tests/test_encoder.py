"""The encode stage: events grouped into partitions, rows and object bodies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rigatoni_s3 import ChangeEvent, Compression, KeyGenerationStrategy, SerializationFormat
from rigatoni_s3._encoder import Encoder
from rigatoni_s3.compression import codec_for
from rigatoni_s3.formats import serializer_for
from rigatoni_s3.keys import PartitionKey, partition_of

NOW = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)


def encoder(strategy: KeyGenerationStrategy) -> Encoder:
    return Encoder(
        serializer_for(SerializationFormat.JSON, Compression.NONE),
        codec_for(Compression.NONE),
        strategy,
    )


@pytest.mark.parametrize("strategy", list(KeyGenerationStrategy))
@pytest.mark.parametrize(
    "when",
    [
        datetime(2025, 1, 15, 9, 59, 59, 999000, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),  # just before the epoch
        datetime(1969, 12, 31, 0, 0, 0, tzinfo=UTC),
        None,  # no cluster_time: the time of the write decides
    ],
)
def test_prepare_partitions_with_keys_partition_of(
    strategy: KeyGenerationStrategy, when: datetime | None
) -> None:
    """The encoder puts each event in the partition keys.partition_of gives it."""
    event = ChangeEvent("insert", "shop", "users", {"_id": 1}, cluster_time=when)
    prepared = encoder(strategy).prepare([event], NOW)
    assert list(prepared.partitions) == [partition_of(strategy, "users", when, NOW)]


def test_an_instant_before_the_epoch_belongs_to_its_own_hour() -> None:
    """Half a second before 1970 is in the last hour of 1969, not the first of 1970."""
    when = datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)
    event = ChangeEvent("insert", "shop", "users", {"_id": 1}, cluster_time=when)
    prepared = encoder(KeyGenerationStrategy.HIVE_PARTITIONED).prepare([event], NOW)
    hour_start = int((when - timedelta(minutes=59, seconds=59.5)).timestamp())
    assert list(prepared.partitions) == [PartitionKey("users", hour_start)]
