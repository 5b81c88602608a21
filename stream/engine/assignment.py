"""The partitions this instance owns now, and what is in flight for each.

Plain state and accounting, no I/O: a ``Partition`` is one opening of an input
partition (a rewind makes a new one) with its offsets, its queue of batches in input
order and its in-flight counts; ``Assignment`` adds, finishes and drops them and keeps
the instance-wide in-flight caps.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from stream.engine.batch import Batch
from stream.flow import InFlight
from stream.kafka.protocols import TopicPartition
from stream.offsets import OffsetTracker, PartitionOffsets


@dataclass(slots=True, eq=False)
class Partition:
    """One assignment of one input partition (a rewind makes a new one)."""

    tp: TopicPartition
    offsets: PartitionOffsets
    queue: deque[Batch] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)  # its lifecycle has work
    records: int = 0  # in flight: read, not yet finished
    nbytes: int = 0
    accepting: bool = False  # records may be dispatched (set once its offsets are known)
    paused: bool = False  # at its share of the in-flight caps: fetching paused
    closing: bool = False  # revoked or being rewound: take nothing more
    busy_since: float | None = None  # clock time work began waiting (None: none in flight)
    delivering_since: float | None = None  # clock time the delivery step now running began
    sink_generation: int = 0  # this opening's claim of the partition in the database sink
    restoring: bool = False  # its window state is being read back from the changelog

    @property
    def busy(self) -> bool:
        return self.records > 0

    @property
    def label(self) -> str:
        return f"{self.tp.topic}[{self.tp.partition}]"


class Observer(Protocol):
    """Told when work finishes and when the in-flight totals move (metrics, health)."""

    def finished(self, part: Partition, batch: Batch) -> None: ...
    def inflight_changed(self, inflight: InFlight) -> None: ...


class Assignment:
    """Owned partitions and the in-flight caps across them."""

    def __init__(
        self,
        inflight: InFlight,
        observer: Observer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inflight = inflight
        self.clock = clock
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.parts: dict[TopicPartition, Partition] = {}
        self.room = asyncio.Event()  # set when fetching may resume
        self._observer = observer

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
        if not part.records:
            part.busy_since = self.clock()
        part.records += count
        part.nbytes += batch.nbytes
        part.queue.append(batch)
        batch.result.add_done_callback(lambda _: self._answered(part, batch))
        self._observer.inflight_changed(self.inflight)

    def _answered(self, part: Partition, batch: Batch) -> None:
        """A batch's result came back: wake its lifecycle; outputs larger than the inputs
        (an enrichment merged into every record, a transform that grows records) count
        in flight until the batch finishes."""
        part.wakeup.set()
        result = batch.result
        if result.cancelled() or result.exception() is not None or batch.finished:
            return
        if part.offsets.closed or (outputs := result.result().outputs) is None:
            return
        grown = sum(len(o) for o in outputs if o) - batch.nbytes
        if grown > 0:
            batch.grown = grown
            part.nbytes += grown
            self.inflight.add(0, grown)
            self._changed()

    def finish(self, part: Partition, batch: Batch) -> None:
        """A batch is delivered (and, exactly-once, committed): account for it."""
        if part.offsets.closed:
            return  # dropped: its next owner processes it again
        part.offsets.complete(batch.ticket)
        batch.finished = True
        part.records -= len(batch)
        part.nbytes -= batch.nbytes + batch.grown
        if not part.records:
            part.busy_since = None
        self.inflight.remove(len(batch), batch.nbytes + batch.grown)
        self._observer.finished(part, batch)
        self._changed()

    def drop(self, part: Partition) -> None:
        """Forget a partition and abandon what is still in flight (its queued batches are
        cancelled); nothing of it is committed after this."""
        if self.parts.get(part.tp) is part:
            del self.parts[part.tp]
            self.tracker.revoke(part.tp)
        part.offsets.closed = True
        part.closing = True
        for batch in part.queue:
            batch.result.cancel()
        part.queue.clear()
        if part.records:
            self.inflight.remove(part.records, part.nbytes)
            part.records = part.nbytes = 0
        part.busy_since = None
        self._changed()

    def _changed(self) -> None:
        if not self.inflight.full:
            self.room.set()
        self._observer.inflight_changed(self.inflight)


def names(tps: set[TopicPartition] | list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "none"
