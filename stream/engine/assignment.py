"""The partitions this instance owns now, and what is in flight for each.

Plain state and accounting, no I/O: a ``Partition`` holds its offsets, its queue of
batches in input order and its in-flight counts; ``Assignment`` adds, finishes and
drops them and keeps the instance-wide in-flight caps.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from stream.flow import InFlight
from stream.kafka.protocols import TopicPartition
from stream.offsets import OffsetTracker, PartitionOffsets, Ticket
from stream.worker import BatchResult

Error = tuple[int, str, str]  # (index in batch, reason, message)


@dataclass(slots=True, eq=False)
class Batch:
    """Records of one partition, in order, sent to a worker together."""

    ticket: Ticket
    keys: list[bytes | None]
    values: list[bytes | None]
    offsets: list[int]
    timestamps_ms: list[int]
    nbytes: int
    result: asyncio.Future[BatchResult]
    errors: list[Error] = field(default_factory=list)  # what was dead-lettered

    def __len__(self) -> int:
        return len(self.values)


@dataclass(slots=True, eq=False)
class Partition:
    """One assignment of one input partition (a rewind makes a new one)."""

    tp: TopicPartition
    offsets: PartitionOffsets
    queue: deque[Batch] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    emitter: asyncio.Task[None] | None = None
    records: int = 0  # in flight: read, not yet finished
    nbytes: int = 0
    accepting: bool = False  # records may be dispatched (set once its offsets are known)
    paused: bool = False  # at its share of the in-flight caps: fetching paused
    closing: bool = False  # revoked or being rewound: take nothing more

    @property
    def busy(self) -> bool:
        return self.records > 0

    @property
    def label(self) -> str:
        return f"{self.tp.topic}[{self.tp.partition}]"


FinishHook = Callable[[Partition, Batch], None]


class Assignment:
    """Owned partitions and the in-flight caps across them."""

    def __init__(self, inflight: InFlight, on_finish: FinishHook, on_change: Callable[[], None]):
        self.inflight = inflight
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.parts: dict[TopicPartition, Partition] = {}
        self.room = asyncio.Event()  # set when fetching may resume
        self._on_finish = on_finish
        self._on_change = on_change  # in-flight totals moved

    def get(self, tp: TopicPartition) -> Partition | None:
        return self.parts.get(tp)

    def current(self, part: Partition) -> bool:
        """Still the live assignment of its partition (not revoked, not rewound)."""
        return self.parts.get(part.tp) is part and not part.closing

    def add(self, tp: TopicPartition) -> Partition:
        part = Partition(tp, self.tracker.assign(tp))
        self.parts[tp] = part
        return part

    def track(self, part: Partition, batch: Batch) -> None:
        count = len(batch)
        self.inflight.add(count, batch.nbytes)
        part.records += count
        part.nbytes += batch.nbytes
        part.queue.append(batch)

    def finish(self, part: Partition, batch: Batch) -> None:
        """A batch is delivered (and, exactly-once, committed): account for it."""
        if part.offsets.closed:
            return  # dropped: its next owner processes it again
        part.offsets.complete(batch.ticket)
        part.records -= len(batch)
        part.nbytes -= batch.nbytes
        self.inflight.remove(len(batch), batch.nbytes)
        self._on_finish(part, batch)
        self._changed()

    def drop(self, part: Partition) -> None:
        """Forget a partition: cancel its emitter (unless it is the caller) and abandon
        what is still in flight; nothing of it is committed after this."""
        if self.parts.get(part.tp) is part:
            del self.parts[part.tp]
            self.tracker.revoke(part.tp)
        part.offsets.closed = True
        part.closing = True
        if part.emitter is not None and part.emitter is not asyncio.current_task():
            part.emitter.cancel()
        for batch in part.queue:
            batch.result.cancel()
        part.queue.clear()
        if part.records:
            self.inflight.remove(part.records, part.nbytes)
            part.records = part.nbytes = 0
        self._changed()

    def _changed(self) -> None:
        if not self.inflight.full:
            self.room.set()
        self._on_change()

    async def drain(
        self, parts: list[Partition], seconds: float, give_up: Callable[[], bool]
    ) -> bool:
        """Wait until these partitions have nothing in flight; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while any(p.busy for p in parts):
            if loop.time() >= deadline or give_up():
                return False
            await asyncio.sleep(0.01)
        return True


def names(tps: set[TopicPartition] | list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "none"
