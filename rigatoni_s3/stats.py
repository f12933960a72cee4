"""Counters of a destination, read as a frozen snapshot with ``S3Destination.stats()``."""

from __future__ import annotations

import statistics
from collections import deque

import attrs

LATENCY_WINDOW = 1024
"""Upload latencies kept for the summary: the most recent objects only."""


@attrs.frozen
class LatencySummary:
    """Seconds per object upload (all attempts included) over the recent window."""

    count: int
    mean: float
    p50: float
    p99: float
    max: float


@attrs.frozen
class DestinationStats:
    """What a destination has done since it was created."""

    events_accepted: int
    """Events taken by ``write_batch``."""
    events_rejected: int
    """Events refused as invalid (``RejectedEventsError``)."""
    type_mismatches: int
    """Values of accepted events written as null in a typed column because they could
    not take its type (the document column still holds them)."""
    events_buffered: int
    """Accepted events not yet written (in buffers, uploading, or kept after a failure)."""
    events_uploaded: int
    events_dead_lettered: int
    bytes_buffered: int
    """Bytes counted against ``max_buffer_bytes`` right now."""
    bytes_uploaded_raw: int
    """Encoded bytes of the written objects, before compression."""
    bytes_uploaded: int
    """Bytes stored in S3."""
    objects_written: int
    retries: int
    """Requests sent again after a transient failure."""
    failures: int
    """Objects whose upload exhausted its retries or failed for good (each time)."""
    upload_latency: LatencySummary | None
    """None until the first object is written."""
    commits: int = 0
    """Iceberg snapshots made (0 without Iceberg)."""
    objects_committed: int = 0
    """Objects made part of the Iceberg table."""
    events_committed: int = 0
    """Events in those objects: with Iceberg, what is durable."""
    commit_retries: int = 0
    """Commit attempts made again: after a conflict with another writer, or a failure."""
    commit_latency: LatencySummary | None = None
    """Seconds per successful Iceberg commit (the attempt that landed); None until one."""


@attrs.define
class Counters:
    """The mutable side, updated by the destination on the event loop."""

    events_accepted: int = 0
    events_rejected: int = 0
    type_mismatches: int = 0
    events_uploaded: int = 0
    events_dead_lettered: int = 0
    bytes_uploaded_raw: int = 0
    bytes_uploaded: int = 0
    objects_written: int = 0
    retries: int = 0
    failures: int = 0
    latencies: deque[float] = attrs.Factory(lambda: deque(maxlen=LATENCY_WINDOW))
    commits: int = 0
    objects_committed: int = 0
    events_committed: int = 0
    commit_retries: int = 0
    commit_latencies: deque[float] = attrs.Factory(lambda: deque(maxlen=LATENCY_WINDOW))

    def snapshot(self, bytes_buffered: int) -> DestinationStats:
        done = self.events_uploaded + self.events_dead_lettered
        return DestinationStats(
            events_accepted=self.events_accepted,
            events_rejected=self.events_rejected,
            type_mismatches=self.type_mismatches,
            events_buffered=self.events_accepted - done,
            events_uploaded=self.events_uploaded,
            events_dead_lettered=self.events_dead_lettered,
            bytes_buffered=bytes_buffered,
            bytes_uploaded_raw=self.bytes_uploaded_raw,
            bytes_uploaded=self.bytes_uploaded,
            objects_written=self.objects_written,
            retries=self.retries,
            failures=self.failures,
            upload_latency=_summary(list(self.latencies)),
            commits=self.commits,
            objects_committed=self.objects_committed,
            events_committed=self.events_committed,
            commit_retries=self.commit_retries,
            commit_latency=_summary(list(self.commit_latencies)),
        )


def _summary(samples: list[float]) -> LatencySummary | None:
    if not samples:
        return None
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return LatencySummary(
        len(samples), statistics.fmean(samples), statistics.median(ordered), p99, ordered[-1]
    )
