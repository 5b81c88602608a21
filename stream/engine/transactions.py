"""Exactly-once: one transactional producer per input partition.

aiokafka has no KIP-447, so each input partition has its own transactional id
(``<group>-<topic>-<partition>``). ``open`` starts that producer before the
partition's committed offset is read: starting it fences any older owner and
settles its open transaction, so the offset read afterwards is final. One
transaction holds several finished batches, their dead letters and the partition's
next offset. A failed transaction raises ``KafkaFailure``: the emitter then has the
partition rewound (``rebalance.Rebalancer.restart``) with a new producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from stream.config import RunSettings
from stream.engine.assignment import Assignment, Batch, Partition
from stream.engine.sending import MAX_TRIES, Sender, learn, settle
from stream.errors import KafkaFailure
from stream.kafka.protocols import Clients, Consumer, TransactionalProducer
from stream.metrics import Metrics

TRANSACTION_MAX_BATCHES = 32  # most batches one transaction covers


class ExactlyOnce:
    max_batches = TRANSACTION_MAX_BATCHES

    def __init__(
        self,
        settings: RunSettings,
        *,
        clients: Clients,
        consumer: Consumer,
        assignment: Assignment,
        sender: Sender,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.consumer = consumer
        self.assignment = assignment
        self.sender = sender
        self.metrics = metrics
        self.idle_interval: float | None = settings.commit_interval
        self._producers: dict[Partition, TransactionalProducer] = {}

    def transactional_id(self, part: Partition) -> str:
        return f"{self.settings.group_id}-{part.tp.topic}-{part.tp.partition}"

    async def start(self) -> None:
        return None

    async def run(self) -> None:
        return None  # offsets are committed inside each partition's transactions

    async def open(self, part: Partition) -> None:
        self._producers[part] = await self.clients.transactional_producer(
            self.transactional_id(part)
        )

    async def deliver(self, part: Partition, batches: list[Batch]) -> None:
        """The batches' outputs, dead letters and the next offset in one transaction.

        Every send must be taken before the offsets are sent: aiokafka would commit a
        transaction even though one of its produce requests was refused. A transaction
        with a refused record is aborted and made again, the refused records as dead
        letters; any other failure raises, and the partition is rewound."""
        producer = self._producers[part]
        position = batches[-1].ticket.end
        started = time.perf_counter()
        plans = await self.sender.write_rows(part, batches, position)
        for _ in range(MAX_TRIES):
            await producer.begin()
            shipped = [
                await self.sender.send(producer, part, batch, plan)
                for batch, plan in zip(batches, plans, strict=True)
            ]
            failed = await asyncio.gather(*(settle(s) for s in shipped))
            if not any(failed):
                await producer.send_offsets({part.tp: position}, self.settings.group_id)
                await producer.commit()
                break
            await producer.abort()
            for plan, failures in zip(plans, failed, strict=True):
                learn(plan, failures)
            # After a refusal aiokafka's sequence for that partition is broken (and it
            # would even commit a transaction with a failed send): a new producer with
            # the same id, which fences this one, starts clean.
            await producer.stop()
            producer = self._producers[part] = await self.clients.transactional_producer(
                self.transactional_id(part)
            )
        else:
            raise KafkaFailure(f"records refused after {MAX_TRIES} transactions")
        self.metrics.commit_duration.observe(time.perf_counter() - started)
        for batch in batches:
            self.assignment.finish(part, batch)
        part.offsets.mark_committed(position)

    async def idle(self, part: Partition) -> None:
        """Nothing in flight: commit the consumer's position if it moved past our last
        offset (transaction markers of a transactional input), so that lag reaches 0."""
        state = part.offsets
        if state.pending or part.closing:
            return
        with contextlib.suppress(KafkaFailure):
            state.advance_idle(await self.consumer.position(part.tp))
        position = state.committable()
        if position is None:
            return
        producer = self._producers[part]
        await producer.begin()
        await producer.send_offsets({part.tp: position}, self.settings.group_id)
        await producer.commit()
        state.mark_committed(position)

    async def commit(self, parts: list[Partition] | None = None) -> None:
        return None  # committed with each transaction

    async def release(self, part: Partition, *, lost: bool) -> None:
        """Close the partition's producer; abort its open transaction unless the producer
        lost its id (a fenced producer cannot abort, only be dropped)."""
        producer = self._producers.pop(part, None)
        if producer is None:
            return
        if not lost:
            with contextlib.suppress(KafkaFailure):
                await producer.abort()
        await producer.stop()

    async def close(self) -> None:
        await asyncio.gather(*(self.release(p, lost=False) for p in list(self._producers)))
