"""One owned input partition, from the moment it is assigned until it is closed.

``open()``: register the partition (records fetched for it meanwhile are sought back),
open its delivery (exactly-once: start its transactional producer, which fences the
previous owner and settles its open transaction), restore its state (the place for
per-partition state such as windows), claim its row in the database sink if one is on
(fencing earlier owners' writes), read its committed offset, seek there (or to the
reset position), and only then accept records. ``run()``: hand finished batches to the
delivery in input order and commit on the commit policy, until ``close()``: then finish
what is queued (within the drain timeout), commit it, and release the partition.

A Kafka failure (a failed transaction, a fenced producer) rewinds the partition here:
its in-flight work is dropped and it is opened again the same way, backing off while it
keeps failing; no progress for ``--delivery-timeout`` ends ``run()`` with a
``FatalError``. Nothing calls back up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Histogram

from stream.engine.assignment import Assignment, Partition
from stream.engine.batch import Batch
from stream.engine.delivery import Delivery, Guarantee
from stream.engine.policy import CommitPolicy
from stream.engine.sinking import SinkStage
from stream.errors import FatalError, KafkaFailure, OwnershipLost
from stream.flow import wait_event
from stream.kafka.protocols import Consumer, TopicPartition
from stream.metrics import Metrics

log = logging.getLogger("stream")

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
MAX_BATCHES = 32  # most finished batches shipped at once
CLOSE_STEP = 3.0  # seconds one closing step (a final commit, closing a client) may take


class State(Protocol):
    """Per-partition state (windows): restored after fencing and before records are
    accepted, moved on by each batch shipped, dropped with the opening."""

    async def restore(self, part: Partition) -> None: ...
    def check(self, part: Partition, committed: int | None) -> None: ...
    async def step(self, part: Partition, batches: list[Batch]) -> None: ...
    async def idle(self, part: Partition, consumer: Consumer) -> Batch | None: ...
    def moved(self, part: Partition, position: int) -> Batch | None: ...
    def release(self, tp: TopicPartition) -> None: ...


@dataclass(frozen=True, slots=True)
class Parts:
    """What every partition's lifecycle shares."""

    consumer: Consumer
    assignment: Assignment
    guarantee: Guarantee
    policy: CommitPolicy
    metrics: Metrics
    transform: str
    drain_timeout: float
    delivery_timeout: float
    stage: SinkStage | None = None
    state: State | None = None
    clock: Callable[[], float] = time.monotonic


