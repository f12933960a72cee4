from collections.abc import Callable, Sequence
from typing import Any

from rigatoni_s3._bsonjson_py import Document, RawEnvelope, RowsBatch

def convert_batch(
    documents: Sequence[Document], lines: bool = False
) -> list[RawEnvelope | str]: ...
def _walk_only(documents: Sequence[Document]) -> None: ...

class PathFinder:
    def __init__(self, paths: Sequence[tuple[str, ...]]) -> None: ...
    def spans_batch(
        self, documents: Sequence[Document]
    ) -> list[list[tuple[int, int, int] | None] | None]: ...

def decimal128_str(value: object) -> str: ...
def group_rows(
    partitions: Sequence[Any], rows: Sequence[Any], sizes: Sequence[int]
) -> dict[Any, tuple[list[Any], list[int]]]: ...
def lines_batch(
    documents: Sequence[Document],
    step: int | None,
    now_seconds: int,
    new_key: Callable[[tuple[str | None, int | None]], Any],
    breaker: Callable[[], None] | None = None,
) -> RowsBatch: ...
def envelopes_batch(
    documents: Sequence[Document],
    step: int | None,
    now_seconds: int,
    new_key: Callable[[tuple[str | None, int | None]], Any],
    row_type: type[tuple[Any, ...]],
    breaker: Callable[[], None] | None = None,
) -> RowsBatch: ...
