"""The exception tree: what errors.py draws is what the classes are."""

from __future__ import annotations

import inspect
import pickle
import re

import pytest

from rigatoni_s3 import errors
from rigatoni_s3.errors import (
    InvalidEventError,
    RejectedEventsError,
    RigatoniS3Error,
    SerializationError,
)


def drawn_tree() -> dict[str, str | None]:
    """Each class named in the module docstring's tree, with the class drawn above it."""
    assert errors.__doc__ is not None
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        match = re.match(
            r"^(\s*(?:[│ ]   )*(?:[├└]── )?)([A-Z]\w+Error|BackpressureTimeout)\b", line
        )
        if not match:
            continue
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def test_the_drawn_tree_is_the_class_tree() -> None:
    """Every error class is drawn once, under the library class it derives from."""
    classes = {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, RigatoniS3Error)
    }
    tree = drawn_tree()
    assert set(tree) == set(classes)
    for name, parent in tree.items():
        library_bases = [b.__name__ for b in classes[name].__bases__ if b.__name__ in classes]
        assert library_bases == ([] if parent is None else [parent]), name


def _rejected() -> RejectedEventsError:
    return RejectedEventsError(
        [SerializationError("no mapping", index=1), InvalidEventError("no operationType", index=4)],
        accepted=7,
    )


def test_rejected_events_is_an_exception_group() -> None:
    """except* picks one kind of rejection; each part keeps the accepted count."""
    caught: dict[str, BaseExceptionGroup[BaseException]] = {}
    try:
        raise _rejected()
    except* SerializationError as group:
        caught["serialization"] = group
    except* InvalidEventError as group:
        caught["invalid"] = group
    assert all(isinstance(group, RejectedEventsError) for group in caught.values())
    assert [e.index for e in caught["serialization"].exceptions] == [1]  # type: ignore[union-attr]
    assert [e.index for e in caught["invalid"].exceptions] == [4]  # type: ignore[union-attr]
    assert [group.accepted for group in caught.values()] == [7, 7]  # type: ignore[attr-defined]


def test_rejected_events_keeps_its_message_and_errors() -> None:
    """The message counts rejected and accepted events; .errors lists them in order."""
    error = _rejected()
    assert str(error).startswith("2 event(s) rejected, 7 accepted; first: event #1")
    assert isinstance(error, ValueError)
    assert error.errors == error.exceptions
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.accepted, len(copy.errors)) == (str(error), 7, 2)


def test_rejected_events_needs_at_least_one_error() -> None:
    """An empty rejection is a bug in the caller, not a silent success."""
    with pytest.raises(IndexError):
        RejectedEventsError([], accepted=3)


@pytest.mark.parametrize(
    "error",
    [
        errors.CatalogError("cdc.events", 4, "commit failed: OperationalError"),
        errors.CommitError("cdc.events", 4, "commit failed: OperationalError", 3, 120),
    ],
)
def test_catalog_errors_survive_pickling(error: errors.CatalogError) -> None:
    """A catalog or commit error crosses processes with its type, message and attributes."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)
