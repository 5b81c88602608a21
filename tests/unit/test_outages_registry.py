"""A Schema Registry outage as the engine sees it, on the in-memory fakes: the pool keeps
re-running a batch whose schema it cannot fetch, so the batch simply takes as long as
the outage. Nothing may fail, time out, be dead-lettered or be committed early, and once
the registry is back every record comes out once, in order, and is committed.

The broker suite drives exactly-once through a real 20 s registry outage
(tests/integration/test_formats_pipeline.py); the pool's own re-runs against a stopped
registry are tested on the real registry (tests/integration/test_schema_registry.py).
Here both guarantees, with the engine's timers far shorter than the outage."""

from __future__ import annotations

import asyncio

import pytest

from stream.engine import Engine
from stream.kafka.protocols import TopicPartition
from tests.engine_run import P0, P1, outputs_of, settings, until, values
from tests.fakes import FakeBroker, FakeClients, FakePool

OUTAGE = 1.5  # seconds: many commit intervals, three delivery timeouts


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
async def test_a_registry_outage_holds_batches_and_loses_or_repeats_nothing(
    guarantee: str,
) -> None:
    broker = FakeBroker()
    clients = FakeClients(broker)
    pool = FakePool()
    engine = Engine(settings(delivery_timeout=0.5, guarantee=guarantee), clients=clients, pool=pool)
    task = asyncio.create_task(engine.run())
    try:
        await asyncio.wait_for(clients.consumer_made.subscribed.wait(), 3)
        await clients.consumer_made.rebalance(set(), {P0, P1})

        def committed(tp: TopicPartition) -> int | None:
            return broker.committed.get(("g", tp))

        # Before the outage: records flow and are committed.
        broker.feed(0, values(20), key=b"a")
        broker.feed(1, values(20, start=1000), key=b"b")
        await until(lambda: committed(P0) == 20 and committed(P1) == 20, wait=5.0)

        # The registry goes away: every batch from now on waits for it.
        pool.gate.clear()
        started = pool.started
        broker.feed(0, values(30, start=20), key=b"a")
        broker.feed(1, values(30, start=1020), key=b"b")
        await until(lambda: pool.started > started, wait=5.0)
        await asyncio.sleep(OUTAGE)
        assert not task.done(), "the engine stopped during the outage"
        assert committed(P0) == 20, "committed past records not yet processed"
        assert committed(P1) == 20, "committed past records not yet processed"
        assert len(broker.records("out")) == 40

        # The registry is back: everything comes out once, in order, and is committed.
        pool.gate.set()
        await until(lambda: committed(P0) == 50 and committed(P1) == 50, wait=5.0)
        assert outputs_of(broker, b"a") == list(range(50))
        assert outputs_of(broker, b"b") == list(range(1000, 1050))
        assert broker.records("in.dlq") == []
        assert not task.done()
    finally:
        engine.stop()
        pool.gate.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
    assert task.exception() is None
