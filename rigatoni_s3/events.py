"""Change events: the unit the destination writes.

``write_batch`` accepts :class:`ChangeEvent` objects and raw change-stream
documents as pymongo yields them; both become the same :data:`EventFields`
tuple before encoding, so raw documents never pay for an intermediate object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import repeat
from operator import sub
from typing import Any, NamedTuple

import attrs

from rigatoni_s3.errors import InvalidEventError

_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def naive_as_utc(value: datetime) -> datetime:
    """A naive datetime read as UTC, made aware: ``value.replace(tzinfo=UTC)``, which
    parses keywords, in a fifth of its time (timedelta arithmetic is exact). A subclass
    takes ``replace``, which keeps its type."""
    if type(value) is datetime:
        return _EPOCH_UTC + (value - _EPOCH)
    return value.replace(tzinfo=UTC)


def since_epoch(times: Iterable[datetime]) -> list[timedelta]:
    """Each aware datetime's exact distance from the Unix epoch, in one C-level loop;
    raises TypeError for a None or a naive datetime among them. Columnar writers
    convert times this way: a timedelta is cheaper to turn into microseconds than an
    aware datetime, whose offset has to be asked for."""
    return list(map(sub, times, repeat(_EPOCH_UTC)))


def _to_utc(value: datetime | None, name: str = "cluster_time") -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidEventError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:  # pymongo decodes BSON dates as naive UTC by default
        return naive_as_utc(value)
    return value.astimezone(UTC)


def _wall_time_to_utc(value: datetime | None) -> datetime | None:
    return _to_utc(value, "wall_time")


def utc_second(seconds: int) -> datetime:
    """A whole second since the epoch as an aware UTC datetime: by exact arithmetic, in
    two thirds of ``datetime.fromtimestamp``'s time, which is left to say why a second
    is out of range."""
    try:
        return _EPOCH_UTC + _SECOND * seconds
    except OverflowError:
        return datetime.fromtimestamp(seconds, tz=UTC)


class UtcSeconds:
    """:func:`utc_second`, remembered: the events of one second share one datetime.

    Each encoder owns one, so no state is shared between destinations; two threads
    of one encoder may race to fill an entry, which only builds the same value twice.
    """

    __slots__ = ("_seen",)

    LIMIT = 4096
    """Entries kept before starting afresh; a stream moves forward, so old ones go stale."""

    def __init__(self) -> None:
        self._seen: dict[int, datetime] = {}

    def __call__(self, seconds: int) -> datetime:
        when = self._seen.get(seconds)
        if when is None:
            if len(self._seen) >= self.LIMIT:
                self._seen = {}
            when = self._seen[seconds] = utc_second(seconds)
        return when


@attrs.frozen
class ChangeEvent:
    """One change to one document, as a MongoDB change stream reports it."""

    operation: str
    """``insert``, ``update``, ``replace``, ``delete``, ``drop``, ``rename``, ``invalidate``..."""
    database: str | None
    collection: str | None
    document_key: Mapping[str, Any] | None = None
    """The changed document's key, usually ``{"_id": ...}``."""
    full_document: Mapping[str, Any] | None = None
    """The document after the change; None for deletes and for updates without lookup."""
    update_description: Mapping[str, Any] | None = None
    """``updatedFields``, ``removedFields``, ``truncatedArrays`` of an update."""
    cluster_time: datetime | None = attrs.field(default=None, converter=_to_utc)
    """When the change happened, aware UTC. Drives the date/hour partitions."""
    resume_token: Any = None
    """The change stream's ``_id``; pass it to ``watch(resume_after=...)`` to resume."""
    full_document_before_change: Mapping[str, Any] | None = None
    """The pre-image (``fullDocumentBeforeChange``) when the collection records them."""
    wall_time: datetime | None = attrs.field(default=None, converter=_wall_time_to_utc)
    """The server's wall clock at the change (``wallTime``, MongoDB 6.0+), aware UTC."""
    cluster_time_increment: int | None = None
    """The increment of the ``clusterTime`` Timestamp: with ``cluster_time`` it orders
    the events of one second."""
    transaction: Mapping[str, Any] | None = None
    """``{"txnNumber": ..., "lsid": {...}}`` of a change made in a transaction."""
    extra: Mapping[str, Any] | None = None
    """Every other top-level field of the change document (``to`` of a rename,
    ``collectionUUID``, fields newer servers add), so none is lost."""

    @classmethod
    def from_change_stream(cls, document: Mapping[str, Any]) -> ChangeEvent:
        """Convert a raw change-stream document (``operationType``, ``ns``, ``clusterTime``...)."""
        return cls(*fields_of_raw(document))


