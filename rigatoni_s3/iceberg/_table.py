"""The table side: pyiceberg calls and nothing else.

Everything here is synchronous and blocks on the catalog and on S3, so the committer
runs it in a thread of its own, never on the event loop. It is the boundary where
pyiceberg's and the catalog clients' errors become :mod:`rigatoni_s3.errors` types:
:class:`~rigatoni_s3.errors.ConfigError` for a table we cannot write to as it is,
:class:`~rigatoni_s3.errors.CatalogError` for everything else, with the original
as ``__cause__``. :func:`transient` tells which causes may pass if the request is
sent again; whether and how often to do so is the committer's business.

A commit appends our objects as data files, built from the Parquet footers we
already hold (no object is read back), in one snapshot whose summary carries
:data:`CONSUMER`, :data:`RESUME_TOKEN`, :data:`WRITER_ID` and :data:`COMMIT_ID`.
The same catalog update sets the table property :func:`token_property` of the
consumer to the resume token: snapshots are expired by routine maintenance, table
properties are not, so the checkpoint outlives the snapshot that made it.
pyiceberg itself refreshes and retries a commit that lost a race with another
writer (the table's ``commit.retry.*`` properties); :class:`_Table` counts those
refreshes so that ``stats()`` can report them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import pyarrow.parquet as pq
from botocore import exceptions as boto_errors
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    NoSuchTableError,
    ServerError,
    ServiceUnavailableError,
    TableAlreadyExistsError,
    TooManyRequestsError,
    WaitingForLockException,
)
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot, ancestors_of

from rigatoni_s3._retry import is_transient as s3_transient
from rigatoni_s3.config import S3Config
from rigatoni_s3.errors import CatalogError, ConfigError
from rigatoni_s3.formats.parquet import ParquetSerializer
from rigatoni_s3.iceberg._schema import (
    CLUSTER_TIME,
    check_table,
    field_names,
    partition_spec,
    partition_value,
    table_schema,
)
from rigatoni_s3.keys import PartitionKey

log = logging.getLogger("rigatoni_s3.iceberg")

CONSUMER = "rigatoni-s3.consumer"
RESUME_TOKEN = "rigatoni-s3.resume-token"
"""The consumer's durable resume token as JSON (canonical Extended JSON when bson is there)."""
WRITER_ID = "rigatoni-s3.writer-id"
COMMIT_ID = "rigatoni-s3.commit-id"
"""Unique per commit attempt: finds an attempt whose answer was lost but which landed."""
TOKEN_PROPERTY_PREFIX = f"{RESUME_TOKEN}."
"""Table properties ``rigatoni-s3.resume-token.<consumer>``: each consumer's newest token."""
COMMIT_PROPERTY_PREFIX = f"{COMMIT_ID}."
"""Table properties ``rigatoni-s3.commit-id.<consumer>``: the id of each consumer's newest
commit, which tells a landed attempt whose answer was lost after its snapshot expired."""
_PROPERTY_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")

METRICS_COLUMN = TableProperties.METRICS_MODE_COLUMN_CONF_PREFIX

NEW_TABLE_PROPERTIES = {
    # Merge small manifests as commits accumulate, as Iceberg's Java writers do by default,
    # so that planning a scan does not read one manifest per minute of history.
    TableProperties.MANIFEST_MERGE_ENABLED: "true",
    # Each commit writes a metadata file; keep the last hundred, not all of them.
    TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED: "true",
    TableProperties.METADATA_PREVIOUS_VERSIONS_MAX: "100",
}


@attrs.frozen
class StagedObject:
    """An object in S3 waiting for a commit, with what its data file needs."""

    key: str
    size: int
    events: int
    last_ticket: int
    """The newest ``write_batch`` ticket with events in it: commits are cut by ticket."""
    partition: PartitionKey
    footer: pq.FileMetaData
    attempt: str | None = None
    """The id of the last commit attempt that held it and may have landed."""


@attrs.frozen
class CommitOutcome:
    snapshot_id: int | None
    """The snapshot made, or None when every object had landed with an earlier attempt."""
    landed: frozenset[str]
    """Ids of earlier attempts found in the table after all."""
    conflicts: int
    """Times the catalog refused because another writer committed first (then retried)."""


def objects_serializer(config: S3Config) -> ParquetSerializer:
    """The serializer the destination writes with: its ``schema`` (envelope, then typed
    columns) is the table's, its ``statistics_columns`` those with metrics."""
    return ParquetSerializer(config.compression, config.columns)