class PartitionLifecycle:
    def __init__(self, tp: TopicPartition, parts: Parts) -> None:
        self.tp = tp
        self.parts = parts
        self.closing = False
        self._closed = asyncio.Event()
        self._deadline = 0.0  # clock time the drain ends, once closing
        self._current: tuple[Partition, Delivery] | None = None
        self._opening: Partition | None = None  # being opened (a rewind's reopening)
        self._restoring: asyncio.Future[None] | None = None  # its state being restored
        self._failing_since: float | None = None  # first failure of the current episode
        self._failures = 0
        self._opened_at = 0.0  # clock time of the last successful opening
        self._duration = parts.metrics.transform_duration.labels(parts.transform)

    # ---- control -----------------------------------------------------------------------

    async def open(self) -> None:
        """The first opening; its errors are the caller's."""
        self._current = await self._open()

    def close(self) -> None:
        """Take nothing more; finish what is queued within the drain timeout, commit it,
        release. ``run()`` returns when that is done."""
        if self.closing:
            return
        self.closing = True
        self._deadline = self.parts.clock() + self.parts.drain_timeout
        self._closed.set()
        part = self._current[0] if self._current is not None else self._opening
        if part is not None:
            part.closing = True
            part.wakeup.set()
        if self._restoring is not None:
            self._restoring.cancel()

    async def run(self) -> None:
        try:
            while self._current is not None:
                part, delivery = self._current
                if self.closing:
                    part.closing = True
                try:
                    await self._emit(part, delivery)
                except KafkaFailure as exc:
                    self._current = None
                    await self._rewound(part, delivery, exc)
                    self._current = await self._reopen(exc)
                else:
                    self._current = None
                    await self._release(part, delivery, lost=False)
        except asyncio.CancelledError:
            # Abandoned (a drain past its bound, a fatal stop): nothing more is committed.
            if self._current is not None:
                part, delivery = self._current
                self._current = None
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_STEP):
                        await self._release(part, delivery, lost=False)
            raise

    # ---- opening and releasing ---------------------------------------------------------

    async def _open(self) -> tuple[Partition, Delivery]:
        p = self.parts
        part = self._opening = p.assignment.add(self.tp)
        try:
            try:
                delivery = await p.guarantee.open(part)
            except BaseException:
                p.assignment.drop(part)
                raise
            try:
                await self._position(part)
            except BaseException as exc:
                await self._release(part, delivery, lost=isinstance(exc, OwnershipLost))
                raise
        finally:
            self._opening = None
        if self.closing:  # revoked meanwhile: run() releases it
            part.closing = True
            return part, delivery
        labels = (self.tp.topic, str(self.tp.partition))
        p.metrics.consumer_lag.labels(*labels).set(0)
        p.metrics.consumer_lag_seconds.labels(*labels).set(0)
        p.consumer.resume(self.tp)  # a previous assignment of it may have paused it
        part.accepting = True
        self._opened_at = p.clock()
        return part, delivery

    async def _position(self, part: Partition) -> None:
        """Restore the partition's state, claim its database position (fencing earlier
        owners' writes), read its committed offset and seek there."""
        p = self.parts
        if p.state is not None:
            self._restoring = asyncio.ensure_future(p.state.restore(part))
            try:
                await _unless_closed(self._restoring)
            finally:
                self._restoring = None
            if self.closing:  # revoked while it restored: run() releases it
                return
        if p.stage is not None:
            await p.stage.claim(part)
        committed = await p.consumer.committed(self.tp)
        if self.closing:
            return
        if p.state is not None:
            p.state.check(part, committed)
        part.offsets.mark_committed(committed)
        if committed is not None:
            p.consumer.seek(self.tp, committed)
        else:
            await p.consumer.seek_to_reset(self.tp)

    async def _release(self, part: Partition, delivery: Delivery, *, lost: bool) -> None:
        p = self.parts
        p.assignment.drop(part)
        labels = (self.tp.topic, str(self.tp.partition))
        for gauge in (p.metrics.consumer_lag, p.metrics.consumer_lag_seconds):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        if p.state is not None:
            p.state.release(self.tp)
        await delivery.close(lost=lost)
        if p.stage is not None:
            p.stage.released(self.tp)

    async def _rewound(self, part: Partition, delivery: Delivery, error: KafkaFailure) -> None:
        lost = isinstance(error, OwnershipLost)
        log.warning(
            "%s: %s (%s); rewinding to the committed offset",
            part.label,
            "the producer lost its transactional id" if lost else "the transaction failed",
            error,
        )
        self.parts.metrics.commit_failures.inc()
        await self._release(part, delivery, lost=lost)

    async def _reopen(self, error: KafkaFailure) -> tuple[Partition, Delivery] | None:
        """Open the partition again (new producer, committed offset re-read from the
        broker), backing off while it fails; None once closed."""
        p = self.parts
        if p.clock() - self._opened_at > p.delivery_timeout:
            self._progressed()  # the last opening ran longer than that: a new episode
        while not self.closing:
            now = p.clock()
            if self._failing_since is None:
                self._failing_since = now
            if now - self._failing_since > p.delivery_timeout:
                raise FatalError(
                    f"{self.tp.topic}[{self.tp.partition}]: no progress for "
                    f"{p.delivery_timeout:g}s (--delivery-timeout); last error: {error}"
                )
            self._failures += 1
            backoff = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._failures - 1))
            if await wait_event(self._closed, backoff):
                return None
            try:
                return await self._open()
            except KafkaFailure as exc:
                error = exc
        return None

    def _progressed(self) -> None:
        """Work committed, or the partition ran for a delivery timeout without failing:
        an episode of failures is over (an idle look alone is not progress: the records
        of a rewound partition may not be fetched again yet)."""
        self._failing_since = None
        self._failures = 0

    # ---- the ordered emit loop ---------------------------------------------------------

    async def _emit(self, part: Partition, delivery: Delivery) -> None:
        """Ship finished batches in input order; commit when the policy says so; return
        once closing and drained (or past the drain deadline)."""
        p = self.parts
        while True:
            part.wakeup.clear()
            batches = _finished(part, self._duration)
            if batches:
                async with _delivering(part, self.parts.clock):
                    if p.state is not None:
                        await p.state.step(part, batches)
                    await delivery.ship(batches)
            now = p.clock()
            if part.closing and (not part.queue or now >= self._deadline):
                await self._finish(part, delivery)
                return
            pending = delivery.pending()
            if p.policy.due(now, pending):
                async with _delivering(part, self.parts.clock):
                    await delivery.commit(final=False)
                self._progressed()
                continue
            if batches:
                continue
            wait = p.policy.wait(now, pending)
            if part.closing:
                wait = min(wait, max(0.0, self._deadline - now))
            if not await wait_event(part.wakeup, wait) and pending.since is None:
                await self._idle(part, delivery)

    async def _finish(self, part: Partition, delivery: Delivery) -> None:
        """Closing: abandon what did not finish within the drain timeout (the next owner
        reads it again), commit the rest."""
        p = self.parts
        if part.queue:
            log.warning(
                "%s: drain timeout (%gs): abandoning %d records; they will be read again",
                part.label,
                p.drain_timeout,
                part.records,
            )
            # Cancels what is queued. Exactly-once still commits the transaction of what
            # was shipped; at-least-once commits what was acknowledged before the drop
            # (later acknowledgements no longer count: those records are read again).
            p.assignment.drop(part)
        try:
            async with (
                asyncio.timeout(max(0.0, self._deadline - p.clock()) + CLOSE_STEP),
                _delivering(part, self.parts.clock),
            ):
                await delivery.commit(final=True)
        except TimeoutError:
            log.warning("%s: the final commit did not finish in time; skipped", part.label)

    async def _idle(self, part: Partition, delivery: Delivery) -> None:
        """Nothing finished for a while: move an idle partition to the consumer's
        position (past transaction markers) and commit it if it moved."""
        if part.busy or part.closing:
            return
        quiet = await _quiet(self.parts, part)
        if quiet is not None:  # windows closed on quiet input: into the transaction
            async with _delivering(part, self.parts.clock):
                await delivery.ship([quiet])
            return
        with contextlib.suppress(KafkaFailure):
            part.offsets.advance_idle(await self.parts.consumer.position(self.tp))
        position = part.offsets.committable()
        if position is not None:
            state = self.parts.state
            moved = None if state is None else state.moved(part, position)
            async with _delivering(part, self.parts.clock):
                if moved is not None:  # the state's position moves with the group's
                    await delivery.ship([moved])
                await delivery.commit(final=False)
            self._progressed()


