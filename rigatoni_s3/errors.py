"""Every exception rigatoni-s3 raises on purpose.

::

    RigatoniS3Error
    ├── ConfigError (ValueError)            a setting is invalid; raised when the config is built
    ├── EventError (ValueError)             an event cannot be written as given
    │   ├── InvalidEventError               not a change event (missing fields, wrong types,
    │   │                                   a broken run of split-event fragments)
    │   ├── SerializationError              a value the chosen format cannot hold
    │   └── IncompleteEventError            close() found a split event still missing fragments
    ├── RejectedEventsError (ExceptionGroup, ValueError)
    │                                       some events of a write_batch call were rejected
    ├── DestinationClosedError (RuntimeError)
    ├── BackpressureTimeout (TimeoutError)  write_batch waited too long for buffer room
    └── DeliveryError                       events could not be written to S3
        ├── UploadError                     one object failed; carries bucket, key, attempts
        │   ├── BucketNotFoundError         the bucket does not exist
        │   ├── AccessDeniedError           the credentials may not write there
        │   ├── ObjectConflictError         the key already holds different content
        │   └── RetriesExhaustedError       transient failures outlasted max_retries
        ├── DeadLetteredError               objects were saved to dead_letter_dir instead
        ├── UndeliveredError                close() could not deliver everything
        └── CatalogError                    the Iceberg catalog failed a request (table, attempts)
            └── CommitError                 objects are in S3 but not yet in the table

Library errors (botocore, aiohttp, pyiceberg and its catalogs' clients) are translated
at the boundary and kept as ``__cause__``. Messages never contain credentials or event
payloads.

Every error pickles (to cross processes: multiprocessing, concurrent.futures) as the
call that made it: the constructor arguments are kept, and unpickling calls the class
with them again. Python's default would call it with the message alone, which these
constructors do not take.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Self


class _Recorded(type):
    """Keeps the arguments each error was made with, for :meth:`RigatoniS3Error.__reduce__`."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        error = super().__call__(*args, **kwargs)
        error._arguments = (args, kwargs)
        return error


def _rebuild(cls: type[RigatoniS3Error], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)


class RigatoniS3Error(Exception, metaclass=_Recorded):
    """Base class of every error raised by rigatoni-s3."""

    _arguments: tuple[tuple[Any, ...], dict[str, Any]]

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """The constructor call again, then the attributes set since (notes, for one)."""
        args, kwargs = vars(self).get("_arguments", (self.args, {}))
        return _rebuild, (type(self), args, kwargs), dict(vars(self))