def catalog_properties(config: S3Config) -> dict[str, str]:
    """The configured catalog properties, with the destination's S3 settings where absent."""
    assert config.iceberg is not None
    ours = {"s3.region": config.region}
    if config.endpoint_url is not None:
        ours["s3.endpoint"] = config.endpoint_url
    if config.force_path_style:
        ours["s3.force-virtual-addressing"] = "false"
    if config.aws_access_key_id is not None and config.aws_secret_access_key is not None:
        ours["s3.access-key-id"] = config.aws_access_key_id
        ours["s3.secret-access-key"] = config.aws_secret_access_key
        if config.aws_session_token is not None:
            ours["s3.session-token"] = config.aws_session_token
    return {**ours, **config.iceberg.catalog}


def default_location(config: S3Config) -> str | None:
    """Where a table created here lives when neither the config nor the catalog says."""
    assert config.iceberg is not None
    if config.iceberg.location is not None:
        return config.iceberg.location
    if "warehouse" in config.iceberg.catalog:
        return None
    parts = [config.prefix, "_iceberg", *config.iceberg.identifier]
    return f"s3://{config.bucket}/" + "/".join(part for part in parts if part)


class _Table(Table):
    """pyiceberg's table, counting refreshes: its commit refreshes once per conflict."""

    refreshes = 0

    @classmethod
    def of(cls, table: Table, catalog: Catalog) -> _Table:
        return cls(table.name(), table.metadata, table.metadata_location, table.io, catalog)

    def refresh(self) -> Table:
        self.refreshes += 1
        return super().refresh()


class IcebergTable:
    """One destination's table: opened (created, evolved) once, then committed to."""

    def __init__(self, table: _Table, config: S3Config) -> None:
        assert config.iceberg is not None
        self._table = table
        self._bucket = config.bucket
        self._consumer = config.iceberg.consumer
        self.name = config.iceberg.table
        serializer = objects_serializer(config)
        # Our files have no statistics for the documents and json columns (they would
        # bloat the footer), so the table gets no metrics for them either.
        self._no_statistics = [
            name for name in serializer.schema.names if name not in serializer.statistics_columns
        ]

    @classmethod
    def open(cls, config: S3Config) -> IcebergTable:
        """Load the table, creating it (and its namespace) if missing, adding our new columns.

        Raises ConfigError when the table cannot hold our objects as they are.
        """
        iceberg = config.iceberg
        assert iceberg is not None
        with _translated(iceberg.table, "could not open the table"):
            catalog = load_catalog(iceberg.catalog_name, **catalog_properties(config))
            table = _load_or_create(catalog, config)
            _evolve(table, config)
            return cls(_Table.of(table, catalog), config)

    @classmethod
    def load(cls, config: S3Config) -> IcebergTable:
        """Load the table as it is, to read it; raises CatalogError if it does not exist."""
        iceberg = config.iceberg
        assert iceberg is not None
        with _translated(iceberg.table, "could not load the table"):
            catalog = load_catalog(iceberg.catalog_name, **catalog_properties(config))
            return cls(_Table.of(catalog.load_table(iceberg.identifier), catalog), config)

    def commit(self, objects: Sequence[StagedObject], summary: Mapping[str, str]) -> CommitOutcome:
        """Append ``objects`` in one snapshot carrying ``summary``; in the same commit, set
        the consumer's token property to the summary's resume token (if it has one).

        Objects whose last attempt is found in the table landed already and are left
        out; if none is left, nothing is committed.
        """
        with _translated(self.name, "commit failed"):
            table = self._table
            table.refresh()
            earlier = {obj.attempt for obj in objects if obj.attempt is not None}
            landed = (
                frozenset(_attempts_found(table.metadata, earlier, self._consumer))
                if earlier
                else frozenset()
            )
            todo = [obj for obj in objects if obj.attempt not in landed]
            if not todo:
                return CommitOutcome(None, landed, 0)
            metadata = table.metadata
            files = [self._data_file(metadata, obj) for obj in todo]
            refreshes = table.refreshes
            tx = table.transaction()
            # Staged in the same transaction as the snapshot: one commit_table request
            # carries both, and pyiceberg's retry after a conflict keeps this update while
            # it rebuilds the snapshot.
            properties = {}
            token = summary.get(RESUME_TOKEN)
            if token is not None:
                properties[token_property(self._consumer)] = token
            attempt = summary.get(COMMIT_ID)
            if attempt is not None:
                properties[commit_property(self._consumer)] = attempt
            if properties:
                tx.set_properties(properties)
            merge = metadata.properties.get(TableProperties.MANIFEST_MERGE_ENABLED, "false")
            update = tx.update_snapshot(snapshot_properties=dict(summary))
            with (
                update.merge_append() if merge.lower() == "true" else update.fast_append() as append
            ):
                for data_file in files:
                    append.append_data_file(data_file)
            tx.commit_transaction()
            snapshot = table.current_snapshot()
            assert snapshot is not None
            return CommitOutcome(snapshot.snapshot_id, landed, table.refreshes - refreshes)

    def _data_file(self, metadata: TableMetadata, obj: StagedObject) -> DataFile:
        """The data file of an object, from its footer: sizes, counts, bounds, partition."""
        schema = metadata.schema()
        properties = {
            **{f"{METRICS_COLUMN}.{name}": "none" for name in self._no_statistics},
            **metadata.properties,
        }
        statistics = data_file_statistics_from_parquet_metadata(
            parquet_metadata=obj.footer,
            stats_columns=compute_statistics_plan(schema, properties),
            parquet_column_mapping=parquet_path_to_id_mapping(schema),
        )
        time_id = schema.find_field(CLUSTER_TIME).field_id
        has_time = statistics.null_value_counts.get(time_id, 0) < statistics.record_count
        spec = metadata.spec()
        return DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=f"s3://{self._bucket}/{obj.key}",
            file_format=FileFormat.PARQUET,
            partition=partition_value(schema, spec, obj.partition, has_time),
            file_size_in_bytes=obj.size,
            sort_order_id=None,
            spec_id=spec.spec_id,
            equality_ids=None,
            key_metadata=None,
            **statistics.to_serialized_dict(),
        )

    def committed_token(self) -> str | None:
        """The resume token (as stored) of this consumer's newest commit: see
        :func:`consumer_token`."""
        with _translated(self.name, "could not read the table"):
            self._table.refresh()
            return consumer_token(self._table.metadata, self._consumer)

    def referenced_paths(self) -> set[str]:
        """Every data file any snapshot of the table references."""
        with _translated(self.name, "could not read the table's manifests"):
            self._table.refresh()
            files = self._table.inspect.all_data_files()
            return set(files.column("file_path").to_pylist())


