"""The table's shape: the Parquet envelope in Iceberg types, and partitions that match the keys.

Pure functions over pyiceberg's schema and partition-spec values; nothing here talks
to a catalog. A table we create gets :func:`table_schema` and :func:`partition_spec`;
a table that exists is checked by :func:`check_table`, which lists the columns to add
and names anything that would make our objects wrong in it.

Partition values are not inferred from file statistics: every object holds one
partition of :mod:`rigatoni_s3.keys` (one collection, one hour or day), so the value
is known exactly, whatever the length of a collection name.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import (
    DayTransform,
    HourTransform,
    IdentityTransform,
    TimeResolution,
    TimeTransform,
    VoidTransform,
)
from pyiceberg.typedef import Record
from pyiceberg.types import (
    IcebergType,
    LongType,
    NestedField,
    PrimitiveType,
    StringType,
    TimestamptzType,
)

from rigatoni_s3.config import KeyGenerationStrategy
from rigatoni_s3.errors import ConfigError
from rigatoni_s3.keys import DAY, HOUR, PartitionKey, granularity

COLLECTION = "collection"
CLUSTER_TIME = "cluster_time"
PARTITION_FIELD_ID = 1000
"""Iceberg numbers partition fields from 1000."""

_TYPES: dict[pa.DataType, PrimitiveType] = {
    pa.string(): StringType(),
    pa.int64(): LongType(),
    pa.timestamp("us", tz="UTC"): TimestamptzType(),
}
"""Arrow types of our Parquet columns and the Iceberg type each is read as."""


def table_schema(arrow_schema: pa.Schema) -> Schema:
    """The Iceberg schema of Parquet objects with ``arrow_schema``: same names, same order."""
    return Schema(
        *(
            NestedField(field_id, field.name, _iceberg_type(field), required=not field.nullable)
            for field_id, field in enumerate(arrow_schema, 1)
        )
    )


def _iceberg_type(field: pa.Field) -> PrimitiveType:
    try:
        return _TYPES[field.type]
    except KeyError:
        raise TypeError(f"no Iceberg type for column {field.name!r} ({field.type})") from None


def partition_spec(schema: Schema, strategy: KeyGenerationStrategy) -> PartitionSpec:
    """The spec that matches ``strategy``'s keys: identity(collection), then hour or day."""
    if strategy is KeyGenerationStrategy.FLAT:
        return PartitionSpec()
    fields = [
        PartitionField(
            schema.find_field(COLLECTION).field_id,
            PARTITION_FIELD_ID,
            IdentityTransform(),
            COLLECTION,
        )
    ]
    step = granularity(strategy)
    if step is not None:
        transform: TimeTransform[IcebergType] = HourTransform() if step == HOUR else DayTransform()
        suffix = "hour" if step == HOUR else "day"
        fields.append(
            PartitionField(
                schema.find_field(CLUSTER_TIME).field_id,
                PARTITION_FIELD_ID + 1,
                transform,
                f"{CLUSTER_TIME}_{suffix}",
            )
        )
    return PartitionSpec(*fields)


def check_table(
    table: Schema, spec: PartitionSpec, ours: Schema, strategy: KeyGenerationStrategy
) -> list[NestedField]:
    """Our columns the table lacks (to add, optional); raises ConfigError on a conflict.

    Compatible means: each of our columns the table has is of the same type, and not
    required there unless it is required in our objects too; the table's own extra
    columns are optional; each partition field can be derived from our key layout.
    """
    missing: list[NestedField] = []
    problems: list[str] = []
    for field in ours.fields:
        try:
            theirs = table.find_field(field.name)
        except ValueError:
            missing.append(field)
            continue
        if theirs.field_type != field.field_type:
            problems.append(
                f"column {field.name!r} is {theirs.field_type} in the table, "
                f"{field.field_type} in our objects"
            )
        elif theirs.required and not field.required:
            problems.append(f"column {field.name!r} is required in the table, but may be null")
    names = {field.name for field in ours.fields}
    problems.extend(
        f"required column {field.name!r} is not written by rigatoni-s3"
        for field in table.fields
        if field.required and field.name not in names
    )
    problems.extend(_partition_problems(table, spec, strategy))
    if problems:
        raise ConfigError("iceberg.table", "; ".join(problems))
    return missing


def _partition_problems(
    schema: Schema, spec: PartitionSpec, strategy: KeyGenerationStrategy
) -> list[str]:
    step = granularity(strategy)
    problems = []
    for field in spec.fields:
        source = schema.find_field(field.source_id).name
        transform = field.transform
        if isinstance(transform, VoidTransform):
            continue
        if source == COLLECTION and isinstance(transform, IdentityTransform):
            continue
        if source == CLUSTER_TIME and isinstance(transform, TimeTransform):
            finest = {HOUR: TimeResolution.HOUR, DAY: TimeResolution.DAY}.get(step or 0)
            if finest is not None and transform.granularity >= finest:
                continue
            problems.append(
                f"partition field {field.name!r} ({transform}) is finer than the objects of "
                f"key_strategy {strategy.name}"
            )
            continue
        problems.append(
            f"partition field {field.name!r} ({transform} of {source!r}) cannot be derived "
            "from the object keys; only identity(collection) and hour/day/month/year"
            "(cluster_time) can"
        )
    return problems


def partition_value(
    schema: Schema, spec: PartitionSpec, partition: PartitionKey, has_time: bool
) -> Record:
    """The partition tuple of an object of ``partition``.

    ``has_time`` says whether any of its events has a ``cluster_time``; an object of
    events without one (placed by the time they were written) is in the null partition.
    """
    values: list[object] = []
    for field in spec.fields:
        source = schema.find_field(field.source_id)
        transform = field.transform
        if isinstance(transform, VoidTransform):
            values.append(None)
        elif source.name == COLLECTION:
            values.append(partition.collection)
        elif has_time and partition.period_start is not None:
            micros = partition.period_start * 1_000_000
            values.append(transform.transform(source.field_type)(micros))
        else:
            values.append(None)
    return Record(*values)


def field_names(fields: Sequence[NestedField]) -> str:
    return ", ".join(repr(field.name) for field in fields)
