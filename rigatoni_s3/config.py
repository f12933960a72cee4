"""Configuration: what to write, where, and when to flush.

``S3Config`` is a frozen value validated at construction, so a bad setting fails
when the program starts, not at the first upload. Build it with keywords or with
the builder the original specification uses::

    S3Config.builder().bucket("my-data-lake").region("us-east-1").prefix("mongodb/events").build()
"""

from __future__ import annotations

import enum
import importlib.util
import ipaddress
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import attrs

from rigatoni_s3.columns import Column, check_names, to_columns
from rigatoni_s3.errors import ConfigError

MiB = 1024 * 1024


class SerializationFormat(enum.Enum):
    """The file format of the objects written."""

    JSON = "json"
    """Newline-delimited JSON (``.jsonl``), one change event per line. The default."""
    CSV = "csv"
    """RFC 4180 CSV with a header row; documents JSON-encoded in their cells."""
    PARQUET = "parquet"
    """Apache Parquet (needs the ``parquet`` extra); compression becomes the column codec."""
    AVRO = "avro"
    """Avro object container files (needs the ``avro`` extra); compression becomes the block codec."""


class Compression(enum.Enum):
    """How object bodies are compressed."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"
    """Zstandard (needs the ``zstd`` extra, except for Parquet where pyarrow provides it)."""


class KeyGenerationStrategy(enum.Enum):
    """How object keys are laid out under the prefix. See :mod:`rigatoni_s3.keys`."""

    HIVE_PARTITIONED = "hive_partitioned"
    """``{prefix}/collection={c}/year={Y}/month={M}/day={D}/hour={H}/{file}``"""
    DATE_HOUR_PARTITIONED = "date_hour_partitioned"
    """``{prefix}/{c}/{Y}/{M}/{D}/{H}/{file}``; the default."""
    DATE_PARTITIONED = "date_partitioned"
    """``{prefix}/{c}/{Y}/{M}/{D}/{file}``"""
    COLLECTION_BASED = "collection_based"
    """``{prefix}/{c}/{file}``"""
    FLAT = "flat"
    """``{prefix}/{c}_{file}``"""


E = TypeVar("E", bound=enum.Enum)


def _convert_enum(enum_type: type[E], value: Any, field: str) -> E:
    """Accept a member, its value or its name (any case), so ``format="parquet"`` works."""
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        for member in enum_type:
            if value.lower() in (member.value, member.name.lower()):
                return member
    choices = ", ".join(m.name for m in enum_type)
    raise ConfigError(field, f"{value!r} is not one of {enum_type.__name__}.{{{choices}}}")


def _to_format(value: Any) -> SerializationFormat:
    return _convert_enum(SerializationFormat, value, "format")


def _to_compression(value: Any) -> Compression:
    return _convert_enum(Compression, value, "compression")


def _to_key_strategy(value: Any) -> KeyGenerationStrategy:
    return _convert_enum(KeyGenerationStrategy, value, "key_strategy")


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_WRITER_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def _check_bucket(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError("bucket", "is required and must be a non-empty string")
    if not _BUCKET_RE.match(value):
        raise ConfigError(
            "bucket",
            f"{value!r} breaks S3 naming rules: 3-63 characters of lowercase letters, digits, "
            "'.' and '-', starting and ending with a letter or digit",
        )
    if ".." in value or ".-" in value or "-." in value:
        raise ConfigError("bucket", f"{value!r} has adjacent '.'/'-' characters")
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        pass
    else:
        raise ConfigError("bucket", f"{value!r} must not be formatted as an IP address")
    if value.startswith(("xn--", "sthree-")) or value.endswith(("-s3alias", "--ol-s3")):
        raise ConfigError("bucket", f"{value!r} uses a prefix or suffix reserved by S3")


def _check_region(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("region", "is required and must be a non-empty string, e.g. 'us-east-1'")


def _normalise_prefix(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError("prefix", f"must be a string, got {type(value).__name__}")
    if value.startswith("/"):
        raise ConfigError("prefix", f"{value!r} must not start with '/'")
    stripped = value.rstrip("/")
    segments = stripped.split("/") if stripped else []
    if any(s in ("..", ".") for s in segments):
        raise ConfigError("prefix", f"{value!r} must not contain '.' or '..' segments")
    if any(not s for s in segments):
        raise ConfigError("prefix", f"{value!r} must not contain empty segments ('//')")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in stripped):
        raise ConfigError("prefix", f"{value!r} must not contain control characters")
    return stripped


def _check_endpoint(_: object, __: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("endpoint_url", f"{value!r} must be an http:// or https:// URL")


def _non_negative_int(name: str) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(_: object, __: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(name, f"must be an integer >= 0, got {value!r}")

    return check


def _positive(name: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_: object, __: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(name, f"must be a number > 0, got {value!r}")

    return check


def _positive_int(name: str) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(_: object, __: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(name, f"must be an integer > 0, got {value!r}")

    return check


def _check_part_size(_: object, __: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 5 * MiB:
        raise ConfigError("multipart_part_size", f"must be at least 5 MiB (5242880), got {value!r}")


def _to_optional_path(value: Any) -> Path | None:
    if value is None or isinstance(value, Path):
        return value
    if isinstance(value, str) and value:
        return Path(value)
    raise ConfigError("dead_letter_dir", f"must be a path or None, got {value!r}")


def _check_column_names(
    config: S3Config, _: attrs.Attribute[Mapping[str, Column]], columns: Mapping[str, Column]
) -> None:
    # attrs runs validators once every field is set, so the key strategy is known here.
    check_names(columns, hive=config.key_strategy is KeyGenerationStrategy.HIVE_PARTITIONED)


SSE_ALGORITHMS = ("AES256", "aws:kms", "aws:kms:dsse")
STORAGE_CLASSES = (
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
)
CHECKSUM_ALGORITHMS = ("CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME", "MD5")


def _one_of(
    name: str, choices: tuple[str, ...]
) -> Callable[[object, attrs.Attribute[str | None], str | None], None]:
    def check(_: object, __: attrs.Attribute[str | None], value: str | None) -> None:
        if value is not None and value not in choices:
            raise ConfigError(name, f"{value!r} is not one of {', '.join(choices)}")

    return check


def _check_tags(_: object, __: attrs.Attribute[Mapping[str, str]], tags: Mapping[str, str]) -> None:
    if len(tags) > 10:
        raise ConfigError("object_tags", f"S3 allows at most 10 tags per object, got {len(tags)}")
    for key, value in tags.items():
        if (
            not isinstance(key, str)
            or not isinstance(value, str)
            or not 0 < len(key) <= 128
            or len(value) > 256
        ):
            raise ConfigError(
                "object_tags", f"tag {key!r}: keys are 1-128 characters, values up to 256"
            )


def _check_checksum(_: object, __: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    if value not in CHECKSUM_ALGORITHMS:
        raise ConfigError(
            "checksum_algorithm", f"{value!r} is not one of {', '.join(CHECKSUM_ALGORITHMS)}"
        )
    if value in ("CRC32C", "CRC64NVME") and _module_missing("awscrt"):
        raise ConfigError(
            "checksum_algorithm", f"{value} needs the AWS CRT; install it with: pip install awscrt"
        )


_IDENTIFIER_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


def _check_table(_: object, __: attrs.Attribute[str], value: str) -> None:
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) < 2 or not all(_IDENTIFIER_PART_RE.match(part) for part in parts):
        raise ConfigError(
            "iceberg.table",
            f"{value!r} must be 'namespace.table' (letters, digits, '_' and '-'; "
            "a namespace may have several levels)",
        )


def _check_name(name: str) -> Callable[[object, attrs.Attribute[str], str], None]:
    def check(_: object, __: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not _IDENTIFIER_PART_RE.match(value):
            raise ConfigError(name, f"{value!r} must be letters, digits, '_' and '-'")

    return check


def _check_catalog(
    _: object, __: attrs.Attribute[Mapping[str, str]], value: Mapping[str, str]
) -> None:
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ConfigError(
                "iceberg.catalog", f"properties are strings, as load_catalog takes them: {key!r}"
            )


def _to_properties(value: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError("iceberg.catalog", f"must be a mapping, got {type(value).__name__}")
    return dict(value)


@attrs.frozen(kw_only=True)
class IcebergConfig:
    """Register every Parquet object with an Apache Iceberg table (needs the ``iceberg`` extra).

    Objects are committed in batches; each commit's snapshot summary carries the
    consumer's resume token, so the table and the checkpoint move together. See
    :mod:`rigatoni_s3.iceberg`.
    """

    catalog: Mapping[str, str] = attrs.field(
        converter=_to_properties, validator=_check_catalog, repr=False
    )
    """Catalog properties as ``pyiceberg.catalog.load_catalog(name, **properties)`` takes
    them, e.g. ``{"type": "sql", "uri": "sqlite:///catalog.db"}``. ``s3.*`` properties
    that are missing come from the destination (endpoint, region, path style, keys)."""
    table: str = attrs.field(validator=_check_table)
    """``namespace.table``; created (with its namespace) at start if missing."""
    catalog_name: str = attrs.field(
        default="default", validator=_check_name("iceberg.catalog_name")
    )
    """The name given to ``load_catalog`` (it picks a section of ``~/.pyiceberg.yaml``)."""
    consumer: str = attrs.field(default="default", validator=_check_name("iceberg.consumer"))
    """A stable name for this stream's position; consumers sharing a table keep apart tokens."""
    commit_interval: float = attrs.field(
        default=60.0, validator=_positive("iceberg.commit_interval")
    )
    """Seconds between commits while events arrive."""
    commit_max_files: int = attrs.field(
        default=1000, validator=_positive_int("iceberg.commit_max_files")
    )
    """A commit starts early once this many objects wait for one."""
    location: str | None = None
    """Where a table created here keeps its metadata. None: the catalog's ``warehouse``
    if it has one, else ``s3://{bucket}/{prefix}/_iceberg/{namespace}/{table}``."""

    @property
    def identifier(self) -> tuple[str, ...]:
        """The table identifier as pyiceberg takes it: namespace levels, then the name."""
        return tuple(self.table.split("."))


