"""One ``PartitionLifecycle`` driven directly on the fakes, without the Engine: a real
``Fetcher`` over a ``FakeConsumer`` and a ``FakePool``, each guarantee over its fake
producers, and an injected clock that a test moves forward."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson
import pytest

from stream.config import RunSettings
from stream.engine.assignment import Assignment, Partition
from stream.engine.at_least_once import AtLeastOnce
from stream.engine.delivery import Guarantee
from stream.engine.exactly_once import ExactlyOnce
from stream.engine.fetcher import Fetcher
from stream.engine.lifecycle import PartitionLifecycle, Parts
from stream.engine.policy import CommitPolicy
from stream.engine.progress import Progress
from stream.engine.routing import Router
from stream.engine.sending import Sender
from stream.engine.sinking import SinkStage
from stream.errors import FatalError, KafkaFailure
from stream.flow import InFlight
from stream.kafka.protocols import TopicPartition
from stream.metrics import Metrics
from stream.sink.rows import Row
from stream.worker import BatchResult
from tests.fakes import (
    FakeBroker,
    FakeClients,
    FakeConsumer,
    FakePool,
    FakeProducer,
    FakeSink,
    FakeTransactionalProducer,
    Record,
)

P0 = TopicPartition("in", 0)
EXACTLY_ONCE = "exactly-once"
AT_LEAST_ONCE = "at-least-once"
GUARANTEES = [AT_LEAST_ONCE, EXACTLY_ONCE]


class Clock:
    """Monotonic time that a test can move forward at once."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def values(n: int, start: int = 0) -> list[bytes]:
    return [orjson.dumps({"n": i}) for i in range(start, start + n)]


@dataclass
class Rig:
    broker: FakeBroker
    clients: FakeClients
    consumer: FakeConsumer
    pool: FakePool
    assignment: Assignment
    guarantee: Guarantee
    metrics: Metrics
    clock: Clock
    lifecycle: PartitionLifecycle
    fetcher: Fetcher

    @property
    def part(self) -> Partition | None:
        return self.assignment.get(P0)

    def committed(self) -> int | None:
        return self.broker.committed.get(("g", P0))

    def outputs(self) -> list[int]:
        return [orjson.loads(r.value)["n"] for r in self.broker.records("out") if r.value]

    def commit_failures(self) -> float:
        return self.metrics.registry.get_sample_value("stream_commit_failures_total") or 0.0


def make(
    guarantee: str = AT_LEAST_ONCE,
    *,
    interval: float = 0.01,
    drain_timeout: float = 2.0,
    delivery_timeout: float = 5.0,
) -> Rig:
    broker = FakeBroker()
    clients = FakeClients(broker)
    consumer = clients.consumer_made
    consumer.assigned.add(P0)  # the group gave it to us; the lifecycle opens it
    settings = RunSettings(
        bootstrap_servers="fake:9092",
        input_topic="in",
        output_topic="out",
        group_id="g",
        transform="identity",
        batch_max_records=10,
    )
    metrics = Metrics("identity", "in", "out", "in.dlq")
    progress = Progress(metrics, "in", "out", "in.dlq")
    assignment = Assignment(InFlight(1000, 1 << 20), progress)
    sender = Sender(Router(False, 1 << 20, 1 << 20), "out", "in.dlq")
    clock = Clock()
    chosen: Guarantee
    if guarantee == EXACTLY_ONCE:
        chosen = ExactlyOnce(
            "g", clients=clients, assignment=assignment, sender=sender, metrics=metrics, clock=clock
        )
    else:
        chosen = AtLeastOnce(
            FakeProducer(broker),
            clients=clients,
            consumer=consumer,
            assignment=assignment,
            sender=sender,
            metrics=metrics,
            clock=clock,
        )
    parts = Parts(
        consumer=consumer,
        assignment=assignment,
        guarantee=chosen,
        policy=CommitPolicy(
            interval=interval, idle_interval=0.01, max_records=1000, max_bytes=1 << 20
        ),
        metrics=metrics,
        transform="identity",
        drain_timeout=drain_timeout,
        delivery_timeout=delivery_timeout,
        clock=clock,
    )
    pool = FakePool()

    async def process(
        _keys: list[bytes | None], batch: list[bytes | None], _stamps: list[int]
    ) -> BatchResult:
        return await pool.run(batch)

    fetcher = Fetcher(settings, consumer, assignment, process, progress.fetched)
    lifecycle = PartitionLifecycle(P0, parts)
    return Rig(
        broker, clients, consumer, pool, assignment, chosen, metrics, clock, lifecycle, fetcher
    )


