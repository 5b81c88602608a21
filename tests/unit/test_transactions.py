"""Exactly-once transactions on the fakes: how long a partition's transaction stays open,
what makes it commit early, and what a refusal, a revoke or a shutdown does to the
batches it holds."""

from __future__ import annotations

import asyncio

import orjson

from stream.kafka.protocols import OutRecord
from tests.engine_run import P0, running, until, values
from tests.fakes import FakeBroker

EOS = {"guarantee": "exactly-once"}


def commits(broker: FakeBroker) -> int:
    return broker.events.count("commit g-in-0")


async def test_batches_finished_within_the_interval_share_one_transaction() -> None:
    broker = FakeBroker()
    async with running(broker, assign={P0}, transaction_interval=0.5, **EOS) as run:
        broker.feed(0, values(30))  # three batches of ten
        await until(lambda: len(run.clients.producers[-1].staged) == 30)
        assert run.committed(P0) is None  # sent into the open transaction, not committed
        assert run.outputs() == []
        await until(lambda: run.committed(P0) == 30)
        assert commits(broker) == 1
        assert run.outputs() == list(range(30))


async def test_a_zero_interval_commits_after_each_delivery() -> None:
    broker = FakeBroker()
    async with running(broker, assign={P0}, transaction_interval=0.0, **EOS) as run:
        broker.feed(0, values(10))
        await until(lambda: run.committed(P0) == 10)
        broker.feed(0, values(10, start=10))
        await until(lambda: run.committed(P0) == 20)
        assert commits(broker) == 2
        assert run.outputs() == list(range(20))


async def test_a_transaction_holding_a_quarter_of_the_caps_commits_before_its_interval() -> None:
    broker = FakeBroker()
    caps = {"max_inflight_records": 40, "batch_max_records": 10}
    async with running(broker, assign={P0}, transaction_interval=30.0, **caps, **EOS) as run:
        broker.feed(0, values(10))  # a batch of ten: a quarter of the 40 records cap
        await until(lambda: run.committed(P0) == 10)  # long before 30 s
        broker.feed(0, values(20, start=10))
        await until(lambda: run.committed(P0) == 30)
        assert run.outputs() == list(range(30))


async def test_a_revoke_commits_the_open_transaction_at_once_and_aborts_nothing() -> None:
    broker = FakeBroker()
    async with running(broker, assign={P0}, transaction_interval=30.0, **EOS) as run:
        broker.feed(0, values(10))
        producer = run.clients.producers[-1]
        await until(lambda: len(producer.staged) == 10)
        await asyncio.wait_for(run.consumer.rebalance({P0}, set()), 3)
        assert run.committed(P0) == 10
        assert run.outputs() == list(range(10))
        assert producer.aborts == 0
        assert producer.stopped


async def test_shutdown_commits_the_open_transaction_without_waiting_for_its_interval() -> None:
    broker = FakeBroker()
    async with running(broker, assign={P0}, transaction_interval=30.0, **EOS) as run:
        broker.feed(0, values(10))
        await until(lambda: len(run.clients.producers[-1].staged) == 10)
        run.engine.stop()
        await asyncio.wait_for(run.task, 3)
        assert run.committed(P0) == 10
        assert run.outputs() == list(range(10))


async def test_a_refusal_redoes_every_batch_of_the_open_transaction_once() -> None:
    def refuse(topic: str, record: OutRecord) -> str | None:
        big = topic == "out" and orjson.loads(record[1] or b"").get("n") == 25
        return "MessageSizeTooLargeError" if big else None

    broker = FakeBroker(refuse=refuse)
    async with running(broker, assign={P0}, transaction_interval=0.5, **EOS) as run:
        broker.feed(0, values(30))  # the refused record is in the third batch
        await until(lambda: run.committed(P0) == 30)
        assert run.outputs() == [n for n in range(30) if n != 25]  # each exactly once
        (letter,) = broker.records("in.dlq")
        assert orjson.loads(letter.value or b"") == {"n": 25}
        assert broker.aborted == 1
        assert commits(broker) == 1  # the three batches, made again in one transaction
