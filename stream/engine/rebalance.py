"""Partitions coming and going: assignment, revocation, and rewinds.

A partition is opened in this order: register it (records fetched for it meanwhile
are sought back, never skipped), let delivery open it (exactly-once: start its
transactional producer, which fences the previous owner and settles its open
transaction), read its committed offset from the broker, seek there, and only then
accept records and start its emitter. A rewind (a failed transaction, a fenced
producer) drops the partition's in-flight work and opens it again the same way,
backing off while it keeps failing; a partition that makes no progress for
``--delivery-timeout`` stops the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from stream.engine.assignment import Assignment, Partition, names
from stream.engine.delivery import Delivery
from stream.engine.emitter import Emitter
from stream.engine.sinking import SinkStage, start_from
from stream.errors import FatalError, KafkaFailure, OwnershipLost
from stream.kafka.protocols import Consumer, TopicPartition
from stream.metrics import Metrics

log = logging.getLogger("stream")

Spawn = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


class Rebalancer:
    def __init__(
        self,
        consumer: Consumer,
        assignment: Assignment,
        delivery: Delivery,
        metrics: Metrics,
        spawn: Spawn,
        *,
        transform: str,
        drain_timeout: float,
        delivery_timeout: float,
        stopping: Callable[[], bool],
        stage: SinkStage | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self.consumer = consumer
        self.assignment = assignment
        self.delivery = delivery
        self.metrics = metrics
        self.spawn = spawn
        self.emitter = Emitter(delivery, metrics, transform, self.restart)
        self.drain_timeout = drain_timeout
        self.delivery_timeout = delivery_timeout
        self.stopping = stopping
        self.clock = clock
        self.rebalancing = True  # until the first assignment
        self.assigned = asyncio.Event()  # set once partitions were assigned
        self.on_assigned_hook: Callable[[], None] = lambda: None
        self.owned: set[TopicPartition] = set()  # assigned by the group now
        self._failing_since: dict[TopicPartition, float] = {}
        self._failures: dict[TopicPartition, int] = {}

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.metrics.rebalances.inc()
        self.owned |= assigned
        # Register every new partition before the first await: records fetched
        # meanwhile are then sought back rather than taken for a partition not ours.
        added = [
            self.assignment.add(tp) for tp in sorted(assigned) if self.assignment.get(tp) is None
        ]
        # Opened side by side: starting a transactional producer takes round trips to
        # the coordinator (and waits for a previous owner's transaction to settle).
        opened = await asyncio.gather(*(self.open(p) for p in added), return_exceptions=True)
        for error in opened:
            if isinstance(error, BaseException):
                raise error
        self.rebalancing = False
        log.info("assigned partitions: %s", names(assigned))
        if assigned:
            self.assigned.set()
        self.on_assigned_hook()

    async def open(self, part: Partition) -> None:
        """Fence (delivery), then read the committed offset, seek, accept records."""
        await self.delivery.open(part)
        committed = await self.consumer.committed(part.tp)
        if self.stage is not None:  # the database's position may be behind Kafka's
            committed = start_from(committed, await self.stage.stored(part.tp))
        if not self.assignment.current(part):  # revoked meanwhile
            await self.delivery.release(part, lost=False)
            return
        part.offsets.mark_committed(committed)
        if committed is not None:
            self.consumer.seek(part.tp, committed)
        else:
            await self.consumer.seek_to_reset(part.tp)
        labels = (part.tp.topic, str(part.tp.partition))
        self.metrics.consumer_lag.labels(*labels).set(0)
        self.metrics.consumer_lag_seconds.labels(*labels).set(0)
        self.consumer.resume(part.tp)  # a previous assignment of it may have paused it
        part.accepting = True
        part.emitter = self.spawn(self.emitter.run(part), f"emit-{part.label}")

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.rebalancing = True
        self.owned -= revoked
        parts = [p for tp in revoked if (p := self.assignment.get(tp)) is not None]
        if not parts:
            return
        for part in parts:
            part.closing = True
            part.wakeup.set()  # an emitter holding a transaction open commits it now
        drained = await self.assignment.drain(parts, self.drain_timeout, self.stopping)
        if not drained:
            log.warning("rebalance: in-flight work of revoked partitions abandoned after drain")
        await self.delivery.commit(parts)
        for part in parts:
            await self.release(part, lost=False)
        log.info("revoked partitions: %s", names(revoked))

    async def release(self, part: Partition, *, lost: bool) -> None:
        self.assignment.drop(part)
        labels = (part.tp.topic, str(part.tp.partition))
        for gauge in (self.metrics.consumer_lag, self.metrics.consumer_lag_seconds):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        await self.delivery.release(part, lost=lost)
        if self.stage is not None:
            self.stage.released(part.tp)

    async def restart(self, part: Partition, error: KafkaFailure) -> None:
        """Rewind a partition: drop what is in flight, open it again (new producer,
        committed offset re-read from the broker), go on; back off while it fails."""
        tp = part.tp
        lost = isinstance(error, OwnershipLost)
        log.warning(
            "%s: %s (%s); rewinding to the committed offset",
            part.label,
            "the producer lost its transactional id" if lost else "the transaction failed",
            error,
        )
        self.metrics.commit_failures.inc()
        await self.release(part, lost=lost)
        while tp in self.owned and self.assignment.get(tp) is None:
            if self.stopping():
                return
            now = self.clock()
            since = self._failing_since.setdefault(tp, now)
            if now - since > self.delivery_timeout:
                raise FatalError(
                    f"{part.label}: no progress for {self.delivery_timeout:g}s "
                    f"(--delivery-timeout); last error: {error}"
                )
            failures = self._failures[tp] = self._failures.get(tp, 0) + 1
            await asyncio.sleep(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1)))
            fresh = self.assignment.add(tp)
            try:
                await self.open(fresh)
                return
            except KafkaFailure as exc:
                error = exc
                await self.release(fresh, lost=isinstance(exc, OwnershipLost))

    def progressed(self, tp: TopicPartition) -> None:
        """A partition committed work: its failures are over."""
        if self._failures:
            self._failures.pop(tp, None)
            self._failing_since.pop(tp, None)
