"""Which offset each partition may commit. Plain logic, no I/O.

Records are tracked in ranges (one range per batch, ``first..last`` inclusive, in
the order they were read). A partition may commit the end of the longest prefix
of finished ranges: every record before that position was produced and
acknowledged. Offsets need not be contiguous (compaction, transaction markers):
only the order matters. Positions never move backwards.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")


@dataclass(slots=True, eq=False)
class Ticket:
    """One tracked range; pass it back to :meth:`PartitionOffsets.complete`."""

    first: int
    end: int  # last offset + 1
    count: int
    timestamp: float  # of the first record, seconds; for "age of the oldest pending record"
    last_timestamp: float = 0.0  # of the last record, seconds
    done: bool = False


@dataclass(slots=True, eq=False)
class PartitionOffsets:
    """The ranges of one partition for one assignment of it."""

    committed: int | None = None  # last position committed (or known committed) to Kafka
    position: int | None = None  # end of the finished prefix: the position we may commit
    pending: deque[Ticket] = field(default_factory=deque)
    uncommitted: deque[Ticket] = field(default_factory=deque)  # finished, not yet committed
    first_offset: int | None = None  # the first offset tracked in this assignment
    last_finished_timestamp: float | None = None  # of the newest record finished
    closed: bool = False  # revoked: completions no longer count

    def track(
        self,
        first: int,
        last: int,
        count: int = 1,
        timestamp: float = 0.0,
        last_timestamp: float | None = None,
    ) -> Ticket:
        if last < first:
            raise ValueError(f"range {first}..{last} is empty")
        previous_end = self.pending[-1].end if self.pending else self.position
        if previous_end is not None and first < previous_end:
            raise ValueError(f"range {first}..{last} overlaps or precedes {previous_end - 1}")
        ticket = Ticket(
            first=first,
            end=last + 1,
            count=count,
            timestamp=timestamp,
            last_timestamp=timestamp if last_timestamp is None else last_timestamp,
        )
        self.pending.append(ticket)
        if self.first_offset is None:
            self.first_offset = first
        return ticket

    @property
    def next_offset(self) -> int | None:
        """The offset after the last one tracked or finished (None before the first)."""
        return self.pending[-1].end if self.pending else self.position

    def complete(self, ticket: Ticket) -> None:
        """Mark a range finished; advance the position over the finished prefix."""
        if self.closed:
            return
        ticket.done = True
        pending = self.pending
        while pending and pending[0].done:
            finished = pending.popleft()
            self.position = finished.end
            self.uncommitted.append(finished)
            self.last_finished_timestamp = finished.last_timestamp

    def advance_idle(self, position: int) -> None:
        """With nothing in flight, move to the consumer's fetch position.

        The records between our finished position and the fetch position are
        ones the consumer skipped (transaction markers, aborted records), so there
        is nothing unfinished to commit past. Without this, a transactionally
        written input would show a lag of 1 forever.
        """
        if self.closed or self.pending:
            return
        if self.position is None:
            # Nothing finished in this assignment: move only past a committed offset (a
            # new owner whose committed offset sits before trailing transaction markers).
            if self.committed is None or position <= self.committed:
                return
            self.position = position
        elif position > self.position:
            self.position = position

    def committable(self) -> int | None:
        """The position to commit now, or None if it would not move forwards."""
        if self.position is None:
            return None
        if self.committed is not None and self.position <= self.committed:
            return None
        return self.position

    def mark_committed(self, position: int | None) -> None:
        if position is None:
            return
        if self.committed is None or position > self.committed:
            self.committed = position
        uncommitted = self.uncommitted
        while uncommitted and uncommitted[0].end <= position:
            uncommitted.popleft()

    @property
    def oldest_uncommitted_timestamp(self) -> float | None:
        """Timestamp of the oldest record read and not yet committed, if any."""
        if self.uncommitted:
            return self.uncommitted[0].timestamp
        return self.pending[0].timestamp if self.pending else None

    @property
    def pending_records(self) -> int:
        return sum(t.count for t in self.pending if not t.done)

    @property
    def oldest_pending_timestamp(self) -> float | None:
        return self.pending[0].timestamp if self.pending else None


class OffsetTracker(Generic[P]):
    """Per-partition offset bookkeeping for the partitions this instance owns."""

    def __init__(self) -> None:
        self._partitions: dict[P, PartitionOffsets] = {}

    def assign(self, partition: P, committed: int | None = None) -> PartitionOffsets:
        state = PartitionOffsets(committed=committed)
        self._partitions[partition] = state
        return state

    def revoke(self, partition: P) -> None:
        state = self._partitions.pop(partition, None)
        if state is not None:
            state.closed = True

    def get(self, partition: P) -> PartitionOffsets | None:
        return self._partitions.get(partition)

    def partitions(self) -> list[P]:
        return list(self._partitions)

    def committable(self) -> dict[P, int]:
        out: dict[P, int] = {}
        for partition, state in self._partitions.items():
            position = state.committable()
            if position is not None:
                out[partition] = position
        return out

    def mark_committed(self, offsets: dict[P, int]) -> None:
        for partition, position in offsets.items():
            state = self._partitions.get(partition)
            if state is not None:
                state.mark_committed(position)