def _to_iceberg(value: Any) -> IcebergConfig | None:
    if value is None or isinstance(value, IcebergConfig):
        return value
    if isinstance(value, Mapping):
        try:
            return IcebergConfig(**value)
        except TypeError as exc:
            raise ConfigError("iceberg", str(exc)) from exc
    raise ConfigError("iceberg", f"must be an IcebergConfig or None, got {type(value).__name__}")


def _check_writer_id(_: object, __: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not (isinstance(value, str) and _WRITER_ID_RE.match(value)):
        raise ConfigError(
            "writer_id", f"{value!r} must be 1-32 lowercase letters, digits or '-' characters"
        )


@attrs.frozen(kw_only=True)
class S3Config:
    """Where and how :class:`~rigatoni_s3.S3Destination` writes.

    Only ``bucket`` and ``region`` are required. Credentials come from the standard
    AWS chain (environment, profile, instance role) unless given here.
    """

    bucket: str = attrs.field(validator=_check_bucket)
    """Target bucket; must already exist."""
    region: str = attrs.field(validator=_check_region)
    """AWS region of the bucket, e.g. ``us-east-1``."""
    prefix: str = attrs.field(default="", converter=_normalise_prefix)
    """Key prefix for every object; a trailing ``/`` is dropped. Empty means the bucket root."""
    format: SerializationFormat = attrs.field(
        default=SerializationFormat.JSON, converter=_to_format
    )
    """File format. Default JSON Lines."""
    compression: Compression = attrs.field(default=Compression.NONE, converter=_to_compression)
    """Compression. Default none."""
    key_strategy: KeyGenerationStrategy = attrs.field(
        default=KeyGenerationStrategy.DATE_HOUR_PARTITIONED,
        converter=_to_key_strategy,
    )
    """Object key layout. Default date-hour partitioned."""
    columns: Mapping[str, Column] = attrs.field(
        factory=dict, converter=to_columns, validator=_check_column_names
    )
    """Typed columns written after the envelope, by name, in this order (see
    :class:`~rigatoni_s3.columns.Column`). Names must differ from the envelope's and, with
    Hive keys, from the partition columns."""
    max_retries: int = attrs.field(default=3, validator=_non_negative_int("max_retries"))
    """Retries of a transient upload failure after the first attempt (so 3 means 4 attempts)."""
    endpoint_url: str | None = attrs.field(default=None, validator=_check_endpoint)
    """Custom S3 endpoint (MinIO, LocalStack, Ceph); None for AWS."""
    force_path_style: bool = False
    """Address buckets as ``endpoint/bucket/key``; needed by most S3-compatible servers."""
    aws_access_key_id: str | None = attrs.field(default=None, repr=False)
    aws_secret_access_key: str | None = attrs.field(default=None, repr=False)
    aws_session_token: str | None = attrs.field(default=None, repr=False)

    max_batch_events: int = attrs.field(default=10_000, validator=_positive_int("max_batch_events"))
    """A partition's buffer is written once it holds this many events."""
    max_batch_bytes: int = attrs.field(default=64 * MiB, validator=_positive_int("max_batch_bytes"))
    """... or this many bytes of encoded rows (before compression)."""
    flush_interval: float = attrs.field(default=60.0, validator=_positive("flush_interval"))
    """... or this many seconds after its first event arrived, whichever comes first."""
    max_buffer_bytes: int = attrs.field(
        default=256 * MiB, validator=_positive_int("max_buffer_bytes")
    )
    """Bound on bytes held across all buffers and uploads; ``write_batch`` waits beyond it."""
    max_concurrent_uploads: int = attrs.field(
        default=8, validator=_positive_int("max_concurrent_uploads")
    )
    """Objects uploaded at the same time."""
    retry_base_delay: float = attrs.field(default=0.2, validator=_positive("retry_base_delay"))
    """First backoff ceiling in seconds; it doubles each retry (full jitter)."""
    retry_max_delay: float = attrs.field(default=20.0, validator=_positive("retry_max_delay"))
    """Largest backoff ceiling in seconds."""
    request_timeout: float = attrs.field(default=60.0, validator=_positive("request_timeout"))
    """Connect and read timeout of one S3 request, in seconds."""
    writer_id: str | None = attrs.field(default=None, validator=_check_writer_id)
    """Part of every file name, unique per writer. None draws a random one per destination."""
    multipart_threshold: int = attrs.field(
        default=32 * MiB, validator=_positive_int("multipart_threshold")
    )
    """Objects of at least this many bytes (after compression) are uploaded in parts."""
    multipart_part_size: int = attrs.field(default=8 * MiB, validator=_check_part_size)
    """Size of each part of a multipart upload; S3 requires at least 5 MiB."""
    dead_letter_dir: Path | None = attrs.field(default=None, converter=_to_optional_path)
    """If set, an object whose upload exhausts its retries is saved here (see ``replay_dead_letters``)
    instead of being kept in memory for the next flush."""
    on_durable: Callable[[Any], None] | None = attrs.field(default=None, eq=False, repr=False)
    """Called on the event loop with the new ``durable_resume_token`` whenever it advances."""
    check_conditional_writes: bool = True
    """At start, check that the server refuses to overwrite (``If-None-Match``); warn if not."""

    server_side_encryption: str | None = attrs.field(
        default=None, validator=_one_of("server_side_encryption", SSE_ALGORITHMS)
    )
    """``AES256`` (SSE-S3), ``aws:kms`` or ``aws:kms:dsse``; None keeps the bucket's default."""
    sse_kms_key_id: str | None = None
    """KMS key id or ARN for ``aws:kms``; None uses the AWS-managed key."""
    storage_class: str | None = attrs.field(
        default=None, validator=_one_of("storage_class", STORAGE_CLASSES)
    )
    """e.g. ``STANDARD_IA`` or ``INTELLIGENT_TIERING``; None is ``STANDARD``."""
    object_tags: Mapping[str, str] = attrs.field(
        factory=dict, converter=dict, validator=_check_tags
    )
    """Tags put on every object (at most 10)."""
    checksum_algorithm: str | None = attrs.field(default=None, validator=_check_checksum)
    """Integrity check sent with each upload: ``CRC32``, ``CRC32C``, ``SHA1``, ``SHA256``,
    ``CRC64NVME``, or ``MD5`` (Content-MD5, for servers without the newer checksums).
    None sends CRC32, botocore's default. CRC32, SHA1 and SHA256 are computed in a worker
    thread, not on the event loop; CRC32C and CRC64NVME are left to botocore."""
    iceberg: IcebergConfig | None = attrs.field(default=None, converter=_to_iceberg)
    """Commit the objects to an Apache Iceberg table (Parquet only); see :class:`IcebergConfig`."""

    def __attrs_post_init__(self) -> None:
        if self.sse_kms_key_id is not None and not (self.server_side_encryption or "").startswith(
            "aws:kms"
        ):
            raise ConfigError(
                "sse_kms_key_id", "needs server_side_encryption='aws:kms' (or 'aws:kms:dsse')"
            )
        if self.retry_max_delay < self.retry_base_delay:
            raise ConfigError("retry_max_delay", "must be >= retry_base_delay")
        if self.max_batch_bytes > self.max_buffer_bytes:
            raise ConfigError(
                "max_batch_bytes",
                f"({self.max_batch_bytes}) must not exceed max_buffer_bytes ({self.max_buffer_bytes})",
            )
        _check_extras(self.format, self.compression)
        if self.iceberg is not None:
            _check_iceberg(self)

    @staticmethod
    def builder() -> S3ConfigBuilder:
        """Start a builder; ``build()`` validates everything at once."""
        return S3ConfigBuilder()


_EXTRA_FOR_MODULE = {
    "pyarrow": "parquet",
    "fastavro": "avro",
    "zstandard": "zstd",
    "backports.zstd": "avro",
    "pyiceberg": "iceberg",
}


def _check_iceberg(config: S3Config) -> None:
    """An Iceberg table holds Parquet files, and only what a commit made part of it."""
    if config.format is not SerializationFormat.PARQUET:
        raise ConfigError(
            "iceberg",
            f"needs format=PARQUET (Iceberg tables hold Parquet files), got {config.format.name}",
        )
    if config.dead_letter_dir is not None:
        raise ConfigError(
            "dead_letter_dir",
            "cannot be used with iceberg: a saved object is not in the table, so no commit "
            "could move the resume token past it",
        )
    if _module_missing("pyiceberg"):
        raise ConfigError(
            "iceberg",
            "pyiceberg is not installed; install it with: pip install 'rigatoni-s3[iceberg]'",
        )


def _check_extras(fmt: SerializationFormat, compression: Compression) -> None:
    """Fail at build time, naming the extra to install, rather than at the first flush."""
    needed: list[str] = []
    if fmt is SerializationFormat.PARQUET:
        needed.append("pyarrow")  # pyarrow brings its own gzip and zstd codecs
    elif fmt is SerializationFormat.AVRO:
        needed.append("fastavro")
        if compression is Compression.ZSTD and sys.version_info < (3, 14):
            needed.append("backports.zstd")  # fastavro's zstandard codec
    elif compression is Compression.ZSTD:
        needed.append("zstandard")
    for module in needed:
        if _module_missing(module):
            extra = _EXTRA_FOR_MODULE[module]
            field = "compression" if module in ("zstandard", "backports.zstd") else "format"
            raise ConfigError(
                field,
                f"{module} is not installed; install it with: pip install 'rigatoni-s3[{extra}]'",
            )


def _module_missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:  # the parent package of a dotted name is missing
        return True


class S3ConfigBuilder:
    """Fluent construction of :class:`S3Config`; every method returns the builder."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._columns: list[tuple[str, dict[str, str]]] = []

    def _set(self, name: str, value: Any) -> Self:
        self._values[name] = value
        return self

    def bucket(self, value: str) -> Self:
        return self._set("bucket", value)

    def region(self, value: str) -> Self:
        return self._set("region", value)

    def prefix(self, value: str) -> Self:
        return self._set("prefix", value)

    def format(self, value: SerializationFormat | str) -> Self:
        return self._set("format", value)

    def compression(self, value: Compression | str) -> Self:
        return self._set("compression", value)

    def key_strategy(self, value: KeyGenerationStrategy | str) -> Self:
        return self._set("key_strategy", value)

    def column(self, name: str, path: str, type: str) -> Self:
        """Add a typed column after those added before; checked by ``build()``."""
        self._columns.append((name, {"path": path, "type": type}))
        return self

    def max_retries(self, value: int) -> Self:
        return self._set("max_retries", value)

    def endpoint_url(self, value: str | None) -> Self:
        return self._set("endpoint_url", value)

    def force_path_style(self, value: bool) -> Self:
        return self._set("force_path_style", value)

    def credentials(
        self, access_key_id: str, secret_access_key: str, session_token: str | None = None
    ) -> Self:
        self._set("aws_access_key_id", access_key_id)
        self._set("aws_secret_access_key", secret_access_key)
        return self._set("aws_session_token", session_token)

    def max_batch_events(self, value: int) -> Self:
        return self._set("max_batch_events", value)

    def max_batch_bytes(self, value: int) -> Self:
        return self._set("max_batch_bytes", value)

    def flush_interval(self, value: float) -> Self:
        return self._set("flush_interval", value)

    def max_buffer_bytes(self, value: int) -> Self:
        return self._set("max_buffer_bytes", value)

    def max_concurrent_uploads(self, value: int) -> Self:
        return self._set("max_concurrent_uploads", value)

    def retry_delays(self, base: float, maximum: float) -> Self:
        self._set("retry_base_delay", base)
        return self._set("retry_max_delay", maximum)

    def request_timeout(self, value: float) -> Self:
        return self._set("request_timeout", value)

    def writer_id(self, value: str | None) -> Self:
        return self._set("writer_id", value)

    def multipart(self, threshold: int, part_size: int) -> Self:
        self._set("multipart_threshold", threshold)
        return self._set("multipart_part_size", part_size)

    def dead_letter_dir(self, value: str | Path | None) -> Self:
        return self._set("dead_letter_dir", value)

    def on_durable(self, callback: Callable[[Any], None] | None) -> Self:
        return self._set("on_durable", callback)

    def check_conditional_writes(self, value: bool) -> Self:
        return self._set("check_conditional_writes", value)

    def server_side_encryption(self, algorithm: str | None, kms_key_id: str | None = None) -> Self:
        self._set("server_side_encryption", algorithm)
        return self._set("sse_kms_key_id", kms_key_id)

    def storage_class(self, value: str | None) -> Self:
        return self._set("storage_class", value)

    def object_tags(self, tags: Mapping[str, str]) -> Self:
        return self._set("object_tags", tags)

    def checksum_algorithm(self, value: str | None) -> Self:
        return self._set("checksum_algorithm", value)

    def iceberg(self, value: IcebergConfig | None = None, /, **options: Any) -> Self:
        """Commit to an Iceberg table: an :class:`IcebergConfig`, or its fields as keywords."""
        if options:
            if value is not None:
                raise ConfigError("iceberg", "give an IcebergConfig or keywords, not both")
            return self._set("iceberg", options)
        return self._set("iceberg", value)

    def build(self) -> S3Config:
        """Validate and return the config; raises :class:`~rigatoni_s3.errors.ConfigError`."""
        missing = [name for name in ("bucket", "region") if name not in self._values]
        if missing:
            raise ConfigError(missing[0], f"is required; call .{missing[0]}(...) before .build()")
        values = dict(self._values)
        if self._columns:
            columns: dict[str, Any] = {}
            for name, column in self._columns:
                if name in columns:
                    raise ConfigError(f"columns[{name!r}]", "is added twice")
                columns[name] = column
            values["columns"] = columns
        try:
            return S3Config(**values)
        except TypeError as exc:  # attrs reports a wrong keyword as TypeError
            raise ConfigError("builder", str(exc)) from exc