@asynccontextmanager
async def fetching(rig: Rig) -> AsyncIterator[None]:
    """The fetch loop runs meanwhile (records fed to the broker are dispatched)."""
    task = asyncio.create_task(rig.fetcher.run())
    try:
        yield
    finally:
        rig.fetcher.stop()
        rig.pool.gate.set()
        await asyncio.wait_for(task, 2)
        await asyncio.wait_for(rig.guarantee.close(), 2)


@asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[asyncio.Task[None]]:
    """Opened, and its ``run()`` as a task, with the fetch loop."""
    await rig.lifecycle.open()
    async with fetching(rig):
        task = asyncio.create_task(rig.lifecycle.run())
        try:
            yield task
        finally:
            rig.lifecycle.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 3)


async def until(condition: Callable[[], bool], wait: float = 2.0) -> None:
    deadline = time.monotonic() + wait
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


# ---- opening -----------------------------------------------------------------------------


async def test_open_fences_before_it_reads_the_committed_offset_and_seeks_there() -> None:
    rig = make(EXACTLY_ONCE)
    rig.broker.feed(0, values(10))
    rig.broker.committed[("g", P0)] = 7
    rig.consumer.positions[P0] = 0
    rig.consumer.paused.add(P0)  # a previous assignment of it paused it
    await rig.lifecycle.open()
    events = rig.broker.events
    assert events.index("init g-in-0") < events.index("committed in[0]")
    assert rig.consumer.positions[P0] == 7
    assert P0 not in rig.consumer.paused
    part = rig.part
    assert part is not None
    assert part.accepting
    assert part.offsets.committed == 7
    await rig.guarantee.close()


async def test_open_with_nothing_committed_starts_from_the_reset_position() -> None:
    rig = make()
    rig.consumer.positions[P0] = 4  # where a previous fetch left it
    await rig.lifecycle.open()
    assert rig.consumer.positions[P0] == 0  # the fake's reset is the earliest offset
    part = rig.part
    assert part is not None
    assert part.accepting
    assert part.offsets.committed is None


async def test_an_open_that_cannot_read_the_committed_offset_releases_what_it_opened() -> None:
    rig = make(EXACTLY_ONCE)
    rig.consumer.fail_committed = 1
    with pytest.raises(KafkaFailure, match="loading"):
        await rig.lifecycle.open()
    assert rig.part is None
    (producer,) = rig.clients.producers
    assert producer.stopped


async def test_an_open_whose_producer_cannot_start_leaves_nothing_assigned() -> None:
    rig = make(EXACTLY_ONCE)
    rig.clients.refuse_ids = 1
    with pytest.raises(KafkaFailure, match="CoordinatorLoadInProgress"):
        await rig.lifecycle.open()
    assert rig.part is None
    assert rig.assignment.parts == {}


