"""Delivery progress: the durable position under any order of completion."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rigatoni_s3._progress import DeliveryProgress


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=30),
    data=st.data(),
)
def test_durable_position_never_passes_an_unwritten_event(
    sizes: list[int], data: st.DataObject
) -> None:
    """Whatever order objects finish in, the position only covers tickets fully written."""
    seen: list[object] = []
    progress = DeliveryProgress(on_durable=seen.append)
    tickets = [progress.open(size, f"token-{n}") for n, size in enumerate(sizes)]
    pending = [
        (ticket, 1) for ticket, size in zip(tickets, sizes, strict=True) for _ in range(size)
    ]
    order = data.draw(st.permutations(pending))
    written: dict[int, int] = dict.fromkeys(tickets, 0)
    for ticket, count in order:
        progress.settle({ticket: count})
        written[ticket] += count
        durable = progress.durable_ticket
        for number, size in zip(tickets, sizes, strict=True):
            if number <= durable:
                assert written[number] == size
        if progress.durable_resume_token is not None:
            index = int(str(progress.durable_resume_token).split("-")[1])
            assert tickets[index] <= durable
    assert progress.durable_ticket == tickets[-1]
    assert progress.durable_resume_token == f"token-{len(sizes) - 1}"
    assert seen == sorted(set(seen), key=lambda token: int(str(token).split("-")[1]))


async def test_waiters_wake_in_order_and_failures_reach_blocked_ones() -> None:
    """wait_for returns once its ticket is durable; a failure reaches only waiters it blocks."""
    progress = DeliveryProgress()
    first, second = progress.open(1, "a"), progress.open(1, "b")
    wait_first = asyncio.ensure_future(progress.wait_for(first))
    wait_second = asyncio.ensure_future(progress.wait_for(second))
    await asyncio.sleep(0)
    progress.fail_waiters(second, RuntimeError("object of ticket 2 failed"))
    progress.settle({first: 1})
    await wait_first
    with pytest.raises(RuntimeError):
        await wait_second