class EventFields(NamedTuple):
    """The envelope every format writes, in its column order (plus the resume token)."""

    operation: str
    database: str | None
    collection: str | None
    cluster_time: datetime | None
    document_key: Any
    full_document: Any
    update_description: Any
    resume_token: Any
    full_document_before_change: Any = None
    wall_time: datetime | None = None
    cluster_time_increment: int | None = None
    transaction: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] | None = None


KNOWN_FIELDS = frozenset(
    (
        "_id",
        "operationType",
        "ns",
        "clusterTime",
        "documentKey",
        "fullDocument",
        "updateDescription",
        "fullDocumentBeforeChange",
        "wallTime",
        "txnNumber",
        "lsid",
    )
)
"""Top-level fields of a change document that a column of their own holds; the
others go to ``extra``."""


_new_fields = partial(tuple.__new__, EventFields)
"""Builds an :class:`EventFields` from a tuple without the Python-level ``__new__``."""


def fields_of(
    event: ChangeEvent | Mapping[str, Any], utc_second: Callable[[int], datetime] = utc_second
) -> EventFields:
    """The envelope of a ChangeEvent or of a raw change-stream document."""
    if type(event) is dict:  # the common case, checked before the slower ABC test
        operation = event.get("operationType")
        ns = event.get("ns")
        if type(operation) is str and operation and type(ns) is dict:
            database, collection = ns.get("db"), ns.get("coll")
            if (database is None or type(database) is str) and (
                collection is None or type(collection) is str
            ):
                cluster_time, increment = cluster_time_of(event.get("clusterTime"), utc_second)
                wall_time = event.get("wallTime")
                if wall_time is not None:
                    wall_time = (
                        naive_as_utc(wall_time)
                        if type(wall_time) is datetime and wall_time.tzinfo is None
                        else wall_time_of(wall_time)
                    )
                return _new_fields(
                    (
                        operation,
                        database,
                        collection,
                        cluster_time,
                        event.get("documentKey"),
                        event.get("fullDocument"),
                        event.get("updateDescription"),
                        event.get("_id"),
                        event.get("fullDocumentBeforeChange"),
                        wall_time,
                        increment,
                        None
                        if event.get("txnNumber") is None and event.get("lsid") is None
                        else transaction_of(event),
                        None if event.keys() <= KNOWN_FIELDS else extra_of(event),
                    )
                )
        # Anything unusual takes the checked path below, which names what is wrong.
    if isinstance(event, ChangeEvent):
        return _new_fields(
            (
                event.operation,
                event.database,
                event.collection,
                event.cluster_time,
                event.document_key,
                event.full_document,
                event.update_description,
                event.resume_token,
                event.full_document_before_change,
                event.wall_time,
                event.cluster_time_increment,
                event.transaction,
                event.extra,
            )
        )
    if isinstance(event, Mapping):
        op, db, coll, key, full, update, cluster_time, token, *rest = fields_of_raw(
            event, utc_second
        )
        return _new_fields((op, db, coll, cluster_time, key, full, update, token, *rest))
    raise InvalidEventError(
        f"expected a ChangeEvent or a change-stream mapping, got {type(event).__name__}"
    )


