"""Flow control: how much is in flight, how records are cut into batches, and waiting
for a signal with a bound."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

R = TypeVar("R")


class InFlight:
    """Records and bytes read but not yet finished, against two caps.

    ``full`` says when to stop fetching; fetching resumes once both are below
    their caps again (``room`` > 0), so one large fetch cannot overshoot by more
    than a fetch's worth.
    """

    def __init__(
        self, max_records: int, max_bytes: int, held: Callable[[], int] | None = None
    ) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.records = 0
        self.bytes = 0
        self._held = held  # bytes held elsewhere for work in flight (enrichment answers)

    def add(self, records: int, nbytes: int) -> None:
        self.records += records
        self.bytes += nbytes

    def remove(self, records: int, nbytes: int) -> None:
        self.records -= records
        self.bytes -= nbytes
        if self.records < 0 or self.bytes < 0:
            raise RuntimeError("in-flight accounting went negative")

    @property
    def full(self) -> bool:
        held = self._held() if self._held is not None else 0
        return self.records >= self.max_records or self.bytes + held >= self.max_bytes

    @property
    def room(self) -> int:
        """Records that may be fetched now (0 when full)."""
        return 0 if self.full else self.max_records - self.records


def split_batches(
    records: Sequence[R], max_records: int, max_bytes: int, size: Callable[[R], int]
) -> list[tuple[list[R], int]]:
    """Cut records, in order, into batches of at most ``max_records`` and ``max_bytes``.

    Returns each batch with its size in bytes. A single record larger than
    ``max_bytes`` gets a batch of its own.
    """
    batches: list[tuple[list[R], int]] = []
    current: list[R] = []
    current_bytes = 0
    for record in records:
        nbytes = size(record)
        if current and (len(current) >= max_records or current_bytes + nbytes > max_bytes):
            batches.append((current, current_bytes))
            current, current_bytes = [], 0
        current.append(record)
        current_bytes += nbytes
    if current:
        batches.append((current, current_bytes))
    return batches


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; True if it was set.

    ``asyncio.timeout`` rather than ``wait_for``: on Python 3.11 a cancel that arrives as
    the event is set can be swallowed by ``wait_for``, and a loop around it never ends.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
