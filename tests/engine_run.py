"""The engine on the in-memory fakes, as the engine tests drive it: settings, test
values, a running engine with two partitions assigned, and a bounded wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from stream.config import RunSettings
from stream.engine import Engine
from stream.kafka.protocols import TopicPartition
from tests.fakes import FakeBroker, FakeClients, FakePool

P0 = TopicPartition("in", 0)
P1 = TopicPartition("in", 1)


def settings(**changes: Any) -> RunSettings:
    base: dict[str, Any] = {
        "bootstrap_servers": "fake:9092",
        "input_topic": "in",
        "output_topic": "out",
        "group_id": "g",
        "transform": "identity",
        "workers": 1,
        "metrics_port": 0,
        "stats_interval": 0,
        "commit_interval": 0.02,
        "lag_interval": 0.05,
        "drain_timeout": 2.0,
        "delivery_timeout": 5.0,
        "require_key": False,
        "batch_max_records": 10,
    }
    return RunSettings(**(base | changes))


def values(n: int, start: int = 0) -> list[bytes]:
    return [orjson.dumps({"n": i}) for i in range(start, start + n)]


def outputs_of(broker: FakeBroker, key: bytes) -> list[int]:
    """The output values of one key, in the order they were written."""
    return [orjson.loads(r.value)["n"] for r in broker.records("out") if r.value and r.key == key]


@dataclass
class Run:
    broker: FakeBroker
    clients: FakeClients
    pool: FakePool
    engine: Engine
    task: asyncio.Task[None]

    @property
    def consumer(self) -> Any:
        return self.clients.consumer_made

    def outputs(self, topic: str = "out") -> list[int]:
        return [orjson.loads(r.value)["n"] for r in self.broker.records(topic) if r.value]

    def committed(self, tp: TopicPartition) -> int | None:
        return self.broker.committed.get(("g", tp))


async def opened(run: Run, wait: float = 3.0) -> None:
    """Every assigned partition open (each opens in a task of its own: fenced, restored,
    positioned) and taking records, or the engine ended."""

    def done() -> bool:
        parts = run.engine.assignment.parts
        owned = run.engine.membership.owned
        return run.task.done() or all(tp in parts and parts[tp].accepting for tp in owned)

    await until(done, wait)


async def until(condition: Callable[[], bool], wait: float = 3.0) -> None:
    deadline = time.monotonic() + wait
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def running(
    broker: FakeBroker | None = None, assign: set[TopicPartition] | None = None, **changes: Any
) -> AsyncIterator[Run]:
    broker = broker or FakeBroker()
    clients = FakeClients(broker)
    chosen = settings(**changes)
    pool = FakePool(chosen.transform, chosen.window_input)
    engine = Engine(chosen, clients=clients, pool=pool)
    task = asyncio.create_task(engine.run())
    run = Run(broker, clients, pool, engine, task)
    try:
        await asyncio.wait_for(clients.consumer_made.subscribed.wait(), 3)
        await clients.consumer_made.rebalance(set(), {P0, P1} if assign is None else assign)
        await opened(run)
        yield run
    finally:
        engine.stop()
        pool.gate.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
