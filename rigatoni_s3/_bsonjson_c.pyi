from collections.abc import Sequence

from rigatoni_s3._bsonjson_py import Document, RawEnvelope

def convert_batch(
    documents: Sequence[Document], lines: bool = False
) -> list[RawEnvelope | str]: ...
def _walk_only(documents: Sequence[Document]) -> None: ...