# ---- running and closing -----------------------------------------------------------------


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_records_are_delivered_in_order_and_committed(guarantee: str) -> None:
    rig = make(guarantee)
    async with running(rig):
        rig.broker.feed(0, values(35))
        await until(lambda: rig.committed() == 35)
        assert rig.outputs() == list(range(35))


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_closing_drains_queued_work_commits_it_and_releases(guarantee: str) -> None:
    rig = make(guarantee, interval=60.0)  # only the close commits
    async with running(rig) as task:
        rig.pool.gate.clear()
        rig.broker.feed(0, values(25))
        await until(lambda: rig.assignment.inflight.records == 25)
        part = rig.part
        assert part is not None
        rig.lifecycle.close()
        await asyncio.sleep(0.02)
        assert not task.done()  # waiting for the queued work
        assert rig.committed() is None
        rig.pool.gate.set()
        await asyncio.wait_for(task, 2)
        assert rig.committed() == 25
        assert rig.outputs() == list(range(25))
        assert rig.part is None  # released
        assert part.offsets.closed
        assert rig.assignment.inflight.records == 0
        if guarantee == EXACTLY_ONCE:
            (producer,) = rig.clients.producers
            assert producer.stopped
            assert producer.aborts == 0  # committed, then stopped: nothing to abort
            assert rig.broker.aborted == 0


async def test_closing_past_the_drain_timeout_abandons_what_did_not_finish() -> None:
    rig = make(EXACTLY_ONCE, drain_timeout=1.0)
    async with running(rig) as task:
        rig.broker.feed(0, values(5))
        await until(lambda: rig.committed() == 5)
        rig.pool.gate.clear()
        rig.broker.feed(0, values(5, start=5))
        await until(lambda: rig.assignment.inflight.records == 5)
        part = rig.part
        assert part is not None
        batches = list(part.queue)
        rig.lifecycle.close()
        rig.clock.advance(1.5)  # past the drain deadline
        await asyncio.wait_for(task, 1)
        assert rig.committed() == 5
        assert all(b.result.cancelled() for b in batches)
        assert rig.assignment.inflight.records == 0
        assert rig.part is None
        rig.pool.gate.set()
        await asyncio.sleep(0.02)
        assert rig.outputs() == list(range(5))  # the abandoned ones are read again later


async def test_closing_again_does_not_move_the_drain_deadline() -> None:
    rig = make(drain_timeout=2.0)
    async with running(rig) as task:
        rig.pool.gate.clear()
        rig.broker.feed(0, values(5))
        await until(lambda: rig.assignment.inflight.records == 5)
        rig.lifecycle.close()
        rig.clock.advance(1.5)
        rig.lifecycle.close()  # a second revoke or a shutdown meanwhile
        await asyncio.sleep(0.02)
        assert not task.done()  # within the first deadline
        rig.clock.advance(1.0)  # past the first deadline, not past a renewed one
        await asyncio.wait_for(task, 0.5)
        assert rig.committed() is None
        assert rig.part is None


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_cancelling_run_releases_without_committing(guarantee: str) -> None:
    rig = make(guarantee, interval=60.0)
    async with running(rig) as task:
        rig.broker.feed(0, values(10))
        if guarantee == EXACTLY_ONCE:  # shipped into the open transaction
            await until(lambda: len(rig.clients.producers[0].staged) == 10)
        else:  # shipped and acknowledged
            await until(lambda: len(rig.outputs()) == 10)
        await asyncio.sleep(0.02)  # a few idle looks: still not due (interval 60 s)
        part = rig.part
        assert part is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert rig.committed() is None  # abandoned: nothing committed
        assert rig.part is None
        assert part.offsets.closed
        if guarantee == EXACTLY_ONCE:
            (producer,) = rig.clients.producers
            assert producer.stopped
            assert producer.aborts == 1  # its open transaction is aborted, not committed
            assert rig.outputs() == []


# ---- rewinds -----------------------------------------------------------------------------


