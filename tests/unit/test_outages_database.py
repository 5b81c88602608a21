"""A database outage on the fakes, for both guarantees (the broker suite holds a real
PostgreSQL away for 20 s under exactly-once): writes wait while the database is away,
nothing is committed past rows that are not written, and everything flows once it is
back, each output and row once."""

from __future__ import annotations

import asyncio

import pytest

from stream.engine import Engine
from tests.engine_run import P0, settings, until, values
from tests.fakes import FakeBroker, FakeClients, FakePool, FakeSink


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
async def test_a_database_outage_holds_the_partition_and_loses_nothing(guarantee: str) -> None:
    broker, sink = FakeBroker(), FakeSink()
    clients = FakeClients(broker)
    run_settings = settings(
        guarantee=guarantee,
        sink="kafka,postgres",
        postgres_dsn="postgresql://stream:stream@127.0.0.1:5432/stream",
    )
    engine = Engine(run_settings, clients=clients, pool=FakePool(), sink=sink)
    task = asyncio.create_task(engine.run())
    try:
        await asyncio.wait_for(clients.consumer_made.subscribed.wait(), 3)
        await clients.consumer_made.rebalance(set(), {P0})
        broker.feed(0, values(20))
        await until(lambda: broker.committed.get(("g", P0)) == 20)
        sink.up.clear()  # the database goes away
        broker.feed(0, values(20, start=20))
        await asyncio.sleep(0.3)
        assert broker.committed.get(("g", P0)) == 20  # nothing past rows not written
        assert len(sink.rows) == 20
        assert engine.monitor is not None
        assert not engine.monitor.readiness().ok  # the database pool has no connection
        sink.up.set()  # back
        await until(lambda: broker.committed.get(("g", P0)) == 40)
        outputs = [r.value for r in broker.records("out")]
        assert len(outputs) == 40
        assert len(set(outputs)) == 40  # each once
        assert len(sink.rows) == 40
        assert sink.offsets[("in", 0)] == 40
        assert not task.done()
    finally:
        engine.stop()
        sink.up.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
