"""Builds the compiled BSON-to-JSON core when it can, the pure package when it cannot.

The extension is optional: without a C compiler, on another Python implementation, or
with ``RIGATONI_S3_NO_EXTENSIONS`` set at build time, the package installs without it
(with a warning) and uses the pure-Python module, which writes the same bytes.
"""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

HERE = Path(__file__).parent
NO_EXTENSIONS = (
    os.environ.get("RIGATONI_S3_NO_EXTENSIONS", "") not in ("", "0")
    or platform.python_implementation() != "CPython"
)


def _warn(reason: object) -> None:
    warnings.warn(
        f"rigatoni-s3: building without the compiled BSON core ({reason}); "
        "the pure-Python module will be used instead",
        stacklevel=1,
    )


class OptionalBuildExt(build_ext):
    """build_ext that warns and carries on instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except (PlatformError, FileNotFoundError) as exc:
            _warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError, ValueError) as exc:
            _warn(exc)


def _extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        _warn("RIGATONI_S3_NO_EXTENSIONS is set or this is not CPython")
        return []
    source = "rigatoni_s3/_bsonjson_c.pyx"
    generated = HERE / "rigatoni_s3" / "_bsonjson_c.c"
    extension = Extension(
        "rigatoni_s3._bsonjson_c",
        [source],
        depends=["rigatoni_s3/_bsonjson_walk.h", "rigatoni_s3/_bsonpath_find.h"],
        include_dirs=["rigatoni_s3"],
        extra_compile_args=os.environ.get("RIGATONI_S3_EXTRA_CFLAGS", "").split(),
    )
    try:
        from Cython.Build import cythonize
    except ImportError:
        if not generated.exists():
            _warn("Cython is not installed")
            return []
        extension.sources = [str(generated.relative_to(HERE))]
        return [extension]
    return cythonize([extension], language_level=3)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