def token_property(consumer: str) -> str:
    """The table property holding ``consumer``'s token.

    Consumer names are checked by the config (letters, digits, ``_`` and ``-``), so the
    key needs no escaping and no two consumers share one; this refuses any other name
    rather than write a key another consumer's could collide with.
    """
    return TOKEN_PROPERTY_PREFIX + _property_safe(consumer)


def commit_property(consumer: str) -> str:
    """The table property holding the id of ``consumer``'s newest commit."""
    return COMMIT_PROPERTY_PREFIX + _property_safe(consumer)


def _property_safe(consumer: str) -> str:
    if not _PROPERTY_SAFE.match(consumer):
        raise ValueError(f"consumer name {consumer!r} cannot be part of a table property key")
    return consumer


def consumer_token(metadata: TableMetadata, consumer: str) -> str | None:
    """This consumer's newest token in the table's current history, else its property.

    The snapshot walk comes first, newest first and stopping at the first hit: it
    follows the table where its history goes, so after a rollback the token is that of
    the data the table holds. Where expiry has removed every snapshot of this consumer,
    the table property (set by the same commits) still holds the newest token. Both are
    in the table metadata already loaded, so this reads no manifest.
    """
    for snapshot in ancestors_of(metadata.current_snapshot(), metadata):
        summary = snapshot.summary
        if summary is not None and summary[CONSUMER] == consumer:
            token = summary[RESUME_TOKEN]
            if token is not None:
                return str(token)
    return metadata.properties.get(token_property(consumer))


def _attempts_found(metadata: TableMetadata, attempts: Iterable[str], consumer: str) -> set[str]:
    """Which of ``attempts`` landed: named in a snapshot's summary, or, for the newest
    commit of ``consumer`` (the only one whose answer can be unknown to it), in its
    property, which outlives the snapshot."""
    wanted = set(attempts)
    found = set()
    newest = metadata.properties.get(commit_property(consumer))
    if newest in wanted:
        found.add(newest)
    for snapshot in metadata.snapshots:
        attempt = _summary_value(snapshot, COMMIT_ID)
        if attempt in wanted:
            found.add(attempt)
    return found


def _summary_value(snapshot: Snapshot, key: str) -> str | None:
    if snapshot.summary is None:
        return None
    value = snapshot.summary[key]
    return None if value is None else str(value)


def _evolve(table: Table, config: S3Config) -> None:
    """Add the columns of ours the table lacks; raise ConfigError if it conflicts with ours."""
    iceberg = config.iceberg
    assert iceberg is not None
    ours = table_schema(objects_serializer(config).schema)
    missing = check_table(table.schema(), table.spec(), ours, config.key_strategy, config.columns)
    if missing:
        log.info(
            "adding columns %s to Iceberg table %s",
            field_names(missing),
            iceberg.table,
            extra={"table": iceberg.table},
        )
        with table.update_schema() as update:
            for field in missing:
                update.add_column(field.name, field.field_type, doc=field.doc)
    if table.metadata.name_mapping() is None:  # a table made by another writer
        # Our files carry no field ids; readers map their columns by name.
        mapping = table.schema().name_mapping.model_dump_json()
        with table.transaction() as tx:
            tx.set_properties({TableProperties.DEFAULT_NAME_MAPPING: mapping})


