"""Exactly-once: one transactional producer per input partition.

aiokafka has no KIP-447, so each input partition has its own transactional id
(``<group>-<topic>-<partition>``). ``open`` starts that producer before the
partition's committed offset is read: starting it fences any older owner and
settles its open transaction, so the offset read afterwards is final.

A partition's transaction stays open while its batches finish: each finished batch is
sent into it at once (its database rows first, with a sink), so producing overlaps the
work of the batches behind it. It commits, with the partition's next offset, once it
has been open for ``--transaction-interval`` or holds a quarter of the in-flight caps
(so that it never stalls fetching), and as soon as nothing more is queued when the
partition is revoked or the engine shuts down. At the
commit the offsets are sent while the records' acknowledgements are awaited; a refused
record aborts the transaction, which is made again with the refused records as dead
letters. Any other failure raises ``KafkaFailure``: the emitter then has the partition
rewound (``rebalance.Rebalancer.restart``) with a new producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stream.config import RunSettings
from stream.engine.assignment import Assignment, Batch, Partition
from stream.engine.routing import Plan
from stream.engine.sending import MAX_TRIES, Sender, Shipped, learn, settle
from stream.errors import KafkaFailure
from stream.kafka.protocols import Clients, Consumer, TransactionalProducer
from stream.metrics import Metrics

TRANSACTION_MAX_BATCHES = 32  # most finished batches sent into a transaction at once
CAPS_SHARE = 4  # a transaction holding 1/CAPS_SHARE of the in-flight caps commits early


@dataclass(slots=True)
class Open:
    """A partition's open transaction: its batches (in input order) with their plans and
    what was queued for them on the producer."""

    started: float
    batches: list[Batch] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    shipped: list[list[Shipped]] = field(default_factory=list)
    records: int = 0
    nbytes: int = 0

    def add(self, batch: Batch, plan: Plan, shipped: list[Shipped]) -> None:
        self.batches.append(batch)
        self.plans.append(plan)
        self.shipped.append(shipped)
        self.records += len(batch)
        self.nbytes += batch.nbytes


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.consumer = consumer
        self.assignment = assignment
        self.sender = sender
        self.metrics = metrics
        self.clock = clock
        self.interval = settings.transaction_interval
        self._producers: dict[Partition, TransactionalProducer] = {}
        self._open: dict[Partition, Open] = {}
        self._flushing = False  # shutting down: commit as soon as nothing is queued

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

    def flush(self) -> None:
        """Shutting down: commit each open transaction once nothing more is queued."""
        self._flushing = True
        for part in self._open:
            part.wakeup.set()

    def wait_limit(self, part: Partition) -> float | None:
        """Seconds until the open transaction is due (0: now), or until the idle check of
        a partition with nothing open."""
        txn = self._open.get(part)
        if txn is None:
            return self.settings.commit_interval
        if self._ending(part):
            return 0.0
        return max(0.0, txn.started + self.interval - self.clock())

    def _ending(self, part: Partition) -> bool:
        """Revoked, rewound or shutting down, with nothing more queued: commit now."""
        return (part.closing or self._flushing) and not part.queue

    async def deliver(self, part: Partition, batches: list[Batch]) -> None:
        """Send the batches into the partition's open transaction (beginning one if
        none is open); commit it if it is due."""
        plans = await self.sender.write_rows(part, batches, batches[-1].ticket.end)
        producer = self._producers[part]
        txn = self._open.get(part)
        if txn is None:
            await producer.begin()
            txn = self._open[part] = Open(self.clock())
        for batch, plan in zip(batches, plans, strict=True):
            txn.add(batch, plan, await self.sender.send(producer, part, batch, plan))
        if self._due(part, txn):
            await self._commit(part, txn)

    def _due(self, part: Partition, txn: Open) -> bool:
        caps = self.assignment.inflight
        return (
            self.clock() - txn.started >= self.interval
            or txn.records * CAPS_SHARE >= caps.max_records
            or txn.nbytes * CAPS_SHARE >= caps.max_bytes
            or self._ending(part)
        )

    async def idle(self, part: Partition) -> None:
        """Nothing new finished in time: commit the open transaction; with none open,
        commit the consumer's position if it moved past our last offset (transaction
        markers of a transactional input), so that lag reaches 0."""
        txn = self._open.get(part)
        if txn is not None:
            await self._commit(part, txn)
            return
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

    async def _commit(self, part: Partition, txn: Open) -> None:
        """Commit the transaction with the partition's next offset. The offsets go out
        while the records' acknowledgements are awaited (an aborted transaction drops
        them too); aiokafka would commit a transaction even though one of its produce
        requests was refused, so every send is settled first."""
        started = time.perf_counter()
        position = txn.batches[-1].ticket.end
        producer = self._producers[part]
        shipped = txn.shipped
        for _ in range(MAX_TRIES):
            offsets = asyncio.ensure_future(
                producer.send_offsets({part.tp: position}, self.settings.group_id)
            )
            try:
                failed = await asyncio.gather(*(settle(s) for s in shipped))
            finally:
                await asyncio.wait([offsets])
            offsets.result()  # a failed offset commit raises: the partition is rewound
            if not any(failed):
                await producer.commit()
                break
            await producer.abort()
            for plan, failures in zip(txn.plans, failed, strict=True):
                learn(plan, failures)
            # After a refusal aiokafka's sequence for that partition is broken (and it
            # would even commit a transaction with a failed send): a new producer with
            # the same id, which fences this one, starts clean.
            await producer.stop()
            producer = self._producers[part] = await self.clients.transactional_producer(
                self.transactional_id(part)
            )
            await producer.begin()
            shipped = [
                await self.sender.send(producer, part, batch, plan)
                for batch, plan in zip(txn.batches, txn.plans, strict=True)
            ]
        else:
            raise KafkaFailure(f"records refused after {MAX_TRIES} transactions")
        del self._open[part]
        self.metrics.commit_duration.observe(time.perf_counter() - started)
        for batch in txn.batches:
            self.assignment.finish(part, batch)
        part.offsets.mark_committed(position)

    async def commit(self, parts: list[Partition] | None = None) -> None:
        return None  # committed with each transaction

    async def release(self, part: Partition, *, lost: bool) -> None:
        """Close the partition's producer; abort its open transaction unless the producer
        lost its id (a fenced producer cannot abort, only be dropped)."""
        self._open.pop(part, None)
        producer = self._producers.pop(part, None)
        if producer is None:
            return
        if not lost:
            with contextlib.suppress(KafkaFailure):
                await producer.abort()
        await producer.stop()

    async def close(self) -> None:
        await asyncio.gather(*(self.release(p, lost=False) for p in list(self._producers)))