async def _quiet(p: Parts, part: Partition) -> Batch | None:
    """The windows quiet input closed (``--idle-close``), as a batch of no records."""
    if p.state is None:
        return None
    with contextlib.suppress(KafkaFailure):  # the broker did not answer: next time
        return await p.state.idle(part, p.consumer)
    return None


def _finished(part: Partition, duration: Histogram) -> list[Batch]:
    """The finished batches at the head of the queue, taken off it."""
    queue = part.queue
    batches: list[Batch] = []
    while queue and queue[0].result.done() and len(batches) < MAX_BATCHES:
        batch = queue.popleft()
        if batch.result.cancelled():  # only drop() cancels, and it empties the queue
            raise KafkaFailure(f"{part.label}: a batch was cancelled while it was queued")
        duration.observe(batch.result.result().seconds)
        batches.append(batch)
    return batches


@contextlib.asynccontextmanager
async def _delivering(part: Partition, clock: Callable[[], float]) -> AsyncIterator[None]:
    """Around a delivery step (for health: bounded by the delivery timeout)."""
    part.delivering_since = clock()
    try:
        yield
    finally:
        part.delivering_since = None


async def _unless_closed(step: asyncio.Future[None]) -> None:
    """Await ``step``; when it is cancelled on its own (``close()`` cancels a restore)
    end quietly; when the caller is cancelled, that goes on up."""
    try:
        await step
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
