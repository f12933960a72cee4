"""S3Destination: the facade that takes change events and makes them durable in S3.

The life of an event, top to bottom in this file:

1. ``write_batch`` puts split events back together and encodes the events into
   rows in the thread pool, grouped by partition (collection + hour, day...),
   rejecting bad events one by one. Fragments of an event not yet complete are
   held for the next call.
2. It waits for room under ``max_buffer_bytes`` (backpressure), then appends the
   rows to their partition buffers and returns.
3. A buffer that is full, or whose ``flush_interval`` timer fires, is sealed: it
   gets its object key and joins the flusher's queue.
4. The flusher delivers it: serialize + compress in the thread pool, upload
   (conditional, retried), then settle delivery progress and release its memory.
5. ``flush`` seals everything and waits for the progress to catch up; ``close``
   does the same and shuts down.
6. With Iceberg, written objects are staged and committed to the table at cuts
   (``flush``, every ``commit_interval``): there, durable means committed.

A failed upload never drops its events: the buffer is kept and tried again by the
next ``flush``/``close`` or a background round (or saved to ``dead_letter_dir``),
and the error is raised to a caller.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aioboto3

from rigatoni_s3._bsonjson import NATIVE
from rigatoni_s3._buffer import BufferSet, PartitionBuffer
from rigatoni_s3._delivery import Deliveries
from rigatoni_s3._encoder import Encoder, Event, PreparedEvents
from rigatoni_s3._flusher import Flusher
from rigatoni_s3._fragments import NOTHING_HELD, HeldFragments, Reassembled, reassemble
from rigatoni_s3._progress import DeliveryProgress
from rigatoni_s3._retry import RetryPolicy
from rigatoni_s3._uploader import S3Uploader, open_client
from rigatoni_s3.compression import codec_for
from rigatoni_s3.config import S3Config
from rigatoni_s3.errors import (
    DeliveryError,
    DestinationClosedError,
    RejectedEventsError,
    UndeliveredError,
    UploadError,
)
from rigatoni_s3.events import ChangeEvent
from rigatoni_s3.formats import serializer_for
from rigatoni_s3.keys import file_name, object_key
from rigatoni_s3.stats import Counters, DestinationStats

if TYPE_CHECKING:
    from rigatoni_s3.iceberg._committer import Committer

log = logging.getLogger(__name__)

ENCODE_THREADS = 2
"""Encoding is CPU-bound and mostly holds the GIL; more threads than cores only add contention."""


class _State(enum.Enum):
    """Where a destination is in its life; it only moves forward."""

    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


class S3Destination:
    """Writes change events to S3 in batches, one object per partition buffer.

    Use it as an async context manager; leaving the block drains every buffer::

        async with S3Destination(config) as dest:
            await dest.write_batch(events)
    """

    def __init__(
        self,
        config: S3Config,
        *,
        session: aioboto3.Session | None = None,
        executor: Executor | None = None,
    ) -> None:
        """``session`` supplies credentials and settings to aioboto3; ``executor`` runs
        the encoding (by default a pool of :data:`ENCODE_THREADS` threads, shut down by
        ``close``; one given here is left running)."""
        self.config = config
        self.writer_id = config.writer_id or secrets.token_hex(6)
        self._session = session
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            ENCODE_THREADS, thread_name_prefix="rigatoni-s3-encode"
        )
        self._encoder = Encoder(
            serializer_for(config.format, config.compression, config.columns),
            codec_for(config.compression),
            config.key_strategy,
        )
        # With Iceberg the upload progress only feeds the committer, which reports durability.
        self._progress = DeliveryProgress(None if config.iceberg else config.on_durable)
        self._buffers = BufferSet(
            max_batch_events=config.max_batch_events,
            max_batch_bytes=config.max_batch_bytes,
            max_buffer_bytes=config.max_buffer_bytes,
            flush_interval=config.flush_interval,
            on_sealed=self._on_sealed,
        )
        self._counters = Counters()
        self._committer: Committer | None = None
        if config.iceberg is not None:
            from rigatoni_s3.iceberg._committer import Committer

            self._committer = Committer(
                config, self.writer_id, self._progress, self._buffers.seal_all, self._counters
            )
        self._flusher = Flusher(self._deliver, config.max_concurrent_uploads, self._on_crash)
        self._deliveries = Deliveries(
            buffers=self._buffers,
            progress=self._progress,
            flusher=self._flusher,
            counters=self._counters,
            bucket=config.bucket,
            dead_letter_dir=config.dead_letter_dir,
            retry_pause=config.retry_max_delay,
            running=lambda: self._state is _State.RUNNING,
            executor=self._executor,
            on_written=self._committer.stage if self._committer else None,
        )
        self._held: HeldFragments = NOTHING_HELD
        """Fragments of a split event waiting for the rest; replaced, never changed."""
        self._objects_sealed = 0
        self._state = _State.NEW
        self._start_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._stack = AsyncExitStack()
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
            if self._state is not _State.NEW:
                return
            session = self._session or aioboto3.Session()
            client = await self._stack.enter_async_context(open_client(session, self.config))
            uploader = S3Uploader.for_config(
                client,
                self.config.bucket,
                RetryPolicy(
                    self.config.max_retries,
                    self.config.retry_base_delay,
                    self.config.retry_max_delay,
                ).run,
                self.config,
            )
            try:
                if self.config.check_conditional_writes:
                    await self._check_conditional_writes(uploader)
                if self._committer is not None:
                    await self._committer.start()
            except BaseException:
                if self._committer is not None:
                    await self._committer.stop()
                await self._stack.aclose()
                raise
            self._uploader = uploader
            self._flusher.start()
            self._state = _State.RUNNING
            log.info(
                "destination started (%s encoding core)",
                "compiled" if NATIVE else "pure-Python",
                extra={
                    "bucket": self.config.bucket,
                    "prefix": self.config.prefix,
                    "writer_id": self.writer_id,
                    "native": NATIVE,
                },
            )

    async def _check_conditional_writes(self, uploader: S3Uploader) -> None:
        """Fail fast on a missing bucket or denied writes; warn if overwrites go unchecked."""
        parts = (self.config.prefix, "_rigatoni_s3", f"probe-{self.writer_id}")
        probe = "/".join(part for part in parts if part)
        if not await uploader.honours_conditional_writes(probe):
            log.warning(
                "the S3 server ignores If-None-Match: a writer sharing this writer_id could "
                "overwrite objects; keep writer ids unique per process",
                extra={"bucket": self.config.bucket, "writer_id": self.writer_id},
            )

    # -- 1-2. accepting events ------------------------------------------------------------

    async def write_batch(self, events: Iterable[Event], *, timeout: float | None = None) -> None:
        """Buffer ``events``; returns once they are accepted (not yet durable).

        An event is a :class:`~rigatoni_s3.events.ChangeEvent`, a change-stream document
        as pymongo decodes it, or the same document as raw BSON: pymongo's
        ``RawBSONDocument`` or ``bytes``/``memoryview``. Raw events are read without
        being decoded (the fast path) and written byte for byte as their decoded form
        would be; their ``durable_resume_token`` is a ``RawBSONDocument``.

        The fragments of an event split by ``$changeStreamSplitLargeEvent`` are
        written as the one event they make, with the last fragment's ``_id``; they
        may span calls, and until the last one comes they are held, not accepted
        (``durable_resume_token`` stays before them). A broken run of fragments is
        rejected like an invalid event.

        Either every valid event of the call is accepted or none is: a cancelled
        or timed-out call accepts nothing, and leaves the held fragments as they
        were. Invalid events are rejected one by one with
        :class:`~rigatoni_s3.errors.RejectedEventsError` after the valid ones
        were accepted. If an earlier upload failed and nobody was told yet, that
        error is raised first and nothing is accepted.

        Concurrent calls are put together in the order they accept, as if made one
        after another: a call that finds that another one changed the held
        fragments while it was encoding encodes again from theirs.

        ``timeout`` bounds the wait for buffer room
        (:class:`~rigatoni_s3.errors.BackpressureTimeout`).
        """
        if isinstance(events, ChangeEvent | Mapping | bytes | bytearray | memoryview):
            raise TypeError(
                "write_batch takes an iterable of events; wrap a single event in a list"
            )
        self._raise_if_unwritable()
        await self.start()
        batch = list(events)
        if not batch:
            return
        held, whole, prepared = await self._prepared(batch, timeout)
        if prepared.accepted or whole.held is not held:
            if self._state is not _State.RUNNING:  # closed while we waited: the final flush is past
                if prepared.accepted:
                    self._buffers.release(prepared.nbytes)
                raise DestinationClosedError("the destination was closed while this write waited")
            self._held = whole.held  # the call accepts: from here on, nothing awaits
        if prepared.accepted:
            ticket = self._progress.open(prepared.accepted, prepared.last_resume_token)
            self._counters.type_mismatches += prepared.type_mismatches
            self._buffers.add(ticket, prepared)
            self._counters.events_accepted += prepared.accepted
        rejected = whole.rejections(prepared.rejected)
        if rejected:
            self._counters.events_rejected += len(rejected)
            raise RejectedEventsError(rejected, prepared.accepted)

    async def _prepared(
        self, batch: list[Event], timeout: float | None
    ) -> tuple[HeldFragments, Reassembled, PreparedEvents]:
        """The call encoded, from the fragments held when it began, and room reserved.

        Done again if another call changed the held fragments meanwhile, so that calls
        are put together in the order they accept.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            held = self._held
            whole, prepared = await loop.run_in_executor(
                self._executor, self._prepare, batch, held, datetime.now(UTC)
            )
            if prepared.accepted:
                wait = None if deadline is None else max(0.0, deadline - loop.time())
                await self._buffers.reserve(prepared.nbytes, wait, self._deliveries.resubmit_failed)
            if self._held is held:
                return held, whole, prepared
            if prepared.accepted:
                self._buffers.release(prepared.nbytes)

    def _prepare(
        self, batch: list[Event], held: HeldFragments, now: datetime
    ) -> tuple[Reassembled, PreparedEvents]:
        """The thread-pool work of a call: split events put together, then encoded."""
        if not held.fragments:  # raw events are looked at for fragments as they are encoded
            prepared = self._encoder.prepare_whole(batch, now)
            if prepared is not None:
                return Reassembled(batch, None, [], held), prepared
        whole = reassemble(batch, held)
        return whole, self._encoder.prepare(whole.events, now)

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
        """Encode, upload, settle: one sealed buffer becomes one object."""
        assert self._uploader is not None
        loop = asyncio.get_running_loop()
        try:
            obj = await loop.run_in_executor(
                self._executor, self._encoder.encode, buffer.rows, buffer.nbytes
            )
        except Exception as exc:
            self._deliveries.encoding_failed(buffer, exc)
            return
        started = loop.time()
        try:
            attempts = await self._uploader.write(buffer.key, obj, attempts_before=buffer.attempts)
        except UploadError as error:
            await self._deliveries.upload_failed(buffer, obj, error, started)
            return
        self._deliveries.written(buffer, obj, attempts, loop.time() - started)

    def _on_crash(self, exc: BaseException) -> None:
        self._deliveries.crashed(exc)

    # -- 5. flushing and closing ----------------------------------------------------------

    async def flush(self) -> None:
        """Return once every event accepted before this call is durably in S3.

        With Iceberg, once they are also committed to the table (one commit for all);
        raises :class:`~rigatoni_s3.errors.CommitError` if the commit fails, the
        objects staying in S3 for the next commit.

        Buffers are sealed regardless of their thresholds, and objects that failed
        before are tried again; an object whose attempts began before this call gets a
        fresh round. Raises the :class:`~rigatoni_s3.errors.DeliveryError` of an object
        that still cannot be written; its events stay buffered. Fragments of a split
        event still waiting for the rest are not accepted yet, so they are neither
        written nor an error here.
        """
        self._deliveries.raise_if_crashed()
        if self._state is _State.NEW:
            return
        target = self._progress.last_ticket
        resume_token = self._progress.last_resume_token
        self._buffers.seal_all()
        self._deliveries.flush_requested(asyncio.get_running_loop().time())
        await self._progress.wait_for(target)
        self._deliveries.flushed()
        self._deliveries.raise_dead_lettered()
        if self._committer is not None:
            await self._committer.commit_through(target, resume_token)

    async def close(self) -> None:
        """Drain everything and release the client. Idempotent.

        Raises :class:`~rigatoni_s3.errors.UndeliveredError` if some events could not
        be written; they are counted and their keys named there, never silently dropped.
        A split event still missing fragments is dropped, after everything else is
        written, with :class:`~rigatoni_s3.errors.IncompleteEventError` naming its
        fragments (or a note on the delivery error raised instead); the durable
        resume token never passed them, so a stream resumed from it reads them again.
        """
        if self._state in (_State.CLOSING, _State.CLOSED):
            await self._closed.wait()
            return
        if self._state is _State.NEW:
            self._shut_executor()
            self._state = _State.CLOSED
            self._closed.set()
            return
        self._state = _State.CLOSING
        self._buffers.fail_waiters(DestinationClosedError("the destination is closing"))
        failure: DeliveryError | None = None
        try:
            await self.flush()
        except DeliveryError as exc:
            failure = exc
        finally:
            self._deliveries.stop()
            await self._flusher.stop()
            if self._committer is not None:
                await self._committer.stop()
            await self._stack.aclose()
            self._shut_executor()
            self._state = _State.CLOSED
            self._closed.set()
        incomplete = self._held.incomplete_error() if self._held else None
        self._held = NOTHING_HELD
        if failure is not None:
            uncommitted = self._committer.undelivered(failure) if self._committer else None
            if uncommitted is not None and not self._deliveries.undelivered:
                raise uncommitted from failure
            undelivered = self._deliveries.undelivered
            if not undelivered:  # everything is safe, some of it only on local disk
                error: DeliveryError = failure
            else:
                keys = ", ".join(b.key for b in undelivered[:5])
                error = UndeliveredError(
                    [failure],
                    sum(b.events for b in undelivered),
                    len(undelivered),
                    f" Keys: {keys}." if keys else "",
                )
                error.__cause__ = failure
            if incomplete is not None:
                error.add_note(f"Also: {incomplete}")
            raise error
        if incomplete is not None:
            raise incomplete
        log.info(
            "destination closed", extra={"bucket": self.config.bucket, "writer_id": self.writer_id}
        )

    def _shut_executor(self) -> None:
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

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

        Safe means written to S3, or saved to ``dead_letter_dir`` when one is configured;
        with Iceberg, committed to the table. Checkpoint this value to resume a change
        stream without losing events.
        """
        if self._committer is not None:
            return self._committer.durable_resume_token
        return self._progress.durable_resume_token

    async def committed_resume_token(self) -> Any:
        """With Iceberg: this consumer's resume token in its newest commit, read from the table.

        None for a table this consumer never committed to. Resuming the change stream
        right after it re-reads only events that no commit holds: each lands in the
        table once. Raises :class:`~rigatoni_s3.errors.CatalogError` if the catalog
        cannot be read.
        """
        if self._committer is None:
            raise RuntimeError("committed_resume_token needs an Iceberg table (S3Config.iceberg)")
        await self.start()
        return await self._committer.committed_resume_token()

    def _raise_if_unwritable(self) -> None:
        if self._state in (_State.CLOSING, _State.CLOSED):
            raise DestinationClosedError(
                "the destination is closed; create a new one to write more"
            )
        self._deliveries.raise_unreported()
        if self._committer is not None:
            self._committer.raise_unreported()
