"""Delivery progress: which accepted events are durably in S3.

Every ``write_batch`` call that accepts events opens a *ticket* holding how many
of its events are not yet written. Uploads settle tickets; the durable position
is the newest ticket such that it and every earlier ticket are fully written, so
it never runs ahead of S3 even when objects finish out of order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs


@attrs.define
class _Ticket:
    number: int
    remaining: int
    resume_token: Any


class DeliveryProgress:
    """Tickets in acceptance order, and the callers waiting for some to be durable."""

    def __init__(self, on_durable: Callable[[Any], None] | None = None) -> None:
        self._tickets: dict[int, _Ticket] = {}
        self._order: deque[_Ticket] = deque()
        self._last = 0
        self.durable_ticket = 0
        self.durable_resume_token: Any = None
        self.last_resume_token: Any = None
        """Resume token of the newest accepted event that has one, durable or not."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._on_durable = on_durable

    @property
    def last_ticket(self) -> int:
        return self._last

    def open(self, events: int, resume_token: Any) -> int:
        """Register accepted events; returns their ticket number."""
        self._last += 1
        ticket = _Ticket(self._last, events, resume_token)
        self._tickets[ticket.number] = ticket
        self._order.append(ticket)
        if resume_token is not None:
            self.last_resume_token = resume_token
        self._advance()
        return ticket.number

    def settle(self, written: Mapping[int, int]) -> None:
        """Record that ``written[ticket]`` events of each ticket are now in S3."""
        for number, count in written.items():
            self._tickets[number].remaining -= count
        self._advance()

    async def wait_for(self, ticket: int) -> None:
        """Return once ``ticket`` and all before it are durable; raise if delivery fails."""
        if ticket <= self.durable_ticket:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (ticket, future)
        self._waiters.append(entry)
        try:
            await future
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def fail_waiters(self, first_blocked: int, error: BaseException) -> bool:
        """Fail callers waiting for ``first_blocked`` or later; True if any was told."""
        told = False
        for target, future in self._waiters:
            if target >= first_blocked and not future.done():
                future.set_exception(error)
                told = True
        return told

    def _advance(self) -> None:
        moved = False
        while self._order and self._order[0].remaining == 0:
            ticket = self._order.popleft()
            del self._tickets[ticket.number]
            self.durable_ticket = ticket.number
            if ticket.resume_token is not None:
                self.durable_resume_token = ticket.resume_token
                moved = True
        for target, future in self._waiters:
            if target <= self.durable_ticket and not future.done():
                future.set_result(None)
        if moved and self._on_durable is not None:
            self._on_durable(self.durable_resume_token)