def fields_of_raw(
    doc: Mapping[str, Any], utc_second: Callable[[int], datetime] = utc_second
) -> tuple[Any, ...]:
    """Fields of a raw document in :class:`ChangeEvent` constructor order."""
    operation = doc.get("operationType")
    if not isinstance(operation, str) or not operation:
        raise InvalidEventError(
            "not a change-stream document: 'operationType' is missing or not a string"
        )
    ns = doc.get("ns") or {}
    if type(ns) is not dict and not isinstance(ns, Mapping):
        raise InvalidEventError(f"'ns' must be a mapping, got {type(ns).__name__}")
    database, collection = ns.get("db"), ns.get("coll")
    for name, value in (("ns.db", database), ("ns.coll", collection)):
        if value is not None and not isinstance(value, str):
            raise InvalidEventError(f"'{name}' must be a string, got {type(value).__name__}")
    cluster_time, increment = cluster_time_of(doc.get("clusterTime"), utc_second)
    wall_time = doc.get("wallTime")
    return (
        operation,
        database,
        collection,
        doc.get("documentKey"),
        doc.get("fullDocument"),
        doc.get("updateDescription"),
        cluster_time,
        doc.get("_id"),
        doc.get("fullDocumentBeforeChange"),
        None if wall_time is None else wall_time_of(wall_time),
        increment,
        transaction_of(doc),
        extra_of(doc),
    )


def cluster_time_of(
    value: Any, utc_second: Callable[[int], datetime] = utc_second
) -> tuple[datetime | None, int | None]:
    """The instant of a ``clusterTime`` and its increment; ``utc_second`` makes whole
    seconds into datetimes.

    A BSON Timestamp is (seconds, increment): the increment orders operations within
    one second and is not a fraction of it, so only the seconds make the time and the
    increment is kept apart. Extended JSON ``{"$timestamp": {"t": s, "i": n}}`` and
    datetimes (which have no increment) are accepted too.
    """
    if value is None:
        return None, None
    if isinstance(value, datetime):
        return _to_utc(value), None
    if type(value) is dict or isinstance(value, Mapping):  # Extended JSON
        timestamp = value.get("$timestamp")
        if type(timestamp) is dict or isinstance(timestamp, Mapping):
            seconds = timestamp.get("t")
            if isinstance(seconds, int):
                increment = timestamp.get("i")
                return (
                    utc_second(int(seconds)),
                    int(increment) if isinstance(increment, int) else None,
                )
    else:  # a BSON Timestamp
        seconds = getattr(value, "time", None)
        if isinstance(seconds, int) and hasattr(value, "inc"):
            increment = value.inc
            return utc_second(int(seconds)), int(increment) if isinstance(increment, int) else None
    raise InvalidEventError(
        f"'clusterTime' must be a BSON Timestamp or datetime, got {type(value).__name__}"
    )


def wall_time_of(value: Any) -> datetime:
    """``wallTime`` as an aware UTC datetime; pymongo decodes BSON dates as naive UTC."""
    if isinstance(value, datetime):
        return naive_as_utc(value) if value.tzinfo is None else value.astimezone(UTC)
    if type(value).__name__ == "DatetimeMS":  # how pymongo can decode a date datetime cannot hold
        raise InvalidEventError("'wallTime' is out of range: year outside 1..9999")
    raise InvalidEventError(f"'wallTime' must be a BSON date, got {type(value).__name__}")


def transaction_of(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """``txnNumber`` and ``lsid`` of a change made in a transaction, or None outside one."""
    number, session = doc.get("txnNumber"), doc.get("lsid")
    if number is None:
        return None if session is None else {"lsid": session}
    return {"txnNumber": number} if session is None else {"txnNumber": number, "lsid": session}


def extra_of(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The top-level fields no column holds, in document order; None when there are none."""
    if doc.keys() <= KNOWN_FIELDS:
        return None
    return {name: value for name, value in doc.items() if name not in KNOWN_FIELDS}
