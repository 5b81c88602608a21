"""Partitions coming and going: one ``PartitionLifecycle`` per owned partition.

On assignment each new partition's lifecycle is opened (side by side: starting a
transactional producer takes round trips to the coordinator) and then run as a task
the engine owns. On revocation, and at shutdown, lifecycles are closed and awaited:
each finishes its queued work within the drain timeout, commits it and releases its
partition; one that is still busy a step past that is cancelled (nothing more of it
is committed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from stream.engine.assignment import names
from stream.engine.lifecycle import CLOSE_STEP, PartitionLifecycle
from stream.engine.state import Membership
from stream.engine.tasks import Tasks
from stream.kafka.protocols import TopicPartition
from stream.metrics import Metrics

log = logging.getLogger("stream")


class Rebalancer:
    def __init__(
        self,
        lifecycle: Callable[[TopicPartition], PartitionLifecycle],
        tasks: Tasks,
        membership: Membership,
        metrics: Metrics,
        drain_timeout: float,
    ) -> None:
        self.lifecycle = lifecycle
        self.tasks = tasks
        self.membership = membership
        self.metrics = metrics
        self.drain_timeout = drain_timeout
        self.lifecycles: dict[TopicPartition, tuple[PartitionLifecycle, asyncio.Task[None]]] = {}
        self._closing: dict[TopicPartition, asyncio.Task[None]] = {}  # being closed now

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.metrics.rebalances.inc()
        self.membership.owned |= assigned
        made = [self.lifecycle(tp) for tp in sorted(assigned) if tp not in self.lifecycles]
        for lifecycle in made:
            # Each opens in a task of its own (fence, restore, seek): a long restore
            # holds neither the group's rebalance nor the other partitions, and a
            # revoke cancels it. A partition takes records once it is open.
            label = f"{lifecycle.tp.topic}[{lifecycle.tp.partition}]"
            task = self.tasks.spawn(_open_and_run(lifecycle), f"partition-{label}")
            self.lifecycles[lifecycle.tp] = (lifecycle, task)
        self.membership.rebalancing = False
        log.info("assigned partitions: %s", names(assigned))
        if assigned:
            self.membership.assigned.set()
        self.membership.changed.set()

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.membership.rebalancing = True
        self.membership.owned -= revoked
        closing = [tp for tp in revoked if tp in self.lifecycles]
        if closing:
            await self.close(closing)
            log.info("revoked partitions: %s", names(revoked))
        # Closed already (a shutdown drains them): the group may hand them on only once
        # they have committed.
        if late := [task for tp in revoked if (task := self._closing.get(tp)) is not None]:
            await asyncio.wait(late, timeout=self.drain_timeout + 2 * CLOSE_STEP)

    async def close(self, tps: list[TopicPartition] | None = None) -> None:
        """Close these lifecycles (every one by default) and wait for them; cancel those
        still busy a step past the drain timeout."""
        chosen = [self.lifecycles.pop(tp) for tp in (list(self.lifecycles) if tps is None else tps)]
        for lifecycle, task in chosen:
            lifecycle.close()
            self._closing[lifecycle.tp] = task
        tasks = [task for _, task in chosen]
        if not tasks:
            return
        try:
            _, late = await asyncio.wait(tasks, timeout=self.drain_timeout + 2 * CLOSE_STEP)
            for task in late:
                task.cancel()
            if late:
                log.warning("%d partitions did not close in time; abandoned", len(late))
                await asyncio.wait(late, timeout=CLOSE_STEP)
        finally:
            for lifecycle, task in chosen:
                if self._closing.get(lifecycle.tp) is task:
                    del self._closing[lifecycle.tp]

    async def abandon(self) -> None:
        """A fatal error: stop every lifecycle at once, committing nothing more."""
        chosen = list(self.lifecycles.values())
        self.lifecycles.clear()
        for _, task in chosen:
            task.cancel()
        if chosen:
            await asyncio.wait([task for _, task in chosen], timeout=2 * CLOSE_STEP)


async def _open_and_run(lifecycle: PartitionLifecycle) -> None:
    await lifecycle.open()
    await lifecycle.run()
