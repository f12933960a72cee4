"""The exception tree: what errors.py draws is what the classes are."""

from __future__ import annotations

import inspect
import pickle
import re
from typing import Any

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


CONSTRUCTED_WITH: dict[type[RigatoniS3Error], tuple[tuple[Any, ...], dict[str, Any]]] = {
    errors.ConfigError: (("max_batch_events", "must be an integer > 0, got 0"), {}),
    errors.EventError: (
        ("missing or not a string",),
        {"collection": "users", "document_key": {"_id": 7}, "field": "operationType", "index": 3},
    ),
    errors.IncompleteEventError: (
        ("split event missing fragment 3 of 3",),
        {
            "fragments": [b"\x16\x00\x00\x00", {"splitEvent": {"fragment": 2, "of": 3}}],
            "resume_tokens": [{"_data": "8263000000000001"}, {"_data": "8263000000000002"}],
        },
    ),
    errors.RejectedEventsError: (
        (
            [
                SerializationError("no mapping for float NaN", index=1, field="price"),
                InvalidEventError("missing operationType", index=4),
            ],
            7,
        ),
        {},
    ),
    errors.UploadError: (
        ("lake", "cdc/users/2025/01/15/10/1736935200-a1b2c3-000001.parquet", 4, 120, "SlowDown"),
        {},
    ),
    errors.DeadLetteredError: (("/var/lib/rigatoni/dead-letters", 2, 250), {}),
    errors.UndeliveredError: (
        (
            [errors.RetriesExhaustedError("lake", "cdc/users/x.parquet", 4, 120, "SlowDown")],
            250,
            2,
            " Keys: cdc/users/x.parquet.",
        ),
        {},
    ),
    errors.CatalogError: (("cdc.events", 4, "commit failed: OperationalError"), {}),
    errors.CommitError: (("cdc.events", 4, "commit failed: OperationalError", 3, 120), {}),
}
"""Realistic arguments for each error class that defines its own constructor."""


def _public_errors() -> list[type[RigatoniS3Error]]:
    return [
        cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, RigatoniS3Error) and not name.startswith("_")
    ]


def _construct(cls: type[RigatoniS3Error]) -> RigatoniS3Error:
    """``cls`` made with the arguments of the class whose constructor it uses."""
    maker = next(k for k in cls.__mro__ if "__init__" in vars(k) or "__new__" in vars(k))
    if maker.__module__ == errors.__name__:
        assert maker in CONSTRUCTED_WITH, f"add constructor arguments for {maker.__name__}"
        args, kwargs = CONSTRUCTED_WITH[maker]
        return cls(*args, **kwargs)
    return cls("the destination is closed")  # a built-in exception's constructor


def _assert_same(copy: object, original: object) -> None:
    """Equal values, and for errors: same type, message, args and attributes, recursively."""
    if isinstance(original, BaseException):
        assert type(copy) is type(original)
        assert str(copy) == str(original)
        _assert_same(copy.args, original.args)
        _assert_same(vars(copy), vars(original))
    elif isinstance(original, (tuple, list)):
        assert type(copy) is type(original)
        assert len(copy) == len(original)
        for item, expected in zip(copy, original, strict=True):
            _assert_same(item, expected)
    elif isinstance(original, dict):
        assert isinstance(copy, dict)
        assert copy.keys() == original.keys()
        for key in original:
            _assert_same(copy[key], original[key])
    else:
        assert copy == original


@pytest.mark.parametrize("cls", _public_errors(), ids=lambda cls: cls.__name__)
def test_every_error_survives_pickling(cls: type[RigatoniS3Error]) -> None:
    """Each error crosses processes with its type, message, attributes and notes."""
    error = _construct(cls)
    error.add_note("while flushing")
    copy = pickle.loads(pickle.dumps(error))
    _assert_same(copy, error)
    assert copy.__notes__ == ["while flushing"]


def test_the_pickling_test_finds_the_error_classes() -> None:
    """Discovery sees each class with arguments above, and the subclasses that reuse them."""
    found = set(_public_errors())
    assert set(CONSTRUCTED_WITH) < found
    assert {errors.RigatoniS3Error, errors.BucketNotFoundError, errors.SerializationError} < found
