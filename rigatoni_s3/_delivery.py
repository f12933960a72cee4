"""What becomes of a delivered buffer: written, kept for retry, or saved as a dead letter.

A written object frees its memory and settles its tickets. A failed one never drops
its events: the buffer is kept and sent again by the next ``flush``/``close``, by
a writer waiting for memory, or by a background round after ``retry_max_delay``;
with ``dead_letter_dir`` set it is saved to disk instead. Either way a caller hears
of the error: a flush waiting on those events, a writer blocked on memory (for
errors that waiting cannot cure), or else the next call, once.

A crashed flusher (a bug) is remembered too, and raised to every later caller as a
fresh copy, so its traceback does not grow with each raise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from rigatoni_s3._buffer import BufferSet, PartitionBuffer
from rigatoni_s3._encoder import EncodedObject
from rigatoni_s3._flusher import Flusher
from rigatoni_s3._progress import DeliveryProgress
from rigatoni_s3.deadletter import save_dead_letter
from rigatoni_s3.errors import (
    DeadLetteredError,
    DeliveryError,
    RetriesExhaustedError,
    UploadError,
)
from rigatoni_s3.stats import Counters

log = logging.getLogger("rigatoni_s3.destination")
"""The facade's logger: this module is part of it, and users filter on that name."""


