"""Exactly-once: one transactional producer per input partition.

aiokafka has no KIP-447, so each input partition has its own transactional id
(``<group>-<topic>-<partition>``). ``open`` starts that producer before the
partition's committed offset is read: starting it fences any older owner and
settles its open transaction, so the offset read afterwards is final.

A partition's transaction stays open while its batches finish: each finished batch is
sent into it at once (its database rows first, with a sink), so producing overlaps the
work of the batches behind it. The lifecycle commits it on the commit policy. At the
commit the offsets are sent while the records' acknowledgements are awaited; a refused
record aborts the transaction, which is made again, on a new producer, with the refused
records as dead letters. Any other failure raises ``KafkaFailure``: the lifecycle then
rewinds the partition with a new producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stream.engine.assignment import Assignment, Partition
from stream.engine.batch import Batch
from stream.engine.policy import NOTHING, Pending
from stream.engine.sending import Refusals, Sender, Shipped, settle, until_accepted
from stream.errors import KafkaFailure
from stream.kafka.protocols import Clients, Producer, TransactionalProducer
from stream.metrics import Metrics


@dataclass(slots=True)
class Open:
    """A partition's open transaction: its batches (in input order) and what was queued
    for them on the producer."""

    started: float
    batches: list[Batch] = field(default_factory=list)
    shipped: list[list[Shipped]] = field(default_factory=list)
    records: int = 0
    nbytes: int = 0

    def add(self, batch: Batch, shipped: list[Shipped]) -> None:
        self.batches.append(batch)
        self.shipped.append(shipped)
        self.records += len(batch)
        self.nbytes += batch.nbytes


class ExactlyOnce:
    """Opens a transactional producer per partition."""

    def __init__(
        self,
        group_id: str,
        *,
        clients: Clients,
        assignment: Assignment,
        sender: Sender,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.group_id = group_id
        self.clients = clients
        self.assignment = assignment
        self.sender = sender
        self.metrics = metrics
        self.clock = clock
        self.open_deliveries: set[Transactional] = set()

    def transactional_id(self, part: Partition) -> str:
        return f"{self.group_id}-{part.tp.topic}-{part.tp.partition}"

    async def open(self, part: Partition) -> Transactional:
        delivery = Transactional(self, part, await self.producer(part))
        self.open_deliveries.add(delivery)
        return delivery

    async def producer(self, part: Partition) -> TransactionalProducer:
        """A started producer with the partition's id (fencing any older one)."""
        return await self.clients.transactional_producer(self.transactional_id(part))

    async def close(self) -> None:
        """Producers of partitions whose lifecycle ended without closing its delivery."""
        await asyncio.gather(*(d.close(lost=False) for d in list(self.open_deliveries)))


class Transactional:
    """One partition's exactly-once delivery."""

    def __init__(
        self, shared: ExactlyOnce, part: Partition, producer: TransactionalProducer
    ) -> None:
        self.shared = shared
        self.part = part
        self.producer = producer
        self._txn: Open | None = None

    async def ship(self, batches: list[Batch]) -> None:
        """Send the batches into the partition's open transaction (beginning one if
        none is open)."""
        shared = self.shared
        await shared.sender.write_rows(self.part, batches)
        txn = self._txn
        if txn is None:
            await self.producer.begin()
            txn = self._txn = Open(shared.clock())
        for batch in batches:
            txn.add(batch, await shared.sender.send(self.producer, self.part, batch))

    def pending(self) -> Pending:
        txn = self._txn
        return NOTHING if txn is None else Pending(txn.started, txn.records, txn.nbytes)

    async def commit(self, *, final: bool) -> None:
        """Commit the transaction with the partition's next offset; with none open, a
        transaction of the offset alone if the position moved (past transaction
        markers of a transactional input, so that lag reaches 0)."""
        txn, part = self._txn, self.part
        if txn is None:
            position = part.offsets.committable()
            if position is not None:
                await self.producer.begin()
                await self.producer.send_offsets({part.tp: position}, self.shared.group_id)
                await self.producer.commit()
                part.offsets.mark_committed(position)
            return
        started = time.perf_counter()
        position = txn.batches[-1].ticket.end

        async def renew() -> Producer:
            # After a refusal aiokafka's sequence for that partition is broken (and it
            # would even commit a transaction with a failed send): a new producer with
            # the same id, which fences this one, starts clean.
            await self.producer.abort()
            await self.producer.stop()
            self.producer = await self.shared.producer(part)
            await self.producer.begin()
            return self.producer

        async def again(producer: Producer, _refused: Refusals) -> Refusals:
            txn.shipped = [
                await self.shared.sender.send(producer, part, batch) for batch in txn.batches
            ]
            return await self._settle(txn, position)

        await until_accepted(await self._settle(txn, position), renew, again)
        await self.producer.commit()
        self._txn = None
        self.shared.metrics.commit_duration.observe(time.perf_counter() - started)
        for batch in txn.batches:
            self.shared.assignment.finish(part, batch)
        part.offsets.mark_committed(position)

    async def _settle(self, txn: Open, position: int) -> Refusals:
        """Send the offsets while every send of the transaction is awaited (aiokafka
        would commit a transaction even though one of its produce requests was
        refused); the batches with refused sends."""
        offsets = asyncio.ensure_future(
            self.producer.send_offsets({self.part.tp: position}, self.shared.group_id)
        )
        try:
            failed = await asyncio.gather(*(settle(s) for s in txn.shipped))
        except BaseException:  # cancelled (a drain past its bound) or failed: no orphan
            offsets.cancel()
            await asyncio.wait([offsets])
            if not offsets.cancelled():
                offsets.exception()  # retrieved: the first error is the one raised
            raise
        await asyncio.wait([offsets])
        offsets.result()  # a failed offset commit raises: the partition is rewound
        return [(b, f) for b, f in zip(txn.batches, failed, strict=True) if f]

    async def close(self, *, lost: bool) -> None:
        """Abort the open transaction unless the producer lost its id (a fenced producer
        cannot abort, only be dropped); stop the producer."""
        self.shared.open_deliveries.discard(self)
        self._txn = None
        if not lost:
            with contextlib.suppress(KafkaFailure):
                await self.producer.abort()
        await self.producer.stop()
