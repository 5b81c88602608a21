"""The broker away for a while, as the exactly-once engine sees it, on the in-memory fakes:
fetches return nothing and every other call fails (starting a transactional producer,
reading a committed offset, beginning, committing and aborting a transaction). An outage
shorter than --delivery-timeout is ridden out: once the broker is back every record
comes out once, in order, with its offset committed, and the engine never stopped.

The broker suite kills and restarts a real broker for 30 s under at-least-once
(tests/chaos/test_chaos.py); an outage longer than the delivery timeout stopping the
engine is in tests/unit/test_engine.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from stream.engine import Engine
from stream.errors import KafkaFailure
from stream.kafka.protocols import OutRecord, Sent, TopicPartition
from tests.engine_run import P0, P1, outputs_of, settings, until, values
from tests.fakes import (
    FakeBroker,
    FakeClients,
    FakeConsumer,
    FakePool,
    FakeTransactionalProducer,
    Record,
)

OUTAGE = 1.5  # seconds: several rewinds and backoffs, well within the delivery timeout


class Outage:
    """Whether the broker answers."""

    def __init__(self) -> None:
        self.down = False
        self.refusals = 0  # calls that failed while it was down

    def check(self) -> None:
        if self.down:
            self.refusals += 1
            raise KafkaFailure("KafkaConnectionError: the broker does not answer")


class OutageConsumer(FakeConsumer):
    def __init__(self, broker: FakeBroker, outage: Outage, group: str) -> None:
        super().__init__(broker, group)
        self.outage = outage

    async def getmany(
        self, timeout_ms: int, max_records: int
    ) -> Mapping[TopicPartition, Sequence[Record]]:
        if self.outage.down:  # a real client's fetch returns nothing while it reconnects
            self.polls += 1
            await asyncio.sleep(min(timeout_ms / 1000, 0.005))
            return {}
        return await super().getmany(timeout_ms, max_records)

    async def committed(self, tp: TopicPartition) -> int | None:
        self.outage.check()
        return await super().committed(tp)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.outage.check()
        await super().commit(offsets)

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        self.outage.check()
        return await super().end_offsets(tps)


class OutageProducer(FakeTransactionalProducer):
    def __init__(self, broker: FakeBroker, transactional_id: str, outage: Outage, group: str):
        super().__init__(broker, transactional_id, group)
        self.outage = outage

    async def send(self, topic: str, records: Sequence[OutRecord]) -> list[Sent]:
        self.outage.check()
        return await super().send(topic, records)

    async def begin(self) -> None:
        self.outage.check()
        await super().begin()

    async def send_offsets(self, offsets: Mapping[TopicPartition, int], group_id: str) -> None:
        self.outage.check()
        await super().send_offsets(offsets, group_id)

    async def commit(self) -> None:
        self.outage.check()
        await super().commit()

    async def abort(self) -> None:
        self.outage.check()
        await super().abort()


class OutageClients(FakeClients):
    def __init__(self, broker: FakeBroker, outage: Outage) -> None:
        super().__init__(broker)
        self.outage = outage
        self.consumer_made = OutageConsumer(broker, outage, self.group)

    async def transactional_producer(self, transactional_id: str) -> FakeTransactionalProducer:
        await asyncio.sleep(0)
        self.outage.check()  # initialising a transactional id needs its coordinator
        producer = OutageProducer(self.broker, transactional_id, self.outage, self.group)
        self.producers.append(producer)
        return producer


async def test_exactly_once_rides_out_a_broker_outage_shorter_than_the_delivery_timeout() -> None:
    broker = FakeBroker()
    outage = Outage()
    clients = OutageClients(broker, outage)
    pool = FakePool()
    engine = Engine(
        settings(delivery_timeout=10.0, guarantee="exactly-once"), clients=clients, pool=pool
    )
    task = asyncio.create_task(engine.run())
    try:
        await asyncio.wait_for(clients.consumer_made.subscribed.wait(), 3)
        await clients.consumer_made.rebalance(set(), {P0, P1})

        def committed(tp: TopicPartition) -> int | None:
            return broker.committed.get(("g", tp))

        broker.feed(0, values(20), key=b"a")
        broker.feed(1, values(20, start=1000), key=b"b")
        await until(lambda: committed(P0) == 20 and committed(P1) == 20, wait=10.0)

        # Work in flight when the broker goes: its transactions cannot commit.
        pool.gate.clear()
        started = pool.started
        broker.feed(0, values(30, start=20), key=b"a")
        broker.feed(1, values(30, start=1020), key=b"b")
        await until(lambda: pool.started > started, wait=10.0)
        outage.down = True
        pool.gate.set()
        await asyncio.sleep(OUTAGE)
        assert outage.refusals > 0, "nothing reached the broker during the outage"
        assert not task.done(), "the engine stopped during the outage"
        assert committed(P0) == 20
        assert committed(P1) == 20
        assert len(broker.records("out")) == 40  # nothing more became visible

        outage.down = False  # the broker is back
        broker.feed(0, values(10, start=50), key=b"a")  # and new input arrives
        await until(lambda: committed(P0) == 60 and committed(P1) == 50, wait=10.0)
        assert outputs_of(broker, b"a") == list(range(60))
        assert outputs_of(broker, b"b") == list(range(1000, 1050))
        assert broker.records("in.dlq") == []
        assert not task.done()
    finally:
        outage.down = False
        engine.stop()
        pool.gate.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
    assert task.exception() is None