def _load_or_create(catalog: Catalog, config: S3Config) -> Table:
    iceberg = config.iceberg
    assert iceberg is not None
    namespace = iceberg.identifier[:-1]
    catalog.create_namespace_if_not_exists(namespace)
    try:
        return catalog.load_table(iceberg.identifier)
    except NoSuchTableError:
        pass
    schema: Schema = table_schema(objects_serializer(config).schema)
    try:
        table = catalog.create_table(
            iceberg.identifier,
            schema,
            location=default_location(config),
            partition_spec=partition_spec(schema, config.key_strategy),
            properties={
                **NEW_TABLE_PROPERTIES,
                # Our files carry no field ids; readers map their columns by name.
                TableProperties.DEFAULT_NAME_MAPPING: schema.name_mapping.model_dump_json(),
            },
        )
    except TableAlreadyExistsError:  # another process created it first
        return catalog.load_table(iceberg.identifier)
    log.info(
        "created Iceberg table %s at %s",
        iceberg.table,
        table.location(),
        extra={"table": iceberg.table},
    )
    return table


@contextlib.contextmanager
def _translated(table: str, what: str) -> Iterator[None]:
    """Turns whatever pyiceberg, a catalog client or our own code raises into a
    CatalogError caused by it (see :func:`transient` for which are worth retrying)."""
    try:
        yield
    except (ConfigError, CatalogError):
        raise
    except Exception as exc:
        raise CatalogError(table, 1, f"{what}: {_describe(exc)}") from exc


_PYICEBERG_TRANSIENT = (
    CommitFailedException,  # another writer committed first: refresh and try again
    CommitStateUnknownException,  # may have landed: the commit id tells on the next attempt
    WaitingForLockException,
    ServerError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
_SETTLED_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
"""OS errors that sending the same request again does not change."""


def transient(exc: BaseException) -> bool:
    """True when the failed catalog or storage request may succeed if sent again.

    Conflicts, an unknown commit state, connection and server errors are transient; a
    bug or a table that no longer fits our objects (KeyError, TypeError, ValueError,
    pyiceberg's validation errors) is not, and retrying would only delay the report.
    Catalog clients are optional, so their error classes are looked up only if their
    module is loaded: an error cannot come from a module nobody imported.
    """
    if isinstance(exc, _PYICEBERG_TRANSIENT):
        return True
    requests = sys.modules.get("requests.exceptions")
    if requests is not None and isinstance(exc, requests.RequestException):
        # RequestException is an OSError: decide before the OSError rule below.
        if isinstance(exc, requests.HTTPError):
            status = getattr(exc.response, "status_code", None)
            return status is not None and (status >= 500 or status in (408, 429))
        return isinstance(
            exc, (requests.ConnectionError, requests.Timeout, requests.ChunkedEncodingError)
        )
    sqlalchemy = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy is not None:
        if isinstance(exc, (sqlalchemy.OperationalError, sqlalchemy.DisconnectionError)):
            return True  # database locked or unreachable, connection dropped
        if isinstance(exc, sqlalchemy.TimeoutError):
            return True  # no pooled connection came free in time
        if isinstance(exc, sqlalchemy.DBAPIError):
            return bool(exc.connection_invalidated)
    thrift = sys.modules.get("thrift.transport.TTransport")
    if thrift is not None and isinstance(exc, thrift.TTransportException):
        return True  # the Hive metastore's connection
    if isinstance(exc, (boto_errors.BotoCoreError, boto_errors.ClientError)):
        return s3_transient(exc)  # Glue and DynamoDB speak botocore, as S3 does
    return isinstance(exc, OSError) and not isinstance(exc, _SETTLED_OS_ERRORS)


def _describe(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def token_text(token: Any) -> str:
    """A resume token as summary text: canonical Extended JSON (exact for BSON values)."""
    try:
        from bson import json_util
    except ImportError:
        return json.dumps(token, separators=(",", ":"), sort_keys=False)
    return json_util.dumps(token, json_options=json_util.CANONICAL_JSON_OPTIONS)


def token_value(text: str) -> Any:
    """The resume token :func:`token_text` wrote, as ``watch(resume_after=...)`` takes it."""
    try:
        from bson import json_util
    except ImportError:
        return json.loads(text)
    return json_util.loads(text)
