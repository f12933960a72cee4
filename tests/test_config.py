"""S3Config: defaults from the specification, builder, eager validation, optional extras."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

from rigatoni_s3 import Compression, KeyGenerationStrategy, S3Config, SerializationFormat
from rigatoni_s3.errors import ConfigError

CSV, PARQUET, AVRO = SerializationFormat.CSV, SerializationFormat.PARQUET, SerializationFormat.AVRO


def build(**overrides: Any) -> S3Config:
    options: dict[str, Any] = {"bucket": "my-data-lake", "region": "us-east-1", **overrides}
    return S3Config(**options)


def test_defaults_follow_the_specification() -> None:
    """Format JSON, no compression, date-hour keys, 3 retries, virtual-host addressing."""
    config = build()
    assert config.format is SerializationFormat.JSON
    assert config.compression is Compression.NONE
    assert config.key_strategy is KeyGenerationStrategy.DATE_HOUR_PARTITIONED
    assert config.max_retries == 3
    assert config.force_path_style is False
    assert config.prefix == ""
    assert config.endpoint_url is None
    assert config.max_batch_events == 10_000


def test_builder_sets_every_seed_option() -> None:
    """The builder chain of the specification produces the same value as keywords."""
    built = (
        S3Config.builder()
        .bucket("analytics-data")
        .region("us-west-2")
        .prefix("events")
        .format(SerializationFormat.JSON)
        .compression(Compression.GZIP)
        .key_strategy(KeyGenerationStrategy.HIVE_PARTITIONED)
        .max_retries(5)
        .endpoint_url("http://localhost:4566")
        .force_path_style(True)
        .build()
    )
    assert built == S3Config(
        bucket="analytics-data",
        region="us-west-2",
        prefix="events",
        compression=Compression.GZIP,
        key_strategy=KeyGenerationStrategy.HIVE_PARTITIONED,
        max_retries=5,
        endpoint_url="http://localhost:4566",
        force_path_style=True,
    )


def test_builder_reports_a_missing_required_field() -> None:
    """build() without a region names the region."""
    with pytest.raises(ConfigError, match="region"):
        S3Config.builder().bucket("b-1-2").build()


def test_enums_accept_their_names_and_values() -> None:
    """Strings in any case select the enum member, so configs can come from files."""
    config = build(format="JSON", compression="zstd", key_strategy="hive_partitioned")
    assert config.compression is Compression.ZSTD
    assert config.key_strategy is KeyGenerationStrategy.HIVE_PARTITIONED


def test_config_error_is_a_value_error() -> None:
    """Callers catching ValueError also catch configuration mistakes."""
    with pytest.raises(ValueError, match="format"):
        build(format="xml")


@pytest.mark.parametrize(
    "bucket",
    [
        "",
        "ab",
        "UPPER",
        "has_underscore",
        "-leading",
        "trailing-",
        "a..b",
        "192.168.1.1",
        "x" * 64,
        "xn--abc",
        "b-s3alias",
    ],
)
def test_invalid_bucket_names_are_rejected(bucket: str) -> None:
    """S3 naming rules are enforced before any request is made."""
    with pytest.raises(ConfigError, match="bucket"):
        build(bucket=bucket)


@pytest.mark.parametrize("bucket", ["abc", "my-data-lake", "logs.example.com", "a" * 63])
def test_valid_bucket_names_are_accepted(bucket: str) -> None:
    """Names that S3 accepts are accepted."""
    assert build(bucket=bucket).bucket == bucket


def test_empty_region_is_rejected() -> None:
    """An empty region names the field."""
    with pytest.raises(ConfigError, match="region"):
        build(region="  ")


@pytest.mark.parametrize("prefix", ["/abs", "a/../b", "..", "a//b", "a/\x01"])
def test_unsafe_prefixes_are_rejected(prefix: str) -> None:
    """Prefixes that would escape or mangle the key space fail at build time."""
    with pytest.raises(ConfigError, match="prefix"):
        build(prefix=prefix)


def test_trailing_slash_of_prefix_is_normalised() -> None:
    """'events/' and 'events' mean the same prefix."""
    assert build(prefix="mongodb/events/").prefix == "mongodb/events"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_retries", -1),
        ("max_batch_events", 0),
        ("max_batch_bytes", -5),
        ("flush_interval", 0),
        ("max_buffer_bytes", 0),
        ("max_concurrent_uploads", 0),
        ("request_timeout", -1.0),
        ("max_retries", True),
    ],
)
def test_non_positive_numbers_are_rejected(field: str, value: Any) -> None:
    """Each numeric knob names itself when its value is out of range."""
    with pytest.raises(ConfigError, match=field):
        build(**{field: value})


@pytest.mark.parametrize(
    "field",
    [
        "max_batch_events",
        "max_batch_bytes",
        "max_buffer_bytes",
        "max_concurrent_uploads",
        "multipart_threshold",
    ],
)
@pytest.mark.parametrize("value", [2.5, 1e7, "100", True])
def test_counts_and_sizes_are_whole_numbers(field: str, value: Any) -> None:
    """A count of events, uploads or bytes takes an int: 2.5 events, or bytes as a float
    or a string, name the field instead of failing later."""
    with pytest.raises(ConfigError, match=f"{field}.*integer"):
        build(**{field: value})


@pytest.mark.parametrize("url", ["localhost:9000", "ftp://host", "http://", "s3://bucket"])
def test_endpoint_must_be_http(url: str) -> None:
    """Only http(s) endpoints are accepted."""
    with pytest.raises(ConfigError, match="endpoint_url"):
        build(endpoint_url=url)


def test_batch_bytes_cannot_exceed_buffer_bytes() -> None:
    """A single batch must fit in the memory bound."""
    with pytest.raises(ConfigError, match="max_batch_bytes"):
        build(max_batch_bytes=100, max_buffer_bytes=10)


def test_credentials_are_not_in_repr() -> None:
    """Secrets never reach logs through repr()."""
    config = build(aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="s3cr3t-value")
    assert "s3cr3t-value" not in repr(config)
    assert "AKIAEXAMPLE" not in repr(config)


def test_config_is_frozen() -> None:
    """A config cannot change under a running destination."""
    config = build()
    with pytest.raises(AttributeError):
        config.bucket = "other"  # type: ignore[misc]


def test_writer_id_must_be_key_safe() -> None:
    """writer_id becomes part of every file name, so it is restricted."""
    with pytest.raises(ConfigError, match="writer_id"):
        build(writer_id="has/slash")
    assert build(writer_id="pod-7").writer_id == "pod-7"


def _missing(*names: str) -> Callable[..., Any]:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name in names else real(name, *args, **kwargs)

    return find_spec


@pytest.mark.parametrize(
    ("fmt", "compression", "module", "extra", "field"),
    [
        (PARQUET, Compression.NONE, "pyarrow", "parquet", "format"),
        (AVRO, Compression.GZIP, "fastavro", "avro", "format"),
        (CSV, Compression.ZSTD, "zstandard", "zstd", "compression"),
        (AVRO, Compression.ZSTD, "backports.zstd", "avro", "compression"),
    ],
)
def test_missing_extra_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
    fmt: SerializationFormat,
    compression: Compression,
    module: str,
    extra: str,
    field: str,
) -> None:
    """Choosing a format or codec whose library is missing fails at build time, naming the extra."""
    monkeypatch.setattr(importlib.util, "find_spec", _missing(module))
    with pytest.raises(ConfigError, match=rf"rigatoni-s3\[{extra}\]") as caught:
        S3Config(bucket="my-bucket", region="us-east-1", format=fmt, compression=compression)
    assert caught.value.field == field


@pytest.mark.parametrize("fmt", [PARQUET, AVRO])
def test_columnar_zstd_needs_no_zstandard_package(
    monkeypatch: pytest.MonkeyPatch, fmt: SerializationFormat
) -> None:
    """Parquet and Avro compress zstd with their own libraries, not the zstd extra."""
    monkeypatch.setattr(importlib.util, "find_spec", _missing("zstandard"))
    config = S3Config(bucket="my-bucket", region="us-east-1", format=fmt, compression="zstd")
    assert config.compression is Compression.ZSTD
