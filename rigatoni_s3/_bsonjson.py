"""Raw BSON change events to our JSON, compiled when the extension is built.

``RIGATONI_S3_NO_EXTENSIONS`` set to anything but ``""`` or ``"0"`` selects the pure-Python
module, which writes the same bytes; :data:`NATIVE` says which one is in use.
"""

from __future__ import annotations

import os

from rigatoni_s3._bsonjson_py import MAX_DEPTH, RawEnvelope

__all__ = ["MAX_DEPTH", "NATIVE", "RawEnvelope", "convert_batch"]

NATIVE = False
"""True when the compiled core reads raw BSON; False for the pure-Python fallback."""
if os.environ.get("RIGATONI_S3_NO_EXTENSIONS", "") in ("", "0"):
    try:
        from rigatoni_s3._bsonjson_c import convert_batch

        NATIVE = True
    except ImportError:  # not built: a pure install, or no compiler at build time
        pass
if not NATIVE:
    from rigatoni_s3._bsonjson_py import convert_batch
