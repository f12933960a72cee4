from collections.abc import Sequence

from rigatoni_s3._bsonjson_py import Document, RawEnvelope

def convert_batch(
    documents: Sequence[Document], lines: bool = False
) -> list[RawEnvelope | str]: ...
def _walk_only(documents: Sequence[Document]) -> None: ...

class PathFinder:
    def __init__(self, paths: Sequence[tuple[str, ...]]) -> None: ...
    def spans_batch(
        self, documents: Sequence[Document]
    ) -> list[list[tuple[int, int, int] | None] | None]: ...