async def test_a_failed_commit_rewinds_to_the_committed_offset_on_a_new_producer() -> None:
    rig = make(EXACTLY_ONCE)
    async with running(rig) as task:
        rig.broker.feed(0, values(10))
        await until(lambda: rig.committed() == 10)
        first = rig.part
        rig.clients.producers[-1].fail_commit = 1
        rig.broker.feed(0, values(10, start=10))
        await until(lambda: rig.committed() == 20)
        assert rig.commit_failures() == 1
        assert len(rig.clients.producers) == 2
        assert rig.clients.producers[0].stopped
        assert rig.part is not first  # a new opening of the partition
        assert rig.broker.events.count("committed in[0]") == 2  # read again from the broker
        assert rig.outputs() == list(range(20))  # the failed transaction left nothing
        assert not task.done()


async def test_a_fenced_producer_is_dropped_without_an_abort() -> None:
    rig = make(EXACTLY_ONCE)
    async with running(rig):
        rig.pool.gate.clear()
        rig.broker.feed(0, values(5))
        await until(lambda: rig.assignment.inflight.records == 5)
        first = rig.clients.producers[0]
        rig.broker.fence("g-in-0")  # another owner took the id
        rig.pool.gate.set()
        await until(lambda: rig.committed() == 5)
        assert len(rig.clients.producers) == 2
        assert first.stopped
        assert first.aborts == 0  # a fenced producer cannot abort: dropped
        assert rig.outputs() == list(range(5))


