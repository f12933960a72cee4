"""S3Destination: the facade that takes change events and makes them durable in S3.

The life of an event, top to bottom in this file:

1. ``write_batch`` encodes the events into rows in the thread pool, grouped by
   partition (collection + hour, day...), rejecting bad events one by one.
2. It waits for room under ``max_buffer_bytes`` (backpressure), then appends the
   rows to their partition buffers and returns.
3. A buffer that is full, or whose ``flush_interval`` timer fires, is sealed: it
   gets its object key and joins the flusher's queue.
4. The flusher delivers it: serialize + compress in the thread pool, upload
   (conditional, retried), then settle delivery progress and release its memory.
5. ``flush`` seals everything and waits for the progress to catch up; ``close``
   does the same and shuts down.

A failed upload never drops its events: the buffer is kept and tried again by the
next ``flush``/``close`` or a background round (or saved to ``dead_letter_dir``),
and the error is raised to a caller.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import aioboto3

from rigatoni_s3._buffer import BufferSet, PartitionBuffer
from rigatoni_s3._encoder import EncodedObject, Encoder
from rigatoni_s3._flusher import Flusher
from rigatoni_s3._progress import DeliveryProgress
from rigatoni_s3._retry import GaveUp, RetryPolicy
from rigatoni_s3._uploader import S3Uploader, client_options, object_options
from rigatoni_s3.compression import codec_for
from rigatoni_s3.config import S3Config
from rigatoni_s3.deadletter import save_dead_letter
from rigatoni_s3.errors import (
    DeadLetteredError,
    DeliveryError,
    DestinationClosedError,
    RejectedEventsError,
    RetriesExhaustedError,
    UndeliveredError,
    UploadError,
)
from rigatoni_s3.events import ChangeEvent
from rigatoni_s3.formats import serializer_for
from rigatoni_s3.keys import file_name, object_key
from rigatoni_s3.stats import Counters, DestinationStats

log = logging.getLogger(__name__)

ENCODE_THREADS = 2
"""Encoding is CPU-bound and mostly holds the GIL; more threads than cores only add contention."""


class S3Destination:
    """Writes change events to S3 in batches, one object per partition buffer.

    Use it as an async context manager; leaving the block drains every buffer::

        async with S3Destination(config) as dest:
            await dest.write_batch(events)
    """

    def __init__(self, config: S3Config, *, session: aioboto3.Session | None = None) -> None:
        self.config = config
        self.writer_id = config.writer_id or secrets.token_hex(6)
        self._session = session
        self._encoder = Encoder(
            serializer_for(config.format, config.compression),
            codec_for(config.compression),
            config.key_strategy,
        )
        self._retry = RetryPolicy(
            config.max_retries, config.retry_base_delay, config.retry_max_delay
        )
        self._progress = DeliveryProgress(config.on_durable)
        self._buffers = BufferSet(
            max_batch_events=config.max_batch_events,
            max_batch_bytes=config.max_batch_bytes,
            max_buffer_bytes=config.max_buffer_bytes,
            flush_interval=config.flush_interval,
            on_sealed=self._on_sealed,
        )
        self._flusher = Flusher(self._deliver, config.max_concurrent_uploads, self._on_crash)
        self._failed: list[PartitionBuffer] = []
        self._pending_error: DeliveryError | None = None
        self._dead_letters: list[tuple[int, UploadError]] = []
        self._crash: DeliveryError | None = None
        self._retry_round: asyncio.TimerHandle | None = None
        self._flush_called_at = float("-inf")
        self._objects_sealed = 0
        self._counters = Counters()
        self._state = "new"
        self._start_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._stack = AsyncExitStack()
        self._executor: ThreadPoolExecutor | None = None
        self._uploader: S3Uploader | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the S3 client and start the flusher. ``write_batch`` calls it when needed.

        With ``check_conditional_writes`` (the default) this writes and deletes one
        empty probe object, so a missing bucket or denied writes fail here, at once.
        """
        async with self._start_lock:
            if self._state != "new":
                return
            session = self._session or aioboto3.Session()
            client = await self._stack.enter_async_context(
                session.client("s3", **client_options(self.config))
            )
            uploader = S3Uploader(
                client,
                self.config.bucket,
                self._retry.run,
                multipart_threshold=self.config.multipart_threshold,
                part_size=self.config.multipart_part_size,
                options=object_options(self.config),
                content_md5=self.config.checksum_algorithm == "MD5",
            )
            try:
                if self.config.check_conditional_writes:
                    await self._check_conditional_writes(uploader)
            except BaseException:
                await self._stack.aclose()
                raise
            self._uploader = uploader
            self._executor = ThreadPoolExecutor(
                ENCODE_THREADS, thread_name_prefix="rigatoni-s3-encode"
            )
            self._flusher.start()
            self._state = "running"
            log.info(
                "destination started",
                extra={
                    "bucket": self.config.bucket,
                    "prefix": self.config.prefix,
                    "writer_id": self.writer_id,
                },
            )

    async def _check_conditional_writes(self, uploader: S3Uploader) -> None:
        """Fail fast on a missing bucket or denied writes; warn if overwrites go unchecked."""
        parts = (self.config.prefix, "_rigatoni_s3", f"probe-{self.writer_id}")
        probe = "/".join(part for part in parts if part)
        try:
            honoured = await uploader.honours_conditional_writes(probe)
        except GaveUp as gave_up:
            raise uploader.translate(gave_up.cause, probe, gave_up.attempts, 0) from gave_up.cause
        if not honoured:
            log.warning(
                "the S3 server ignores If-None-Match: a writer sharing this writer_id could "
                "overwrite objects; keep writer ids unique per process",
                extra={"bucket": self.config.bucket, "writer_id": self.writer_id},
            )

    # -- 1-2. accepting events ------------------------------------------------------------

    async def write_batch(
        self, events: Iterable[ChangeEvent | Mapping[str, Any]], *, timeout: float | None = None
    ) -> None:
        """Buffer ``events``; returns once they are accepted (not yet durable).

        Either every valid event of the call is accepted or none is: a cancelled
        or timed-out call accepts nothing. Invalid events are rejected one by one
        with :class:`~rigatoni_s3.errors.RejectedEventsError` after the valid ones
        were accepted. If an earlier upload failed and nobody was told yet, that
        error is raised first and nothing is accepted.

        ``timeout`` bounds the wait for buffer room
        (:class:`~rigatoni_s3.errors.BackpressureTimeout`).
        """
        if isinstance(events, ChangeEvent | Mapping):
            raise TypeError(
                "write_batch takes an iterable of events; wrap a single event in a list"
            )
        self._raise_if_unwritable()
        await self.start()
        batch = list(events)
        if not batch:
            return
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(
            self._executor, self._encoder.prepare, batch, datetime.now(UTC)
        )
        if prepared.accepted:
            await self._buffers.reserve(prepared.nbytes, timeout, self._make_room)
            if self._state != "running":  # closed while we waited: the final flush is past
                self._buffers.release(prepared.nbytes)
                raise DestinationClosedError("the destination was closed while this write waited")
            ticket = self._progress.open(prepared.accepted, prepared.last_resume_token)
            self._buffers.add(ticket, prepared)
            self._counters.events_accepted += prepared.accepted
        if prepared.rejected:
            self._counters.events_rejected += len(prepared.rejected)
            raise RejectedEventsError(prepared.rejected, prepared.accepted)

    def _make_room(self, nbytes: int) -> None:
        """A writer is about to wait for memory: get the bytes it needs moving out."""
        self._resubmit_failed()
        in_flight = self._buffers.held_bytes - self._buffers.open_bytes
        deficit = self._buffers.held_bytes + nbytes - self.config.max_buffer_bytes
        if deficit > in_flight:
            self._buffers.seal_largest(deficit - in_flight)

    # -- 3. sealing -----------------------------------------------------------------------

    def _on_sealed(self, buffer: PartitionBuffer) -> None:
        self._objects_sealed += 1
        name = file_name(
            time.time_ns() // 1_000_000,
            self.writer_id,
            self._objects_sealed,
            self._encoder.extension,
        )
        buffer.key = object_key(
            self.config.prefix, self.config.key_strategy, buffer.partition, name
        )
        self._flusher.submit(buffer)

    # -- 4. delivering --------------------------------------------------------------------

    async def _deliver(self, buffer: PartitionBuffer) -> None:
        """Encode, upload, and account for one sealed buffer."""
        assert self._uploader is not None
        uploader = self._uploader
        loop = asyncio.get_running_loop()
        try:
            obj = await loop.run_in_executor(
                self._executor, self._encoder.encode, buffer.rows, buffer.nbytes
            )
        except Exception as exc:
            error = UploadError(
                self.config.bucket,
                buffer.key,
                buffer.attempts,
                buffer.events,
                f"encoding failed: {exc!r}",
            )
            error.__cause__ = exc
            self._keep_for_retry(buffer, error)
            return
        started = loop.time()
        try:
            attempts = await uploader.write(buffer.key, obj)
        except Exception as exc:
            gave_up = exc if isinstance(exc, GaveUp) else GaveUp(exc, 1)  # e.g. a botocore bug
            buffer.attempts += gave_up.attempts
            self._counters.retries += gave_up.attempts - 1
            self._counters.failures += 1
            error = uploader.translate(gave_up.cause, buffer.key, buffer.attempts, buffer.events)
            if isinstance(error, RetriesExhaustedError) and started < self._flush_called_at:
                # Its retries began before someone asked for a flush (say, once S3 came
                # back): that flush deserves a full round of attempts, not a stale verdict.
                self._flusher.submit(buffer)
                return
            if self.config.dead_letter_dir is not None and await self._save_dead_letter(
                buffer, obj, error
            ):
                # Safe on disk, but not in S3: the next call still raises an error.
                self._dead_letters.append((buffer.events, error))
            else:
                self._keep_for_retry(buffer, error)
            return
        buffer.attempts += attempts
        counters = self._counters
        counters.retries += attempts - 1
        counters.objects_written += 1
        counters.events_uploaded += buffer.events
        counters.bytes_uploaded += len(obj.body)
        counters.bytes_uploaded_raw += obj.raw_bytes
        counters.latencies.append(loop.time() - started)
        self._done(buffer)
        log.debug(
            "object written",
            extra={
                "bucket": uploader.bucket,
                "key": buffer.key,
                "events": buffer.events,
                "bytes": len(obj.body),
                "raw_bytes": obj.raw_bytes,
                "attempt": buffer.attempts,
            },
        )

    def _done(self, buffer: PartitionBuffer) -> None:
        """The buffer's events are safe: settle their tickets and free their memory."""
        self._buffers.release(buffer.nbytes)
        self._progress.settle(buffer.tickets)

    async def _save_dead_letter(
        self, buffer: PartitionBuffer, obj: EncodedObject, error: UploadError
    ) -> bool:
        """Save the object to ``dead_letter_dir``; True once it is safely on disk."""
        assert self.config.dead_letter_dir is not None
        loop = asyncio.get_running_loop()
        try:
            path = await loop.run_in_executor(
                self._executor,
                save_dead_letter,
                self.config.dead_letter_dir,
                self.config.bucket,
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
            self._retry_round = loop.call_later(
                self.config.retry_max_delay, self._retry_failed_round
            )

    def _retry_failed_round(self) -> None:
        self._retry_round = None
        if self._state == "running":
            self._resubmit_failed()

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

    def _resubmit_failed(self) -> None:
        failed, self._failed = self._failed, []
        for buffer in failed:
            self._flusher.submit(buffer)

    def _on_crash(self, exc: BaseException) -> None:
        crash = DeliveryError(f"the background flusher stopped unexpectedly: {exc!r}")
        crash.__cause__ = exc
        self._crash = crash
        self._progress.fail_waiters(0, crash)
        self._buffers.fail_waiters(crash)

    # -- 5. flushing and closing ----------------------------------------------------------

    async def flush(self) -> None:
        """Return once every event accepted before this call is durably in S3.

        Buffers are sealed regardless of their thresholds, and objects that failed
        before are tried again; an object whose attempts began before this call gets a
        fresh round. Raises the :class:`~rigatoni_s3.errors.DeliveryError` of an object
        that still cannot be written; its events stay buffered.
        """
        if self._crash is not None:
            raise self._crash
        if self._state == "new":
            return
        target = self._progress.last_ticket
        self._flush_called_at = asyncio.get_running_loop().time()
        self._buffers.seal_all()
        self._resubmit_failed()
        await self._progress.wait_for(target)
        self._pending_error = None  # whatever failed before is written now
        self._raise_dead_letter_error()

    async def close(self) -> None:
        """Drain everything and release the client. Idempotent.

        Raises :class:`~rigatoni_s3.errors.UndeliveredError` if some events could not
        be written; they are counted and their keys named there, never silently dropped.
        """
        if self._state in ("closing", "closed"):
            await self._closed.wait()
            return
        if self._state == "new":
            self._state = "closed"
            self._closed.set()
            return
        self._state = "closing"
        self._buffers.fail_waiters(DestinationClosedError("the destination is closing"))
        failure: DeliveryError | None = None
        try:
            await self.flush()
        except DeliveryError as exc:
            failure = exc
        finally:
            if self._retry_round is not None:
                self._retry_round.cancel()
            await self._flusher.stop()
            await self._stack.aclose()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            self._state = "closed"
            self._closed.set()
        if failure is not None:
            undelivered = self._failed
            if not undelivered:  # everything is safe, some of it only on local disk
                raise failure
            keys = ", ".join(b.key for b in undelivered[:5])
            raise UndeliveredError(
                [failure],
                sum(b.events for b in undelivered),
                len(undelivered),
                f" Keys: {keys}." if keys else "",
            ) from failure
        log.info(
            "destination closed", extra={"bucket": self.config.bucket, "writer_id": self.writer_id}
        )

    def stats(self) -> DestinationStats:
        """A frozen snapshot of the counters: events, bytes, objects, retries, latency."""
        return self._counters.snapshot(self._buffers.held_bytes)

    async def health_check(self) -> None:
        """Check that the bucket exists and these credentials reach it (HeadBucket).

        Raises :class:`~rigatoni_s3.errors.BucketNotFoundError` or
        :class:`~rigatoni_s3.errors.AccessDeniedError` saying what to fix. HeadBucket
        needs ``s3:ListBucket`` on the bucket, which writing alone does not.
        """
        await self.start()
        assert self._uploader is not None
        await self._uploader.check_bucket()

    @property
    def durable_resume_token(self) -> Any:
        """Resume token of the newest event that, with every event accepted before it, is safe.

        Safe means written to S3, or saved to ``dead_letter_dir`` when one is configured.
        Checkpoint this value to resume a change stream without losing events.
        """
        return self._progress.durable_resume_token

    def _raise_if_unwritable(self) -> None:
        if self._state in ("closing", "closed"):
            raise DestinationClosedError(
                "the destination is closed; create a new one to write more"
            )
        if self._crash is not None:
            raise self._crash
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        self._raise_dead_letter_error()

    def _raise_dead_letter_error(self) -> None:
        """Report, once, the objects that went to ``dead_letter_dir`` instead of S3."""
        if self._dead_letters:
            saved, self._dead_letters = self._dead_letters, []
            error = DeadLetteredError(
                str(self.config.dead_letter_dir), len(saved), sum(events for events, _ in saved)
            )
            raise error from saved[0][1]
