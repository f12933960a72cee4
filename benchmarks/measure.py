"""What one benchmark run measures, and the small tools that measure it.

Shared by the parent (``run.py``) and the child that does the work (``worker.py``):
the run's spec and result travel between them as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

RunKind = Literal[
    "ours", "baseline", "s3-floor", "stages", "baseline-bson", "ours-decoded", "ours-raw"
]


@attrs.frozen(kw_only=True)
class RunSpec:
    """One measured run, as the parent asks a child process for it."""

    kind: RunKind
    endpoint_url: str
    bucket: str
    events: int
    batch_size: int = 1000
    format: str = "json"
    compression: str = "zstd"
    pool_size: int = 20_000
    hours: int = 4
    seed: int = 20250303
    gzip_level: int = 9
    """Baseline only: ``gzip.compress``'s own default, what naive code gets."""
    object_sizes: tuple[int, ...] = ()
    """S3 floor only: the object sizes to PUT."""
    concurrency: int = 8
    """S3 floor only: PUTs in flight, as ``max_concurrent_uploads``."""
    options: dict[str, Any] = attrs.Factory(dict)
    """Ours only: extra S3Config keywords (``--set``), e.g. ``max_batch_events``."""
    switch_interval: float | None = None
    """Ours only: ``sys.setswitchinterval`` for the run (None keeps Python's 5 ms)."""
    profile_path: str | None = None
    """Ours only: write a cProfile of the event loop and encode threads here."""
    compress_floor: bool = False
    """Ours only: after the run, time the codec alone on the run's uncompressed objects."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        data = dict(data)
        data["object_sizes"] = tuple(data.get("object_sizes", ()))
        return cls(**data)


@attrs.frozen
class Distribution:
    """p50 / p99 / max of a set of durations, in milliseconds."""

    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Distribution | None:
        if not seconds:
            return None
        ordered = sorted(seconds)
        return cls(
            percentile(ordered, 50) * 1000,
            percentile(ordered, 99) * 1000,
            ordered[-1] * 1000,
            len(ordered),
        )


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class LoopLagMonitor:
    """How late the event loop runs a task that sleeps ``interval`` seconds, over and over.

    A writer that blocks the loop (encoding, hashing a body) shows up here as
    lag, which is what every other task of the application would suffer.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _tick(self) -> None:
        clock = time.perf_counter
        while True:
            start = clock()
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, clock() - start - self.interval))


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_kib() -> tuple[int, int]:
    """(current RSS, peak RSS since start or the last reset), in KiB, from /proc."""
    values: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def ru_maxrss_kib() -> int:
    """``getrusage`` peak RSS; on Linux it can include the parent's peak inherited at exec."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of another process, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")
