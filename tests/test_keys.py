"""Object keys: exact strings for every strategy, and escaping of hostile names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rigatoni_s3 import KeyGenerationStrategy as K
from rigatoni_s3.keys import (
    NULL_COLLECTION,
    PartitionKey,
    escape_segment,
    file_name,
    object_key,
    partition_of,
)

WHEN = datetime(2025, 1, 15, 10, 42, 7, tzinfo=UTC)
FALLBACK = datetime(2000, 1, 1, tzinfo=UTC)
"""The write time; unused, since every event here has a cluster_time."""
NAME = file_name(1736937727000, "w1", 7, "jsonl")


def key(strategy: K, prefix: str = "events", collection: str | None = "users") -> str:
    return object_key(prefix, strategy, partition_of(strategy, collection, WHEN, FALLBACK), NAME)


def test_file_name_is_time_writer_sequence_extension() -> None:
    """{ms}-{writer}-{sequence:06d}.{ext}."""
    assert NAME == "1736937727000-w1-000007.jsonl"


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (K.HIVE_PARTITIONED, "events/collection=users/year=2025/month=01/day=15/hour=10/" + NAME),
        (K.DATE_HOUR_PARTITIONED, "events/users/2025/01/15/10/" + NAME),
        (K.DATE_PARTITIONED, "events/users/2025/01/15/" + NAME),
        (K.COLLECTION_BASED, "events/users/" + NAME),
        (K.FLAT, "events/users_" + NAME),
    ],
)
def test_each_strategy_matches_the_specification(strategy: K, expected: str) -> None:
    """Keys follow the patterns of the specification exactly."""
    assert key(strategy) == expected


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (K.HIVE_PARTITIONED, "collection=users/year=2025/month=01/day=15/hour=10/" + NAME),
        (K.DATE_HOUR_PARTITIONED, "users/2025/01/15/10/" + NAME),
        (K.FLAT, "users_" + NAME),
    ],
)
def test_empty_prefix_is_left_out(strategy: K, expected: str) -> None:
    """Without a prefix there is no leading slash."""
    assert key(strategy, prefix="") == expected


def test_partition_buckets_by_hour_or_day() -> None:
    """Events in the same hour share a partition; the date strategy groups by day."""
    later = datetime(2025, 1, 15, 10, 59, 59, tzinfo=UTC)
    next_hour = datetime(2025, 1, 15, 11, 0, 0, tzinfo=UTC)
    hourly = K.DATE_HOUR_PARTITIONED
    assert partition_of(hourly, "c", WHEN, FALLBACK) == partition_of(hourly, "c", later, FALLBACK)
    assert partition_of(hourly, "c", WHEN, FALLBACK) != partition_of(
        hourly, "c", next_hour, FALLBACK
    )
    assert partition_of(K.DATE_PARTITIONED, "c", WHEN, FALLBACK) == partition_of(
        K.DATE_PARTITIONED, "c", next_hour, FALLBACK
    )
    assert partition_of(K.COLLECTION_BASED, "c", WHEN, FALLBACK) == PartitionKey("c", None)


def test_hour_is_taken_in_utc() -> None:
    """A non-UTC time lands in its UTC hour."""
    from datetime import timedelta, timezone

    local = datetime(2025, 1, 15, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    partition = partition_of(K.HIVE_PARTITIONED, "c", local, FALLBACK)
    assert "hour=10" in object_key("", K.HIVE_PARTITIONED, partition, NAME)


@pytest.mark.parametrize(
    ("name", "segment"),
    [
        ("a/b", "a%2Fb"),
        ("..", "%2E%2E"),
        ("a..b", "a%2E%2Eb"),
        (".", "%2E"),
        ("year=2020", "year%3D2020"),
        ("tab\there", "tab%09here"),
        ("100%", "100%25"),
        ("system.profile", "system.profile"),
        ("ünïcode", "ünïcode"),
    ],
)
def test_collection_names_are_escaped(name: str, segment: str) -> None:
    """Separators, traversal, '=' and control characters are %-escaped."""
    assert escape_segment(name) == segment


def test_missing_collection_uses_the_hive_null_partition() -> None:
    """Events without a collection (dropDatabase) still get a valid key."""
    assert key(K.HIVE_PARTITIONED, collection=None).startswith(
        f"events/collection={NULL_COLLECTION}/"
    )


@given(st.text(min_size=1, max_size=40))
def test_no_collection_name_escapes_its_prefix(name: str) -> None:
    """Whatever the name, the key stays under the prefix with the expected depth."""
    for strategy in K:
        result = key(strategy, collection=name)
        assert result.startswith("events/")
        segments = result.split("/")
        assert ".." not in segments
        assert "." not in segments
        expected_depth = {
            K.HIVE_PARTITIONED: 7,
            K.DATE_HOUR_PARTITIONED: 7,
            K.DATE_PARTITIONED: 6,
            K.COLLECTION_BASED: 3,
            K.FLAT: 2,
        }
        assert len(segments) == expected_depth[strategy]
        if strategy is K.HIVE_PARTITIONED:
            assert segments[1].count("=") == 1


def test_readme_example_keys_are_what_the_code_produces() -> None:
    """The README's table of real keys matches object_key for every strategy."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| `(events/[^`]+)` \|$", readme, flags=re.MULTILINE))
    assert set(rows) == {strategy.name for strategy in K}
    when = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)
    name = file_name(1736937000000, "3fa2b0c41d9e", 1, "jsonl.zst")
    for strategy in K:
        assert rows[strategy.name] == object_key(
            "events", strategy, partition_of(strategy, "users", when, FALLBACK), name
        )
