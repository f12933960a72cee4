"""JSON Lines: one record per line, the envelope's fields in order (value mapping: test_json)."""

from __future__ import annotations

from tests.helpers import line_of


def test_envelope_has_every_field_in_order() -> None:
    """One object per line with the ChangeEvent fields, cluster_time as ISO-8601 UTC."""
    parsed = line_of(name="Ada")
    assert list(parsed) == [
        "operation",
        "database",
        "collection",
        "cluster_time",
        "document_key",
        "full_document",
        "update_description",
        "resume_token",
        "full_document_before_change",
        "wall_time",
        "cluster_time_increment",
        "transaction",
        "extra",
    ]
    assert parsed["cluster_time"] == "2025-01-15T10:00:00Z"
    assert parsed["full_document"] == {"name": "Ada"}
    assert parsed["update_description"] is None
