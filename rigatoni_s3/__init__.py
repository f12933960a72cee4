"""rigatoni-s3: land change-data-capture events in S3 as files query engines read."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from rigatoni_s3._bsonjson import NATIVE
from rigatoni_s3.columns import Column
from rigatoni_s3.config import (
    Compression,
    IcebergConfig,
    KeyGenerationStrategy,
    S3Config,
    S3ConfigBuilder,
    SerializationFormat,
)
from rigatoni_s3.deadletter import ReplayResult, replay_dead_letters
from rigatoni_s3.destination import S3Destination
from rigatoni_s3.events import ChangeEvent
from rigatoni_s3.stats import DestinationStats, LatencySummary

try:
    __version__ = version("rigatoni-s3")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [  # noqa: RUF022 - plain sorted() order, which the public-API test checks
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
]