class Deliveries:
    """Settles every delivery and owns the failures: kept buffers and unreported errors."""

    def __init__(
        self,
        *,
        buffers: BufferSet,
        progress: DeliveryProgress,
        flusher: Flusher,
        counters: Counters,
        bucket: str,
        dead_letter_dir: Path | None,
        retry_pause: float,
        running: Callable[[], bool],
        executor: Executor,
        on_written: Callable[[PartitionBuffer, EncodedObject], None] | None = None,
    ) -> None:
        """``on_written`` sees each object just written, before its events settle."""
        self._buffers = buffers
        self._progress = progress
        self._flusher = flusher
        self._counters = counters
        self._bucket = bucket
        self._dead_letter_dir = dead_letter_dir
        self._retry_pause = retry_pause
        self._running = running
        self._executor = executor
        self._on_written = on_written
        self._failed: list[PartitionBuffer] = []
        self._pending_error: DeliveryError | None = None
        self._dead_letters: list[tuple[int, UploadError]] = []
        self._crash: DeliveryError | None = None
        self._retry_round: asyncio.TimerHandle | None = None
        self._flush_called_at = float("-inf")

    # -- outcomes -------------------------------------------------------------------------

    def written(
        self, buffer: PartitionBuffer, obj: EncodedObject, attempts: int, latency: float
    ) -> None:
        """The object is in S3 after ``attempts`` requests in all: count it, free its
        memory, settle its events."""
        counters = self._counters
        counters.retries += attempts - buffer.attempts - 1
        buffer.attempts = attempts
        counters.objects_written += 1
        counters.events_uploaded += buffer.events
        counters.bytes_uploaded += len(obj.body)
        counters.bytes_uploaded_raw += obj.raw_bytes
        counters.latencies.append(latency)
        if self._on_written is not None:
            self._on_written(buffer, obj)
        self._done(buffer)
        log.debug(
            "object written",
            extra={
                "bucket": self._bucket,
                "key": buffer.key,
                "events": buffer.events,
                "bytes": len(obj.body),
                "raw_bytes": obj.raw_bytes,
                "attempt": buffer.attempts,
            },
        )

    def encoding_failed(self, buffer: PartitionBuffer, exc: Exception) -> None:
        """Rows accepted earlier did not become an object (a bug): keep them, tell a caller."""
        error = UploadError(
            self._bucket, buffer.key, buffer.attempts, buffer.events, f"encoding failed: {exc!r}"
        )
        error.__cause__ = exc
        self._keep_for_retry(buffer, error)

    async def upload_failed(
        self,
        buffer: PartitionBuffer,
        obj: EncodedObject,
        error: UploadError,
        started: float,
    ) -> None:
        """The upload gave up: resubmit, save as a dead letter, or keep for retry."""
        self._counters.retries += error.attempts - buffer.attempts - 1
        self._counters.failures += 1
        buffer.attempts = error.attempts
        if isinstance(error, RetriesExhaustedError) and started < self._flush_called_at:
            # Its retries began before someone asked for a flush (say, once S3 came
            # back): that flush deserves a full round of attempts, not a stale verdict.
            self._flusher.submit(buffer)
            return
        if self._dead_letter_dir is not None and await self._save_dead_letter(buffer, obj, error):
            # Safe on disk, but not in S3: the next call still raises an error.
            self._dead_letters.append((buffer.events, error))
        else:
            self._keep_for_retry(buffer, error)

    def crashed(self, exc: BaseException) -> None:
        """The flusher died (a bug): fail everyone waiting, and every later call."""
        crash = DeliveryError(f"the background flusher stopped unexpectedly: {exc!r}")
        crash.__cause__ = exc
        self._crash = crash
        self._progress.fail_waiters(0, crash)
        self._buffers.fail_waiters(crash)

    # -- what callers hear ----------------------------------------------------------------

    def raise_if_crashed(self) -> None:
        if self._crash is not None:
            copy = DeliveryError(*self._crash.args)
            raise copy from self._crash.__cause__

    def raise_unreported(self) -> None:
        """Raise, once, an error that no caller has heard of yet (for ``write_batch``)."""
        self.raise_if_crashed()
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        self.raise_dead_lettered()

    def raise_dead_lettered(self) -> None:
        """Report, once, the objects that went to ``dead_letter_dir`` instead of S3."""
        if self._dead_letters:
            saved, self._dead_letters = self._dead_letters, []
            error = DeadLetteredError(
                str(self._dead_letter_dir), len(saved), sum(events for events, _ in saved)
            )
            raise error from saved[0][1]

    def flushed(self) -> None:
        """Everything before the flush is written: older errors are moot."""
        self._pending_error = None

    # -- trying again ---------------------------------------------------------------------

    def flush_requested(self, at: float) -> None:
        """A flush began at loop time ``at``: send every kept buffer again."""
        self._flush_called_at = at
        self.resubmit_failed()

    def resubmit_failed(self) -> None:
        failed, self._failed = self._failed, []
        for buffer in failed:
            self._flusher.submit(buffer)

    @property
    def undelivered(self) -> list[PartitionBuffer]:
        """Buffers that failed and are held in memory, oldest first."""
        return list(self._failed)

    def stop(self) -> None:
        if self._retry_round is not None:
            self._retry_round.cancel()
            self._retry_round = None

    # -- internals ------------------------------------------------------------------------

    def _done(self, buffer: PartitionBuffer) -> None:
        """The buffer's events are safe: settle their tickets and free their memory."""
        self._buffers.release(buffer.nbytes)
        self._progress.settle(buffer.tickets)

    async def _save_dead_letter(
        self,
        buffer: PartitionBuffer,
        obj: EncodedObject,
        error: UploadError,
    ) -> bool:
        """Save the object to ``dead_letter_dir``; True once it is safely on disk."""
        assert self._dead_letter_dir is not None
        loop = asyncio.get_running_loop()
        try:
            path = await loop.run_in_executor(
                self._executor,
                save_dead_letter,
                self._dead_letter_dir,
                self._bucket,
                buffer.key,
                obj,
                str(error),
            )
        except OSError as exc:
            log.error("could not save dead letter: %s", exc, extra={"key": buffer.key})
            return False
        log.error(
            "object saved as dead letter: %s",
            error,
            extra={"key": buffer.key, "events": buffer.events, "path": str(path)},
        )
        self._counters.events_dead_lettered += buffer.events
        self._done(buffer)
        return True

    def _keep_for_retry(self, buffer: PartitionBuffer, error: UploadError) -> None:
        """Hold on to a failed buffer: the next flush, or a background round, tries again."""
        self._failed.append(buffer)
        log.error(
            "object not written, events kept for retry: %s",
            error,
            extra={
                "bucket": error.bucket,
                "key": error.key,
                "events": error.events,
                "attempt": error.attempts,
            },
        )
        self._report(error, first_blocked=min(buffer.tickets))
        if isinstance(error, RetriesExhaustedError) and self._retry_round is None:
            # The server may come back: try again after a pause, so that writers blocked
            # on memory recover without anyone calling flush().
            loop = asyncio.get_running_loop()
            self._retry_round = loop.call_later(self._retry_pause, self._retry_failed_round)

    def _retry_failed_round(self) -> None:
        self._retry_round = None
        if self._running():
            self.resubmit_failed()

    def _report(self, error: UploadError, first_blocked: int) -> None:
        """Make sure a caller hears of ``error``.

        Told are: flushes waiting on the failed events; writers blocked on memory, but
        only for errors that waiting cannot cure (a missing bucket, denied access);
        otherwise the next call to ``write_batch``/``flush``/``close``.
        """
        told = self._progress.fail_waiters(first_blocked, error)
        if not isinstance(error, RetriesExhaustedError):
            told = self._buffers.fail_waiters(error) or told
        if not told and self._pending_error is None:
            self._pending_error = error
