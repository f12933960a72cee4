"""Whole-object compression codecs: extension, Content-Encoding, compress()."""

from __future__ import annotations

import gzip
from collections.abc import Callable

import attrs

from rigatoni_s3.config import Compression

GZIP_LEVEL = 6
"""zlib's own default: close to level 9's ratio at about a third of its cost."""
ZSTD_LEVEL = 3
"""zstd's default level: better ratio than gzip -6 at several times its speed."""


def _identity(data: bytes) -> bytes:
    return data


def _gzip(data: bytes) -> bytes:
    # mtime=0 keeps the output a pure function of the input (same batch, same bytes).
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def _zstd(data: bytes) -> bytes:
    import zstandard

    # A compressor is not safe to share between threads; a new one costs microseconds.
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


@attrs.frozen
class Codec:
    """How a whole object body is compressed, and how S3 is told about it."""

    compression: Compression
    extension: str
    """Suffix appended to the format's extension (``gz``, ``zst``), or empty."""
    content_encoding: str | None
    compress: Callable[[bytes], bytes] = attrs.field(eq=False, repr=False)


IDENTITY = Codec(Compression.NONE, "", None, _identity)
_CODECS = {
    Compression.NONE: IDENTITY,
    Compression.GZIP: Codec(Compression.GZIP, "gz", "gzip", _gzip),
    Compression.ZSTD: Codec(Compression.ZSTD, "zst", "zstd", _zstd),
}


def codec_for(compression: Compression) -> Codec:
    """The codec for a whole-object compression setting."""
    return _CODECS[compression]
