"""The Monitor built from small parts on an injected clock: liveness, readiness with
their reasons, and lag from committed and end offsets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from stream.config import RunSettings
from stream.engine.assignment import Assignment, Partition
from stream.engine.batch import Batch
from stream.engine.monitor import Monitor
from stream.engine.progress import Progress
from stream.engine.state import EngineState, Membership
from stream.errors import FatalError, KafkaFailure
from stream.flow import InFlight
from stream.kafka.protocols import TopicPartition
from stream.metrics import Metrics
from stream.offsets import Ticket
from stream.worker import BatchResult
from tests.fakes import FakeBroker, FakeConsumer, FakePool

P0 = TopicPartition("in", 0)
P1 = TopicPartition("in", 1)
STALL = 10.0


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Workers(FakePool):
    """A pool whose live and serving worker counts a test sets."""

    def __init__(self, alive: int = 2, serving: int = 2) -> None:
        super().__init__()
        self.live = alive
        self.up = serving

    @property
    def alive(self) -> int:
        return self.live

    @property
    def serving(self) -> int:
        return self.up


class FailingConsumer(FakeConsumer):
    """Its end offsets cannot be read while ``failing``."""

    failing = False

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        if self.failing:
            raise KafkaFailure("NotLeaderForPartition: a rebalance is under way")
        return await super().end_offsets(tps)


@dataclass
class Database:
    in_use: int = 0
    idle: int = 1

    def pool_connections(self) -> tuple[int, int]:
        return self.in_use, self.idle


@dataclass
class Parts:
    monitor: Monitor
    clock: Clock
    wall: Clock
    state: EngineState
    membership: Membership
    assignment: Assignment
    progress: Progress
    pool: Workers
    metrics: Metrics

    def owned(self, *tps: TopicPartition) -> list[Partition]:
        """Partitions assigned and the first assignment done."""
        parts = [self.assignment.add(tp) for tp in tps]
        self.membership.rebalancing = False
        self.membership.owned |= set(tps)
        return parts

    def gauge(self, name: str, tp: TopicPartition) -> float | None:
        labels = {"topic": tp.topic, "partition": str(tp.partition)}
        return self.metrics.registry.get_sample_value(name, labels)


def make(database: Database | None = None, **changes: float) -> Parts:
    settings = RunSettings(
        bootstrap_servers="fake:9092",
        input_topic="in",
        output_topic="out",
        group_id="g",
        transform="identity",
        workers=2,
        stall_timeout=changes.get("stall_timeout", STALL),
        batch_timeout=changes.get("batch_timeout", 3 * STALL),
        lag_interval=changes.get("lag_interval", 5.0),
    )
    clock, wall = Clock(), Clock(1_700_000_000.0)
    metrics = Metrics("identity", "in", "out", "in.dlq")
    progress = Progress(metrics, "in", "out", "in.dlq", clock=clock, wall=wall)
    assignment = Assignment(InFlight(1000, 1 << 20), progress, clock)
    state, membership, pool = EngineState(), Membership(), Workers()
    monitor = Monitor(
        settings,
        metrics,
        assignment,
        progress,
        state=state,
        membership=membership,
        pool=pool,
        database=database,
        clock=clock,
        wall=wall,
    )
    return Parts(monitor, clock, wall, state, membership, assignment, progress, pool, metrics)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met in time")


def finished_batch(ticket: Ticket) -> Batch:
    count = ticket.count
    result: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
    result.set_result(BatchResult(None, [], 0.001, 0))
    return Batch(
        ticket=ticket,
        keys=[b"k"] * count,
        values=[b"{}"] * count,
        offsets=list(range(ticket.first, ticket.end)),
        timestamps_ms=[0] * count,
        nbytes=2 * count,
        result=result,
    )


# ---- liveness ----------------------------------------------------------------------------


def test_alive_with_workers_serving_and_no_lag() -> None:
    m = make()
    m.clock.advance(10 * STALL)  # no progress for long, but nothing to do
    check = m.monitor.liveness()
    assert check.ok, check.reason
    assert check.details["workers_alive"] == 2
    assert check.details["workers"] == 2
    assert check.details["lag"] == 0


def test_a_fatal_error_is_not_alive() -> None:
    m = make()
    m.state.fail(FatalError("the broker refused the transactional id"))
    check = m.monitor.liveness()
    assert not check.ok
    assert "fatal error" in check.reason
    assert "transactional id" in check.reason


def test_no_serving_worker_is_not_alive() -> None:
    m = make()
    m.pool.up = 0
    m.pool.live = 2  # processes up, none serving (all hung or being replaced)
    check = m.monitor.liveness()
    assert not check.ok
    assert check.reason == "no worker process is alive"
    m.pool.up = 1
    assert m.monitor.liveness().ok


def test_lagging_without_progress_past_the_stall_timeout_is_not_alive() -> None:
    m = make()
    m.monitor.lag = {P0: 7}
    m.clock.advance(STALL)  # exactly at the bound: still alive
    assert m.monitor.liveness().ok
    m.clock.advance(0.5)
    check = m.monitor.liveness()
    assert not check.ok
    assert "while lagging" in check.reason
    assert check.details["lag"] == 7
    assert check.details["seconds_since_progress"] == pytest.approx(STALL + 0.5)


async def test_progress_while_lagging_keeps_it_alive() -> None:
    m = make()
    (part,) = m.owned(P0)
    m.monitor.lag = {P0: 7}
    m.clock.advance(STALL - 1)
    assert m.monitor.liveness().ok
    batch = finished_batch(part.offsets.track(0, 2, 3))
    m.assignment.track(part, batch)
    m.assignment.finish(part, batch)  # work finished: the observer stamps progress now
    assert m.progress.last_progress == m.clock.now
    m.clock.advance(STALL - 1)  # 2 * (STALL - 1) since the start, STALL - 1 since progress
    check = m.monitor.liveness()
    assert check.ok, check.reason
    assert check.details["seconds_since_progress"] == pytest.approx(STALL - 1)


async def test_a_slow_batch_after_a_quiet_spell_is_alive_within_its_batch_timeout() -> None:
    """Issue 20, item 1: on a quiet topic the stall clock starts when work began waiting,
    and a batch within --batch-timeout is progress in hand. Before, the first lag poll
    after a record arrived saw lag and an hour without progress: not alive, and
    Kubernetes restarted the pod into the same slow batch."""
    m = make()
    (part,) = m.owned(P0)
    m.clock.advance(3600)  # an hour with nothing to do
    assert m.monitor.liveness().ok
    pending: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
    batch = Batch(part.offsets.track(0, 0, 1), [b"k"], [b"{}"], [0], [0], 2, pending)
    m.progress.fetched(part, 1, [1])
    m.assignment.track(part, batch)
    m.pool.busy_since = m.clock.now  # the batch is in the workers
    m.monitor.lag = {P0: 1}
    m.clock.advance(2 * STALL)  # past the stall timeout, within the batch timeout
    check = m.monitor.liveness()
    assert check.ok, check.reason
    assert "a batch in the workers for 20s (--batch-timeout 30s)" in check.reason
    assert check.details["seconds_since_progress"] == pytest.approx(2 * STALL)
    m.clock.advance(STALL + 1)  # past the batch timeout with no step: stuck
    check = m.monitor.liveness()
    assert not check.ok
    assert "no progress for 31s while lagging" in check.reason
    pending.cancel()


# ---- readiness ---------------------------------------------------------------------------


def ready(database: Database | None = None) -> Parts:
    """Everything a ready instance has: partitions, a broker answer just now."""
    m = make(database)
    m.owned(P0, P1)
    m.monitor.broker_seen = m.clock()
    return m


def test_all_good_is_ready() -> None:
    m = ready(Database())
    check = m.monitor.readiness()
    assert check.ok, check.reason
    assert check.reason == "ready"
    assert check.details == {"partitions": 2}


def test_stopping_is_not_ready() -> None:
    m = ready()
    m.state.stop()
    check = m.monitor.readiness()
    assert (check.ok, check.reason) == (False, "shutting down")


def test_rebalancing_is_not_ready() -> None:
    m = make()
    m.monitor.broker_seen = m.clock()
    check = m.monitor.readiness()  # no assignment yet: a new member is rebalancing
    assert not check.ok
    assert check.reason.startswith("rebalancing")
    m.owned(P0)
    m.membership.rebalancing = True  # a later rebalance
    assert m.monitor.readiness().reason.startswith("rebalancing")


def test_no_partitions_is_not_ready() -> None:
    m = ready()
    for part in list(m.assignment.parts.values()):
        m.assignment.drop(part)
    check = m.monitor.readiness()
    assert (check.ok, check.reason) == (False, "no partitions assigned")
    assert check.details == {"partitions": 0}


def test_a_database_pool_with_no_connection_is_not_ready() -> None:
    database = Database(in_use=0, idle=0)
    m = ready(database)
    check = m.monitor.readiness()
    assert (check.ok, check.reason) == (False, "the database pool has no connection")
    database.in_use = 1  # busy connections count
    assert m.monitor.readiness().ok


def test_a_broker_never_seen_is_not_ready() -> None:
    m = ready()
    m.monitor.broker_seen = None
    check = m.monitor.readiness()
    assert (check.ok, check.reason) == (False, "the broker has not answered recently")


def test_a_broker_not_seen_recently_is_not_ready() -> None:
    m = ready()  # lag interval 5 s: stale after max(30, 15) = 30 s
    m.clock.advance(30.0)
    assert m.monitor.readiness().ok
    m.clock.advance(0.1)
    check = m.monitor.readiness()
    assert (check.ok, check.reason) == (False, "the broker has not answered recently")


def test_a_long_lag_interval_gives_the_broker_longer() -> None:
    m = make(lag_interval=20.0)  # stale after 3 * 20 = 60 s
    m.owned(P0)
    m.monitor.broker_seen = m.clock()
    m.clock.advance(59.0)
    assert m.monitor.readiness().ok
    m.clock.advance(2.0)
    assert not m.monitor.readiness().ok


# ---- lag ---------------------------------------------------------------------------------


async def test_lag_is_the_end_offset_minus_the_committed_offset() -> None:
    m = make()
    p0, p1 = m.owned(P0, P1)
    p0.offsets.mark_committed(40)
    p1.offsets.mark_committed(12)
    m.monitor.update_lag([p0, p1], {P0: 50, P1: 12}, {})
    assert m.monitor.lag == {P0: 10, P1: 0}
    assert m.gauge("stream_consumer_lag", P0) == 10
    assert m.gauge("stream_consumer_lag", P1) == 0
    assert m.gauge("stream_consumer_lag_seconds", P1) == 0


async def test_lag_seconds_is_the_age_of_the_oldest_uncommitted_record() -> None:
    m = make()
    (part,) = m.owned(P0)
    part.offsets.mark_committed(0)
    wall = m.wall.now
    part.offsets.track(0, 4, 5, timestamp=wall - 30.0)  # read, not finished
    m.monitor.update_lag([part], {P0: 5}, {})
    assert m.gauge("stream_consumer_lag", P0) == 5
    assert m.gauge("stream_consumer_lag_seconds", P0) == pytest.approx(30.0)


async def test_lag_without_a_committed_offset_counts_from_the_first_read_or_the_position() -> None:
    m = make()
    p0, p1 = m.owned(P0, P1)
    p0.offsets.track(20, 29)  # nothing committed yet: counted from the first offset read
    m.monitor.update_lag([p0, p1], {P0: 35, P1: 9}, {P1: 4})
    assert m.monitor.lag == {P0: 15, P1: 5}
    m.monitor.lag.clear()
    m.monitor.update_lag([p1], {P1: 9}, {})  # no base known at all: no lag, no gauge
    assert m.monitor.lag == {}


async def test_a_partition_no_longer_owned_is_dropped_from_lag() -> None:
    m = make()
    p0, p1 = m.owned(P0, P1)
    p0.offsets.mark_committed(1)
    p1.offsets.mark_committed(2)
    m.monitor.update_lag([p0, p1], {P0: 5, P1: 5}, {})
    assert m.monitor.lag == {P0: 4, P1: 3}
    m.assignment.drop(p1)  # revoked while the end offsets were read
    m.metrics.consumer_lag.remove("in", "1")  # what its lifecycle does on release
    m.monitor.update_lag([p0, p1], {P0: 6, P1: 9}, {})
    assert m.monitor.lag == {P0: 5}
    assert m.gauge("stream_consumer_lag", P1) is None  # a closed partition is not set again


async def test_the_lag_loop_reads_end_offsets_and_notes_the_broker_answered() -> None:
    m = make(lag_interval=60.0)  # only a change of assignment wakes it in this test
    broker = FakeBroker()
    broker.feed(0, [b"{}"] * 8)
    consumer = FailingConsumer(broker)
    (part,) = m.owned(P0)
    part.offsets.mark_committed(3)
    loop = asyncio.create_task(m.monitor.lag_loop(consumer))
    try:
        m.membership.changed.set()
        await until(lambda: m.monitor.broker_seen is not None)
        assert m.monitor.broker_seen == m.clock.now
        assert m.monitor.lag == {P0: 5}
        seen = m.clock.now

        consumer.failing = True
        m.clock.advance(1.0)
        m.membership.changed.set()
        await until(lambda: not m.membership.changed.is_set())  # it woke and read
        await asyncio.sleep(0.005)
        assert m.monitor.broker_seen == seen  # a failed read is no answer
        assert not loop.done()  # and does not end the loop

        consumer.failing = False
        broker.feed(0, [b"{}"] * 2)
        m.membership.changed.set()
        await until(lambda: m.monitor.broker_seen == m.clock.now)
        assert m.monitor.lag == {P0: 7}
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop
