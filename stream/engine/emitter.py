"""One emitter per partition: hands its finished batches to delivery, in input order.

Batches finish in the pool in any order; the emitter waits for the oldest one, so
outputs (and so every key's outputs) leave in input order. A ``KafkaFailure`` from
delivery means the partition must be rewound: the emitter asks for that and ends (a
new one carries on for the new assignment).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from stream.engine.assignment import Batch, Partition
from stream.engine.delivery import Delivery
from stream.errors import KafkaFailure
from stream.flow import wait_event
from stream.metrics import Metrics

Restart = Callable[[Partition, KafkaFailure], Awaitable[None]]


class Emitter:
    def __init__(self, delivery: Delivery, metrics: Metrics, transform: str, restart: Restart):
        self.delivery = delivery
        self.restart = restart
        self._duration = metrics.transform_duration.labels(transform)

    async def run(self, part: Partition) -> None:
        try:
            while True:
                batches = await self.next_batches(part)
                if batches:
                    await self.delivery.deliver(part, batches)
                else:
                    await self.delivery.idle(part)
        except KafkaFailure as exc:
            await self.restart(part, exc)

    async def next_batches(self, part: Partition) -> list[Batch]:
        """The finished batches at the head of the queue (at least one), taken off it;
        an empty list when the delivery's wait limit passed first."""
        queue = part.queue
        while not (queue and queue[0].result.done()):
            limit = self.delivery.wait_limit(part)
            if limit is not None and limit <= 0:
                return []
            if queue:
                await asyncio.wait([queue[0].result], timeout=limit)
                continue
            part.wakeup.clear()
            if limit is None:
                await part.wakeup.wait()
            elif not await wait_event(part.wakeup, limit):
                return []
        batches: list[Batch] = []
        while queue and queue[0].result.done() and len(batches) < self.delivery.max_batches:
            batch = queue.popleft()
            self._duration.observe(batch.result.result().seconds)
            batches.append(batch)
        return batches