class ConfigError(RigatoniS3Error, ValueError):
    """A configuration value breaks a rule; the message names the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class EventError(RigatoniS3Error, ValueError):
    """An event cannot be written as given. Other events of the same batch are unaffected."""

    def __init__(
        self,
        message: str,
        *,
        collection: str | None = None,
        document_key: object = None,
        field: str | None = None,
        index: int | None = None,
    ) -> None:
        self.collection = collection
        self.document_key = document_key
        self.field = field
        self.index = index
        self.reason = message
        where = []
        if index is not None:
            where.append(f"event #{index}")
        if collection is not None:
            where.append(f"collection {collection!r}")
        if document_key is not None:
            where.append(f"document key {_short(document_key)}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)


class InvalidEventError(EventError):
    """The input is not a change event: a required field is missing or has the wrong type."""


class SerializationError(EventError):
    """A value in the event has no representation in the chosen format."""


class IncompleteEventError(EventError):
    """``close()`` found a split event whose last fragments never came.

    ``fragments`` holds the fragments received, as given (raw buffers as bytes), and
    ``resume_tokens`` their ``_id``s. None of them was written, and
    ``durable_resume_token`` never moved past them: a change stream resumed from it
    delivers the whole event again.
    """

    def __init__(
        self,
        message: str,
        *,
        fragments: Sequence[object] = (),
        resume_tokens: Sequence[object] = (),
    ) -> None:
        super().__init__(message)
        self.fragments = tuple(fragments)
        self.resume_tokens = tuple(resume_tokens)


class RejectedEventsError(RigatoniS3Error, ExceptionGroup[EventError], ValueError):
    """Some events of a ``write_batch`` call were rejected; all the others were accepted.

    ``errors`` (also ``exceptions``, as in any exception group) holds one
    :class:`EventError` per rejected event, in input order, each with its ``index`` in
    the batch. A broken run of split-event fragments is one error at the index of its
    first fragment in the batch; when all of them came in earlier calls, its ``index``
    is None and it comes first. The accepted events are buffered as usual. Being an ``ExceptionGroup``,
    it lets a caller handle one kind alone: ``except* SerializationError``.
    """

    def __new__(cls, errors: Sequence[EventError], accepted: int) -> Self:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        message = f"{len(errors)} event(s) rejected, {accepted} accepted; first: {first}{more}"
        return super().__new__(cls, message, errors)

    def __init__(self, errors: Sequence[EventError], accepted: int) -> None:
        super().__init__(self.message, errors)
        self.errors = tuple(errors)
        self.accepted = accepted

    def __str__(self) -> str:
        return self.message

    def derive(self, excs: Sequence[EventError]) -> RejectedEventsError:  # type: ignore[override]
        """The group ``except*`` hands on: the same call, a subset of its rejections."""
        return RejectedEventsError(excs, self.accepted)


class DestinationClosedError(RigatoniS3Error, RuntimeError):
    """The destination was closed; it accepts no more events."""


class BackpressureTimeout(RigatoniS3Error, TimeoutError):
    """``write_batch`` waited longer than its timeout for buffer room; nothing was accepted."""


class DeliveryError(RigatoniS3Error):
    """Events could not be written to S3. They are still held by the destination."""


class UploadError(DeliveryError):
    """Writing one object failed.

    Attributes: ``bucket``, ``key``, ``attempts`` (how many requests were made) and
    ``events`` (how many events the object holds). The library error is ``__cause__``.
    """

    hint = ""

    def __init__(self, bucket: str, key: str, attempts: int, events: int, reason: str) -> None:
        self.bucket = bucket
        self.key = key
        self.attempts = attempts
        self.events = events
        self.reason = reason
        hint = f" {self.hint}" if self.hint else ""
        what = f"write s3://{bucket}/{key} ({events} events)" if key else f"reach s3://{bucket}"
        super().__init__(f"could not {what} after {attempts} attempt(s): {reason}.{hint}")


class BucketNotFoundError(UploadError):
    """The bucket does not exist (or the endpoint/region points elsewhere)."""

    hint = "Create the bucket, or check the bucket name, region and endpoint_url."


class AccessDeniedError(UploadError):
    """The credentials are not allowed to write to the bucket."""

    hint = (
        "Grant s3:PutObject, s3:GetObject and s3:AbortMultipartUpload on "
        "arn:aws:s3:::<bucket>/* (health_check also needs s3:ListBucket on the bucket) to "
        "these credentials, or check the bucket policy and the KMS key policy."
    )


class ObjectConflictError(UploadError):
    """A conditional write found the key already holding different content."""

    hint = "Another writer uses the same writer_id; give each process its own."


class RetriesExhaustedError(UploadError):
    """Transient failures (throttling, 5xx, timeouts, resets) continued past ``max_retries``."""

    hint = "The events are kept and retried on the next flush(); raise max_retries for flaky links."


class DeadLetteredError(DeliveryError):
    """Objects could not be uploaded and were saved to ``dead_letter_dir`` instead.

    Their events count as safe (``durable_resume_token`` moves past them); upload them
    later with ``python -m rigatoni_s3 replay DIR``. ``__cause__`` is the first upload error.
    """

    def __init__(self, directory: str, objects: int, events: int) -> None:
        self.directory = directory
        self.objects = objects
        self.events = events
        super().__init__(
            f"{events} event(s) in {objects} object(s) could not be uploaded and were saved to "
            f"{directory}; upload them with: python -m rigatoni_s3 replay {directory}"
        )


class UndeliveredError(DeliveryError):
    """``close()`` finished with events that could not be written.

    ``failures`` holds the error that ended the final flush; ``events`` and ``objects``
    count what is still held in memory.
    """

    def __init__(
        self, failures: Sequence[DeliveryError], events: int, objects: int, detail: str = ""
    ) -> None:
        self.failures = tuple(failures)
        self.events = events
        self.objects = objects
        first = f" First failure: {failures[0]}" if failures else ""
        super().__init__(
            f"{events} event(s) in {objects} object(s) were not delivered.{detail}{first}"
        )


class CatalogError(DeliveryError):
    """The Iceberg catalog could not be reached, or refused a request, after retries.

    Attributes: ``table`` (``namespace.table``), ``attempts`` and ``reason``. The
    catalog's own error is ``__cause__``.
    """

    def __init__(self, table: str, attempts: int, reason: str) -> None:
        self.table = table
        self.attempts = attempts
        self.reason = reason
        super().__init__(self._message())

    def _message(self) -> str:
        return f"Iceberg table {self.table}: {self.reason} (after {self.attempts} attempt(s))"


class CommitError(CatalogError):
    """Uploaded objects could not be committed to the Iceberg table.

    The objects stay in S3 and stay pending: the next commit (the next interval,
    ``flush()`` or ``close()``) includes them, so nothing is lost while the process
    lives. ``objects`` and ``events`` count what waits; ``durable_resume_token``
    has not moved past them.
    """

    def __init__(self, table: str, attempts: int, reason: str, objects: int, events: int) -> None:
        self.objects = objects
        self.events = events
        super().__init__(table, attempts, reason)

    def _message(self) -> str:
        return (
            f"could not commit {self.objects} object(s) ({self.events} events) to Iceberg table "
            f"{self.table} after {self.attempts} attempt(s): {self.reason}. They stay in S3 "
            "and are committed by the next successful commit."
        )


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
