"""The commit stage: objects in S3 become part of the Iceberg table, a batch at a time.

With Iceberg an event is durable once it is *committed*, not merely uploaded:
readers see only what a snapshot references, and the commit carries the consumer's
resume token (in the snapshot's summary and in a table property that outlives the
snapshot), so data and checkpoint move in one atomic step.

**Cuts.** Exactly once for readers needs every commit to hold exactly the events up
to its resume token: an event after the token in a committed object would be read
again after a restart and committed twice. So a commit is cut at a ``write_batch``
ticket: every open buffer is sealed (no object then mixes events from both sides of
the cut), the uploads of everything up to the cut are awaited, and the objects whose
events all lie at or before the cut are committed with the cut's resume token.
Objects of later tickets wait for the next cut. ``flush()`` is such a cut; the
background round makes one every ``commit_interval`` seconds, or as soon as
``commit_max_files`` objects wait.

**Failures.** A commit that failed for a reason that may pass (a conflict, an
unknown commit state, a connection or server error: see :func:`transient`) is tried
again with backoff (``max_retries``, ``retry_base_delay``, ``retry_max_delay``, as
uploads are); pyiceberg itself first refreshes and retries a commit that lost a race
with another writer. Any other failure (a bug, a table changed under us so that our
objects no longer fit) is not retried. When the attempts are spent, or at once for
such a failure, :class:`~rigatoni_s3.errors.CommitError` goes to the caller
(the waiting ``flush()``, or else the next call) and the objects stay staged for the
next commit. Each attempt has its own id, in the summary and in the consumer's
commit-id property; before trying again, the table is searched for the ids of earlier
attempts, so an attempt whose answer was lost but which landed is never committed a
second time, even if its snapshot has been expired since.

All pyiceberg calls run in one thread of the committer's own, never on the event
loop, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import attrs
import pyarrow as pa
import pyarrow.parquet as pq

from rigatoni_s3._buffer import PartitionBuffer
from rigatoni_s3._encoder import EncodedObject
from rigatoni_s3._progress import DeliveryProgress
from rigatoni_s3.config import S3Config
from rigatoni_s3.errors import CatalogError, CommitError, DeliveryError, UndeliveredError
from rigatoni_s3.iceberg._table import (
    COMMIT_ID,
    CONSUMER,
    RESUME_TOKEN,
    WRITER_ID,
    IcebergTable,
    StagedObject,
    token_text,
    token_value,
    transient,
)
from rigatoni_s3.stats import Counters

log = logging.getLogger("rigatoni_s3.iceberg")

P = ParamSpec("P")
T = TypeVar("T")


class Committer:
    """Stages uploaded objects and commits them to the table at cuts."""

    def __init__(
        self,
        config: S3Config,
        writer_id: str,
        progress: DeliveryProgress,
        seal_all: Callable[[], None],
        counters: Counters,
    ) -> None:
        """``progress`` is the upload progress; ``seal_all`` seals every open buffer."""
        assert config.iceberg is not None
        self._config = config
        self._iceberg = config.iceberg
        self._writer_id = writer_id
        self._progress = progress
        self._seal_all = seal_all
        self._counters = counters
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rigatoni-s3-iceberg")
        self._table: IcebergTable | None = None
        self._staged: list[StagedObject] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        """Set when ``commit_max_files`` objects wait: the background round starts early."""
        self._uploaded = asyncio.Event()
        """Set whenever an object is staged, for a round waiting on its cut's uploads."""
        self._attempts = 0
        self._task: asyncio.Task[None] | None = None
        self._unreported: CommitError | None = None
        self.committed_ticket = 0
        self.durable_resume_token: Any = None

    # -- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open (or create) the table, then start the background round."""
        self._table = await self._call(IcebergTable.open, self._config)
        self._task = asyncio.create_task(self._run(), name="rigatoni-s3-committer")

    async def stop(self) -> None:
        """Stop the background round. A commit already in the thread finishes there."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- staging --------------------------------------------------------------------------

    def stage(self, buffer: PartitionBuffer, obj: EncodedObject) -> None:
        """``buffer`` is in S3 as ``obj``: keep what its data file needs, not its bytes."""
        footer = pq.read_metadata(pa.BufferReader(obj.body))  # the footer only: ~0.1 ms
        self._staged.append(
            StagedObject(
                buffer.key,
                len(obj.body),
                buffer.events,
                max(buffer.tickets),
                buffer.partition,
                footer,
            )
        )
        if len(self._staged) >= self._iceberg.commit_max_files:
            self._wake.set()
        self._uploaded.set()

    @property
    def pending(self) -> list[StagedObject]:
        """Objects in S3 that no commit has made part of the table yet."""
        return list(self._staged)

    # -- committing -----------------------------------------------------------------------

    async def commit_through(self, ticket: int, resume_token: Any) -> None:
        """Commit every object of tickets up to ``ticket``, whose uploads are done.

        ``resume_token`` is the newest token among those tickets; it goes into the
        snapshot summary and becomes the durable one. Raises CommitError.
        """
        async with self._lock:
            if ticket <= self.committed_ticket:
                return
            batch = [obj for obj in self._staged if obj.last_ticket <= ticket]
            if batch:
                await self._commit(batch, resume_token)
                done = {obj.key for obj in batch}
                self._staged = [obj for obj in self._staged if obj.key not in done]
            self.committed_ticket = ticket
            self._unreported = None
            if resume_token is not None and resume_token is not self.durable_resume_token:
                self.durable_resume_token = resume_token
                if self._config.on_durable is not None:
                    self._config.on_durable(resume_token)

    async def _commit(self, batch: list[StagedObject], resume_token: Any) -> None:
        """One snapshot for ``batch``, tried up to ``max_retries + 1`` times."""
        assert self._table is not None
        loop = asyncio.get_running_loop()
        config = self._config
        attempts = 0
        while True:
            attempts += 1
            self._attempts += 1
            attempt = f"{self._writer_id}-{self._attempts}"
            summary = {
                CONSUMER: self._iceberg.consumer,
                WRITER_ID: self._writer_id,
                COMMIT_ID: attempt,
            }
            if resume_token is not None:
                summary[RESUME_TOKEN] = token_text(resume_token)
            candidates, batch = batch, [attrs.evolve(obj, attempt=attempt) for obj in batch]
            # Tagged before the call: should this task be cancelled while the thread
            # commits, the next commit still finds out whether it landed.
            self._retag(batch)
            started = loop.time()
            try:
                outcome = await self._call(self._table.commit, candidates, summary)
            except CatalogError as error:
                cause = error.__cause__
                if attempts > config.max_retries or cause is None or not transient(cause):
                    raise self._gave_up(error, attempts, batch) from cause
                delay = random.uniform(
                    0, min(config.retry_max_delay, config.retry_base_delay * 2 ** (attempts - 1))
                )
                self._counters.commit_retries += 1
                log.warning(
                    "retrying Iceberg commit after %s (attempt %d, waiting %.2fs)",
                    error.reason,
                    attempts,
                    delay,
                    extra={"table": self._iceberg.table, "attempt": attempts, "wait": delay},
                )
                await asyncio.sleep(delay)
                continue
            break
        counters = self._counters
        counters.commit_retries += outcome.conflicts
        if outcome.snapshot_id is not None:
            counters.commits += 1
            counters.commit_latencies.append(loop.time() - started)
        counters.objects_committed += len(batch)
        counters.events_committed += sum(obj.events for obj in batch)
        log.debug(
            "committed %d object(s) to Iceberg table %s",
            len(batch),
            self._iceberg.table,
            extra={
                "table": self._iceberg.table,
                "objects": len(batch),
                "snapshot_id": outcome.snapshot_id,
                "attempt": attempts,
            },
        )

    def _retag(self, batch: list[StagedObject]) -> None:
        tagged = {obj.key: obj for obj in batch}
        self._staged = [tagged.get(obj.key, obj) for obj in self._staged]

    def _gave_up(
        self, error: CatalogError, attempts: int, batch: list[StagedObject]
    ) -> CommitError:
        failure = CommitError(
            self._iceberg.table,
            attempts,
            error.reason,
            len(self._staged),
            sum(obj.events for obj in self._staged),
        )
        log.error(
            "Iceberg commit failed, objects kept for the next commit: %s",
            error.reason,
            extra={"table": self._iceberg.table, "objects": len(batch), "attempt": attempts},
        )
        return failure

    # -- the background round -------------------------------------------------------------

    async def _run(self) -> None:
        """Every ``commit_interval`` (or at ``commit_max_files``): cut, await uploads, commit."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._iceberg.commit_interval):
                    await self._wake.wait()
            self._wake.clear()
            ticket = self._progress.last_ticket
            resume_token = self._progress.last_resume_token
            if ticket <= self.committed_ticket:
                continue
            self._seal_all()
            while self._progress.durable_ticket < ticket:  # upload errors reach callers as usual
                self._uploaded.clear()
                await self._uploaded.wait()
            try:
                await self.commit_through(ticket, resume_token)
            except CommitError as error:
                self._unreported = error

    def raise_unreported(self) -> None:
        """Raise, once, a background commit failure that no caller has heard of."""
        if self._unreported is not None:
            error, self._unreported = self._unreported, None
            raise error

    def undelivered(self, failure: DeliveryError) -> UndeliveredError | None:
        """For ``close()``: the error naming objects left in S3 outside the table, if any."""
        if not self._staged:
            return None
        keys = ", ".join(obj.key for obj in self._staged[:5])
        return UndeliveredError(
            [failure],
            sum(obj.events for obj in self._staged),
            len(self._staged),
            f" They are in S3 but not in Iceberg table {self._iceberg.table}: resume from "
            f"committed_resume_token() to write them again (iceberg-orphans lists the "
            f"leftovers). Keys: {keys}.",
        )

    # -- reading the table ----------------------------------------------------------------

    async def committed_resume_token(self) -> Any:
        """This consumer's resume token in its newest commit, read from the table."""
        assert self._table is not None
        text = await self._call(self._table.committed_token)
        return None if text is None else token_value(text)

    async def _call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking pyiceberg call in the committer's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))