async def test_close_during_a_rewind_s_backoff_returns_promptly_without_reopening(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("stream.engine.lifecycle.BACKOFF_FIRST", 5.0)
    rig = make(EXACTLY_ONCE)
    async with running(rig) as task:
        rig.broker.feed(0, values(5))
        await until(lambda: rig.committed() == 5)
        rig.clients.producers[-1].fail_commit = 1
        rig.broker.feed(0, values(5, start=5))
        await until(lambda: rig.commit_failures() == 1 and rig.part is None)  # backing off
        started = time.monotonic()
        rig.lifecycle.close()
        await asyncio.wait_for(task, 1)
        assert time.monotonic() - started < 0.5  # not the 5 s backoff
        assert rig.part is None
        assert len(rig.clients.producers) == 1  # not opened again
        assert rig.clients.producers[0].stopped
        assert rig.committed() == 5


async def test_a_partition_that_cannot_reopen_fails_after_the_delivery_timeout() -> None:
    rig = make(EXACTLY_ONCE, delivery_timeout=5.0)
    async with running(rig) as task:
        rig.broker.feed(0, values(5))
        await until(lambda: rig.committed() == 5)
        rig.clients.producers[-1].fail_commit = 1
        rig.clients.refuse_ids = 1000  # every new producer fails to start
        rig.broker.feed(0, values(5, start=5))
        await until(lambda: rig.clients.refuse_ids < 1000)  # it tried to reopen
        assert not task.done()
        rig.clock.advance(6.0)
        with pytest.raises(FatalError, match="no progress for 5s"):
            await asyncio.wait_for(task, 2)
        assert rig.part is None


async def test_a_failure_episode_ends_with_progress() -> None:
    """A failure, a successful commit, a later failure: the second episode starts its own
    clock, so it does not trip the delivery timeout at once."""
    rig = make(EXACTLY_ONCE, delivery_timeout=5.0)
    async with running(rig) as task:
        rig.broker.feed(0, values(5))
        await until(lambda: rig.committed() == 5)
        rig.clients.producers[-1].fail_commit = 1  # the first episode
        rig.broker.feed(0, values(5, start=5))
        await until(lambda: rig.committed() == 10)  # rewound, reopened, committed
        assert rig.commit_failures() == 1
        rig.clock.advance(60.0)  # long past the delivery timeout since the first failure
        rig.clients.producers[-1].fail_commit = 1  # the second episode
        rig.broker.feed(0, values(5, start=10))
        await until(lambda: rig.committed() == 15 or task.done())
        assert not task.done(), task.exception()
        assert rig.commit_failures() == 2
        assert rig.outputs() == list(range(15))


async def test_an_idle_look_before_the_records_return_does_not_end_a_failure_episode() -> None:
    """Every commit fails; after each rewind the records come back only after a fetch
    slower than the idle interval, so the partition idles before each failure. Nothing
    is ever committed: the delivery timeout must end run() (an idle look is not
    progress)."""
    rig = make(EXACTLY_ONCE, delivery_timeout=5.0)
    make_producer = rig.clients.transactional_producer

    async def failing(transactional_id: str) -> FakeTransactionalProducer:
        producer = await make_producer(transactional_id)
        producer.fail_commit = 1_000_000  # every transaction's commit fails
        return producer

    rig.clients.transactional_producer = failing  # type: ignore[method-assign]
    fetch = rig.consumer.getmany

    async def slow(timeout_ms: int, max_records: int) -> Mapping[TopicPartition, Sequence[Record]]:
        await asyncio.sleep(0.03)  # a fetch slower than the idle interval (10 ms)
        return await fetch(timeout_ms, max_records)

    rig.consumer.getmany = slow  # type: ignore[method-assign]
    async with running(rig) as task:
        rig.broker.feed(0, values(5))
        for _ in range(100):  # 2 s of real time, 100 s on the partition's clock
            if task.done():
                break
            rig.clock.advance(1.0)
            await asyncio.sleep(0.02)
        assert task.done(), f"{rig.commit_failures():g} failed commits, still rewinding"
        with pytest.raises(FatalError, match="no progress"):
            await task
        assert rig.committed() is None


async def test_a_new_group_whose_first_commit_fails_loses_no_output_with_a_database_sink() -> None:
    """The rows (with the partition's next offset) reach the database before Kafka; when
    a new group's first transaction fails, the database is ahead and Kafka has no
    offset. The partition must start from the reset position, not the database's offset,
    or the outputs of that first delivery are never written to Kafka (found in review)."""
    rig = make(EXACTLY_ONCE)
    router = Router(False, 1 << 20, 1 << 20)
    sink = FakeSink()

    def row(key: bytes | None, value: bytes, topic: str, partition: int, offset: int) -> Row:
        return (topic, partition, offset, value)

    stage = SinkStage(sink, row, ValueError, router, "g", to_kafka=True)
    assert isinstance(rig.guarantee, ExactlyOnce)
    rig.guarantee.sender = Sender(router, "out", "in.dlq", stage)
    rig.lifecycle.parts = dataclasses.replace(rig.lifecycle.parts, stage=stage)
    async with running(rig):
        rig.clients.producers[-1].fail_commit = 1  # the group's first transaction fails
        rig.broker.feed(0, values(10))
        await until(lambda: rig.committed() == 10)
        assert sink.offsets[("in", 0)] == 10
        assert rig.outputs() == list(range(10))  # each output once, none lost
        assert len(sink.rows) == 10


async def test_a_close_while_the_partition_reads_its_position_leaves_it_closed() -> None:
    """A revoke that lands while an opening (the first one or a rewind's) moves to its
    reset position (no committed offset): the partition never accepts records and run()
    ends at once, releasing it (found in review: the check ran before the last await)."""
    rig = make(EXACTLY_ONCE)
    reading = asyncio.Event()
    proceed = asyncio.Event()
    reset = rig.consumer.seek_to_reset

    async def slow(tp: TopicPartition) -> None:
        reading.set()
        await proceed.wait()
        await reset(tp)

    rig.consumer.seek_to_reset = slow  # type: ignore[method-assign]
    opening = asyncio.create_task(rig.lifecycle.open())
    await asyncio.wait_for(reading.wait(), 2)
    rig.lifecycle.close()
    proceed.set()
    await asyncio.wait_for(opening, 2)
    part = rig.part
    assert part is not None
    assert part.closing
    assert not part.accepting
    await asyncio.wait_for(rig.lifecycle.run(), 2)
    assert rig.part is None
    assert rig.clients.producers[-1].stopped
