"""The public surface: what `import rigatoni_s3` offers."""

from __future__ import annotations

import rigatoni_s3
from rigatoni_s3 import errors


def test_all_is_exactly_the_public_api() -> None:
    """__all__ lists what we mean to export, sorted, and every name resolves."""
    assert rigatoni_s3.__all__ == sorted(rigatoni_s3.__all__)
    assert set(rigatoni_s3.__all__) == {
        "ChangeEvent",
        "Column",
        "Compression",
        "DestinationStats",
        "IcebergConfig",
        "KeyGenerationStrategy",
        "LatencySummary",
        "NATIVE",
        "ReplayResult",
        "S3Config",
        "S3ConfigBuilder",
        "S3Destination",
        "SerializationFormat",
        "__version__",
        "replay_dead_letters",
    }
    for name in rigatoni_s3.__all__:
        assert getattr(rigatoni_s3, name) is not None


def test_native_says_which_core_runs() -> None:
    """NATIVE is True exactly when the compiled module was imported."""
    import sys

    assert isinstance(rigatoni_s3.NATIVE, bool)
    assert ("rigatoni_s3._bsonjson_c" in sys.modules) == rigatoni_s3.NATIVE


def test_enum_members_are_the_specification_names() -> None:
    """Enum members are the seed's names in Python spelling."""
    assert [m.name for m in rigatoni_s3.SerializationFormat] == ["JSON", "CSV", "PARQUET", "AVRO"]
    assert [m.name for m in rigatoni_s3.Compression] == ["NONE", "GZIP", "ZSTD"]
    assert [m.name for m in rigatoni_s3.KeyGenerationStrategy] == [
        "HIVE_PARTITIONED",
        "DATE_HOUR_PARTITIONED",
        "DATE_PARTITIONED",
        "COLLECTION_BASED",
        "FLAT",
    ]


def test_every_error_derives_from_the_base() -> None:
    """Catching RigatoniS3Error catches everything the library raises on purpose."""
    for name in dir(errors):
        value = getattr(errors, name)
        if (
            isinstance(value, type)
            and issubclass(value, Exception)
            and value.__module__ == errors.__name__
        ):
            assert issubclass(value, errors.RigatoniS3Error), name
