"""The table's shape: our Parquet columns in Iceberg types, and partitions that match the keys.

Pure functions over pyiceberg's schema and partition-spec values; nothing here talks
to a catalog. The columns are those of the objects the destination writes (the
envelope, then the typed columns), read off the serializer's Arrow schema, so the table
and the files cannot disagree. A table we create gets :func:`table_schema` and
:func:`partition_spec`; a table that exists is checked by :func:`check_table`, which
lists the columns to add and names anything that would make our objects wrong in it.

Partition values are not inferred from file statistics: every object holds one
partition of :mod:`rigatoni_s3.keys` (one collection, one hour or day), so the value
is known exactly, whatever the length of a collection name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    IcebergType,
    LongType,
    NestedField,
    PrimitiveType,
    StringType,
    TimestamptzType,
)

from rigatoni_s3.columns import Column
from rigatoni_s3.config import KeyGenerationStrategy
from rigatoni_s3.errors import ConfigError
from rigatoni_s3.keys import DAY, HOUR, PartitionKey, granularity

COLLECTION = "collection"
CLUSTER_TIME = "cluster_time"
PARTITION_FIELD_ID = 1000
"""Iceberg numbers partition fields from 1000."""

_TYPES: dict[pa.DataType, PrimitiveType] = {
    pa.string(): StringType(),  # also typed json columns
    pa.int64(): LongType(),
    pa.float64(): DoubleType(),
    pa.bool_(): BooleanType(),
    pa.timestamp("us", tz="UTC"): TimestamptzType(),
    pa.date32(): DateType(),
}
"""Arrow types of our Parquet columns and the Iceberg type each is read as; a
``decimal128(p, s)`` is ``decimal(p, s)``."""


def table_schema(arrow_schema: pa.Schema) -> Schema:
    """The Iceberg schema of Parquet objects with ``arrow_schema``: same names, same order."""
    return Schema(
        *(
            NestedField(field_id, field.name, _iceberg_type(field), required=not field.nullable)
            for field_id, field in enumerate(arrow_schema, 1)
        )
    )


def _iceberg_type(field: pa.Field) -> PrimitiveType:
    if pa.types.is_decimal128(field.type):
        return DecimalType(field.type.precision, field.type.scale)
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
    table: Schema,
    spec: PartitionSpec,
    ours: Schema,
    strategy: KeyGenerationStrategy,
    columns: Mapping[str, Column] | None = None,
) -> list[NestedField]:
    """Our columns the table lacks (to add, optional); raises ConfigError on a conflict.

    Compatible means: each of our columns the table has is of the same type, and not
    required there unless it is required in our objects too; the table's own extra
    columns are optional; each partition field can be derived from our key layout.
    ``columns`` are the typed columns, named as such in a message about one of them.
    """
    typed = columns or {}
    missing: list[NestedField] = []
    problems: list[str] = []
    for field in ours.fields:
        try:
            theirs = table.find_field(field.name)
        except ValueError:
            other = _other_case(table, field.name)
            if other is None:
                missing.append(field)
            else:  # Athena, Spark and Trino match names ignoring case: one would hide the other
                problems.append(
                    f"column {field.name!r} differs from the table's {other!r} only in case"
                )
            continue
        if theirs.field_type != field.field_type:
            column = typed.get(field.name)
            what, declared = (
                ("column", "")
                if column is None
                else ("typed column", f" (declared {column.type} at {column.path})")
            )
            problems.append(
                f"{what} {field.name!r} is {theirs.field_type} in the table, "
                f"{field.field_type} in our objects{declared}"
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


def _other_case(table: Schema, name: str) -> str | None:
    try:
        return table.find_field(name, case_sensitive=False).name
    except ValueError:
        return None


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
