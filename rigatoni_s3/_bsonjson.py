"""Raw BSON change events to our JSON, compiled when the extension is built.

``RIGATONI_S3_NO_EXTENSIONS`` set to anything but ``""`` or ``"0"`` selects the pure-Python
module, which writes the same bytes; :data:`NATIVE` says which one is in use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rigatoni_s3._bsonjson_py import MAX_DEPTH, SPLIT_MARK, RawEnvelope, RowsBatch

if TYPE_CHECKING:
    from rigatoni_s3._bsonjson_c import PathFinder as _PathFinder

__all__ = [
    "MAX_DEPTH",
    "NATIVE",
    "SPLIT_MARK",
    "PathFinder",
    "RawEnvelope",
    "RowsBatch",
    "convert_batch",
    "decimal128_str",
    "envelopes_batch",
    "group_rows",
    "lines_batch",
]

NATIVE = False
"""True when the compiled core reads raw BSON; False for the pure-Python fallback."""
PathFinder: type[_PathFinder] | None = None
"""The compiled path walk for typed columns; None without the extension."""
decimal128_str: Callable[[Any], str] = str
"""``str`` of a Decimal128, compiled when the extension is built (pymongo's is Python)."""
if os.environ.get("RIGATONI_S3_NO_EXTENSIONS", "") in ("", "0"):
    try:
        from rigatoni_s3._bsonjson_c import (
            PathFinder,
            convert_batch,
            decimal128_str,
            envelopes_batch,
            group_rows,
            lines_batch,
        )

        NATIVE = True
    except ImportError:  # not built: a pure install, or no compiler at build time
        pass
if not NATIVE:
    from rigatoni_s3._bsonjson_py import convert_batch, envelopes_batch, group_rows, lines_batch
