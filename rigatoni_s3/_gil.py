"""Handing the GIL over while encoding, so the event loop's thread keeps running.

Encoding runs in pool threads but holds the GIL; left alone, a busy thread keeps it
for Python's switch interval (5 ms) each time the loop's thread asks for it, and the
loop falls behind. The encoder and every format cut their loops with these helpers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

HAND_OVER_AFTER = 0.0004
"""Seconds of encoding between two hand-overs of the GIL: about how long the event
loop's thread waits for it behind an encoding thread."""

CHECK_EVERY = 16
"""Items a :func:`with_gil_breaks` loop handles between two looks at the clock."""


class GilBreaker:
    """Lets a thread waiting for the GIL, the event loop's above all, run now and then.

    Sleeping zero seconds releases the GIL and hands it over, but on
    Linux it sleeps for the timer slack (about 60 µs), so a breaker does it only once
    :data:`HAND_OVER_AFTER` of work has passed since its last hand-over.
    """

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since = time.perf_counter()

    def __call__(self) -> None:
        """Hand the GIL over if this thread has held it long enough."""
        if time.perf_counter() - self._since >= HAND_OVER_AFTER:
            time.sleep(0)
            self._since = time.perf_counter()


def with_gil_breaks(items: Iterable[T], breaker: GilBreaker | None = None) -> Iterator[T]:
    """``items``, with a :class:`GilBreaker` looking at the clock every ``CHECK_EVERY``:
    ``breaker``, when the caller hands the GIL over at other points of the same work."""
    breaker = breaker or GilBreaker()
    for count, item in enumerate(items, 1):
        yield item
        if count % CHECK_EVERY == 0:
            breaker()
