"""The engine on in-memory fakes of Kafka and of the pool: rebalances, drains, refusals,
fencing, rewinds and shutdown, each driven on cue. No broker, no worker processes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from stream.engine import Engine
from stream.engine.batch import Batch
from stream.engine.routing import HEADER_REASON
from stream.errors import FatalError, KafkaFailure, NotAuthorized
from stream.kafka.protocols import OutRecord, TopicPartition
from stream.offsets import Ticket
from tests.engine_run import P0, P1, running, settings, until, values
from tests.fakes import FakeBroker, FakeClients, FakePool, Record


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
async def test_outputs_keep_input_order_and_offsets_reach_the_end(guarantee: str) -> None:
    broker = FakeBroker()
    broker.feed(0, values(35))
    broker.feed(1, values(12, start=100))
    async with running(broker, guarantee=guarantee) as run:
        await until(lambda: run.committed(P0) == 35 and run.committed(P1) == 12)
        assert run.outputs() == list(range(35)) + list(range(100, 112))


async def test_a_partition_assigned_while_work_is_in_flight() -> None:
    broker = FakeBroker()
    broker.feed(0, values(25))
    async with running(broker, assign={P0}) as run:
        run.pool.gate.clear()
        await until(lambda: run.pool.started > 0)
        await run.consumer.rebalance(set(), {P1})
        broker.feed(1, values(5, start=100))
        run.pool.gate.set()
        await until(lambda: run.committed(P0) == 25 and run.committed(P1) == 5)
        assert sorted(run.outputs()) == list(range(25)) + list(range(100, 105))


async def test_revoke_with_a_drain_that_times_out_abandons_without_committing() -> None:
    broker = FakeBroker()
    async with running(broker, assign={P0}, drain_timeout=0.2) as run:
        run.pool.gate.clear()
        broker.feed(0, values(20))
        await until(lambda: run.pool.started > 0)
        started = time.monotonic()
        await run.consumer.rebalance({P0}, set())
        assert time.monotonic() - started < 1.5
        assert run.committed(P0) is None  # nothing finished, nothing committed
        assert run.engine.assignment.inflight.records == 0
        assert run.engine.assignment.get(P0) is None
        run.pool.gate.set()
        await asyncio.sleep(0.1)
        assert run.outputs() == []  # abandoned: the next owner reads them again


async def test_revoke_drains_finished_work_and_commits_it() -> None:
    broker = FakeBroker()
    broker.feed(0, values(20))
    async with running(broker, assign={P0}) as run:
        await until(lambda: run.committed(P0) == 20)
        broker.feed(0, values(5, start=20))
        await until(lambda: len(run.outputs()) == 25)
        await run.consumer.rebalance({P0}, set())
        assert run.committed(P0) == 25


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
async def test_a_record_the_broker_refuses_is_a_dead_letter_and_the_rest_flow(
    guarantee: str,
) -> None:
    def refuse(topic: str, record: OutRecord) -> str | None:
        big = topic == "out" and orjson.loads(record[1] or b"").get("n") == 10
        return "MessageSizeTooLargeError" if big else None

    broker = FakeBroker(refuse=refuse)
    broker.feed(0, values(21))
    async with running(broker, assign={P0}, guarantee=guarantee) as run:
        await until(lambda: run.committed(P0) == 21)
        assert run.outputs() == [n for n in range(21) if n != 10]
        (letter,) = broker.records("in.dlq")
        headers = dict(letter.headers)
        assert headers[HEADER_REASON] == b"output_refused"
        assert b"MessageSizeTooLargeError" in headers["stream.error.message"]
        assert orjson.loads(letter.value or b"") == {"n": 10}
        if guarantee == "exactly-once":
            assert broker.aborted >= 1  # the transaction with the refused send never committed


async def test_a_dead_letter_the_broker_refuses_becomes_a_minimal_one() -> None:
    def refuse(topic: str, record: OutRecord) -> str | None:
        if topic == "out" and orjson.loads(record[1] or b"").get("n") == 3:
            return "MessageSizeTooLargeError"
        if topic == "in.dlq" and record[1]:
            return "MessageSizeTooLargeError"
        return None

    broker = FakeBroker(refuse=refuse)
    broker.feed(0, values(6))
    async with running(broker, assign={P0}, guarantee="exactly-once") as run:
        await until(lambda: run.committed(P0) == 6)
        (letter,) = broker.records("in.dlq")
        headers = dict(letter.headers)
        assert letter.value == b""
        assert headers[HEADER_REASON] == b"output_refused"
        assert headers["stream.source.offset"] == b"3"
        assert int(headers["stream.error.original-size"]) > 0


async def test_a_fenced_producer_is_dropped_not_aborted_and_work_goes_on() -> None:
    broker = FakeBroker()
    broker.feed(0, values(10))
    async with running(broker, assign={P0}, guarantee="exactly-once") as run:
        await until(lambda: run.committed(P0) == 10)
        first = run.clients.producers[-1]
        broker.fence("g-in-0")  # another owner started the same transactional id
        broker.feed(0, values(10, start=10))
        await until(lambda: run.committed(P0) == 20)
        assert first.aborts == 0  # a fenced producer cannot abort: it is dropped
        assert first.stopped
        assert len(run.clients.producers) == 2
        assert run.outputs() == list(range(20))  # each exactly once


async def test_a_failed_commit_rewinds_to_the_committed_offset() -> None:
    broker = FakeBroker()
    broker.feed(0, values(10))
    async with running(broker, assign={P0}, guarantee="exactly-once") as run:
        await until(lambda: run.committed(P0) == 10)
        run.clients.producers[-1].fail_commit = 1
        broker.feed(0, values(10, start=10))
        await until(lambda: run.committed(P0) == 20)
        assert run.outputs() == list(range(20))  # the failed transaction left nothing


async def test_a_new_owner_fences_before_it_reads_the_committed_offset() -> None:
    broker = FakeBroker()
    async with running(broker, assign={P0, P1}, guarantee="exactly-once") as run:
        await until(lambda: len(run.clients.producers) == 2)
        events = broker.events
        for tp, tid in ((P0, "g-in-0"), (P1, "g-in-1")):
            read = f"committed {tp.topic}[{tp.partition}]"
            assert events.index(f"init {tid}") < events.index(read)


async def test_a_rewind_re_reads_the_committed_offset_from_the_broker() -> None:
    broker = FakeBroker()
    broker.feed(0, values(5))
    async with running(broker, assign={P0}, guarantee="exactly-once") as run:
        await until(lambda: run.committed(P0) == 5)
        reads = broker.events.count("committed in[0]")
        run.clients.producers[-1].fail_commit = 1
        broker.feed(0, values(5, start=5))
        await until(lambda: run.committed(P0) == 10)
        assert broker.events.count("committed in[0]") > reads


async def test_a_rewind_racing_a_revoke_leaves_nothing_behind() -> None:
    broker = FakeBroker()
    broker.feed(0, values(5))
    async with running(broker, assign={P0}, guarantee="exactly-once") as run:
        await until(lambda: run.committed(P0) == 5)
        run.clients.producers[-1].fail_commit = 1
        run.clients.refuse_ids = 1000  # the rewind cannot get a new producer yet
        broker.feed(0, values(5, start=5))
        await until(lambda: run.engine.assignment.get(P0) is None)  # rewinding
        await run.consumer.rebalance({P0}, set())
        run.clients.refuse_ids = 0
        await asyncio.sleep(0.5)  # past the rewind's backoff
        assert run.engine.assignment.get(P0) is None  # the revoke won
        assert all(p.stopped for p in run.clients.producers)
        assert run.committed(P0) == 5
        assert not run.task.done()


async def test_a_partition_that_cannot_progress_stops_the_engine() -> None:
    broker = FakeBroker()
    broker.feed(0, values(5))
    async with running(broker, assign={P0}, guarantee="exactly-once", delivery_timeout=0.5) as run:
        run.clients.refuse_ids = 1000
        run.clients.producers[-1].fail_commit = 1000
        with pytest.raises(FatalError, match="no progress"):
            await asyncio.wait_for(run.task, 10)


async def test_a_failure_in_the_assignment_callback_stops_the_engine() -> None:
    broker = FakeBroker()
    clients = FakeClients(broker)

    async def refused(_tid: str) -> Any:
        raise NotAuthorized("not authorised to use the transactional id")

    clients.transactional_producer = refused  # type: ignore[method-assign,assignment]
    engine = Engine(settings(guarantee="exactly-once"), clients=clients, pool=FakePool())
    task = asyncio.create_task(engine.run())
    await clients.consumer_made.subscribed.wait()
    await clients.consumer_made.rebalance(set(), {P0})
    with pytest.raises(NotAuthorized):
        await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
async def test_shutdown_with_queued_work_drains_and_commits_it(guarantee: str) -> None:
    broker = FakeBroker()
    async with running(broker, assign={P0}, guarantee=guarantee) as run:
        run.pool.gate.clear()
        broker.feed(0, values(30))
        await until(lambda: run.engine.assignment.inflight.records == 30)
        run.engine.stop()
        await asyncio.sleep(0.05)
        run.pool.gate.set()
        await asyncio.wait_for(run.task, 5)
        assert run.committed(P0) == 30
        assert run.outputs() == list(range(30))
        assert run.pool.closed


async def test_shutdown_past_the_drain_timeout_commits_nothing_unfinished() -> None:
    broker = FakeBroker()
    async with running(broker, assign={P0}, drain_timeout=0.2) as run:
        broker.feed(0, values(10))
        await until(lambda: run.committed(P0) == 10)
        run.pool.gate.clear()
        broker.feed(0, values(10, start=10))
        await until(lambda: run.engine.assignment.inflight.records == 10)
        run.engine.stop()
        await asyncio.wait_for(run.task, 5)
        assert run.committed(P0) == 10


async def test_records_fetched_for_a_partition_not_accepting_are_sought_back() -> None:
    broker = FakeBroker()
    broker.feed(0, values(5))
    async with running(broker, assign=set()) as run:
        consumer = run.consumer
        consumer.assigned.add(P0)  # fetched before the assignment callback ran
        consumer.positions[P0] = 0
        await asyncio.sleep(0.05)
        assert run.pool.started == 0  # not taken: sought back each time
        assert consumer.positions[P0] in (0, 5)
        consumer.assigned.discard(P0)
        await consumer.rebalance(set(), {P0})
        await until(lambda: run.committed(P0) == 5)
        assert run.outputs() == list(range(5))


async def test_null_keys_keep_their_input_partition() -> None:
    broker = FakeBroker()
    broker.feed(1, values(4), key=None)
    async with running(broker, assign={P1}) as run:
        await until(lambda: run.committed(P1) == 4)
        assert {r.partition for r in broker.records("out")} == {1}
        assert all(r.key is None for r in broker.records("out"))


def test_fake_record_has_what_the_engine_reads() -> None:
    record = Record("in", 0, 1, b"k", b"v", 5)
    assert (record.offset, record.key, record.value, record.timestamp) == (1, b"k", b"v", 5)


async def test_a_stuck_partition_does_not_starve_the_others() -> None:
    broker = FakeBroker()
    broker.feed(0, [b'{"n": 0, "stuck": 1}'] * 200)
    broker.feed(1, values(500))
    async with running(
        broker, assign={P0, P1}, max_inflight_records=100, batch_max_records=10
    ) as run:
        await until(lambda: run.committed(P1) == 500, wait=5)
        part = run.engine.assignment.get(P0)
        assert part is not None
        assert part.paused
        assert part.records <= 2 * 100 // 3  # its share of the caps, no more
        assert run.committed(P0) is None
        run.pool.stuck.set()
        await until(lambda: run.committed(P0) == 200, wait=5)


async def test_stuck_work_never_stops_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full for long: every partition is paused and the consumer keeps polling, so it
    never leaves its group (max.poll.interval.ms) because work is stuck."""
    monkeypatch.setattr("stream.engine.fetcher.POLL_GUARD", 0.1)
    broker = FakeBroker()
    broker.feed(0, [b'{"n": 0, "stuck": 1}'] * 300)
    async with running(broker, assign={P0}, max_inflight_records=100) as run:
        await until(lambda: run.engine.assignment.inflight.full)
        await asyncio.sleep(1.5)
        polls = run.consumer.polls
        await asyncio.sleep(0.5)
        assert run.consumer.polls > polls
        assert P0 in run.consumer.paused
        run.pool.stuck.set()
        await until(lambda: run.committed(P0) == 300, wait=5)
        assert P0 not in run.consumer.paused


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
async def test_a_new_owner_commits_past_a_trailing_transaction_marker(guarantee: str) -> None:
    """The previous owner committed 5; offset 5 is a transaction marker, so the fetch
    position moves to 6 with nothing to process: the new owner commits 6 (lag 0)."""
    broker = FakeBroker()
    broker.feed(0, values(5))
    broker.committed[("g", P0)] = 5
    async with running(broker, assign={P0}, guarantee=guarantee) as run:
        await until(lambda: run.engine.assignment.get(P0) is not None)
        run.consumer.positions[P0] = 6  # the consumer skipped the marker
        await until(lambda: run.committed(P0) == 6)
        assert run.outputs() == []


async def test_an_output_over_the_topic_limit_is_a_dead_letter_without_a_send() -> None:
    """The output topic's limit is known at start: an output over it never reaches the
    broker (whose refusal would break the producer's sequence)."""
    sent: list[int] = []

    def watch(topic: str, record: OutRecord) -> str | None:
        if topic == "out":
            sent.append(len(record[1] or b""))
        return None

    broker = FakeBroker(limits={"out": 1000}, refuse=watch)
    broker.feed(0, [*values(2), orjson.dumps({"n": 2, "pad": "x" * 2000}), *values(2, start=3)])
    async with running(broker, assign={P0}) as run:
        await until(lambda: run.committed(P0) == 5)
        assert run.outputs() == [0, 1, 3, 4]
        assert max(sent) < 1000
        (letter,) = broker.records("in.dlq")
        assert dict(letter.headers)[HEADER_REASON] == b"output_refused"


async def test_a_key_counts_against_the_record_size_limit() -> None:
    broker = FakeBroker()
    broker.append("in", 0, b"k" * 900, orjson.dumps({"n": 0}))
    broker.append("in", 0, b"k", orjson.dumps({"n": 1}))
    async with running(broker, assign={P0}, max_record_bytes=512) as run:
        await until(lambda: run.committed(P0) == 2)
        assert run.outputs() == [1]
        (letter,) = broker.records("in.dlq")
        assert dict(letter.headers)[HEADER_REASON] == b"too_large"


async def test_a_failing_lag_lookup_does_not_stop_the_service() -> None:
    broker = FakeBroker()
    broker.feed(0, values(3))
    async with running(broker, assign={P0}) as run:

        async def refused(_tps: object) -> dict[TopicPartition, int]:
            raise KafkaFailure("NotLeaderForPartition: a rebalance is under way")

        run.consumer.end_offsets = refused
        await asyncio.sleep(0.3)  # several lag intervals
        broker.feed(0, values(3, start=3))
        await until(lambda: run.committed(P0) == 6)
        assert not run.task.done()


async def test_a_transform_s_own_reasons_are_bounded_as_metric_labels() -> None:
    from prometheus_client import generate_latest

    broker = FakeBroker()
    broker.feed(0, values(3))
    async with running(broker, assign={P0}) as run:
        await until(lambda: run.committed(P0) == 3)
        part = run.engine.assignment.get(P0)
        assert part is not None
        batch = Batch(
            Ticket(0, 1, 1, 0.0),
            [b"k"],
            [b"{}"],
            [0],
            [0],
            2,
            asyncio.get_running_loop().create_future(),
        )
        for i in range(50):
            batch.errors = [(0, f"made_up_reason_{i}", "x")]
            run.engine.progress.finished(part, batch)
        exposition = generate_latest(run.engine.metrics.registry).decode()
        assert "made_up_reason" not in exposition
        assert 'reason="other"' in exposition


def test_the_partitioner_cache_is_bounded_by_key_bytes() -> None:
    from stream.kafka.send import Partitioner

    partitioner = Partitioner(max_bytes=10_000)
    for i in range(2_000):
        partitioner(f"{i:0100d}".encode(), 4)  # 2,000 keys of 100 bytes: 200 kB
        assert partitioner.nbytes <= 10_000
    # the same key always lands on the same partition, cached or not
    key = b"sensor-0001"
    assert partitioner(key, 8) == partitioner(key, 8) == Partitioner()(key, 8)


async def test_a_persistent_refusal_leaves_one_live_producer_and_each_record_a_dead_letter() -> (
    None
):
    """Every output refused (an ACL removed from the output topic): each round of
    refusals replaces the shared producer, and each replaced one is stopped once its
    sends are settled, not kept running until shutdown (issue 20, item 7)."""

    def refuse(topic: str, _record: OutRecord) -> str | None:
        return "TopicAuthorizationFailedError" if topic == "out" else None

    broker = FakeBroker(refuse=refuse)
    broker.feed(0, values(40))
    async with running(broker, assign={P0}) as run:
        await until(lambda: run.committed(P0) == 40)
        assert len(broker.records("in.dlq")) == 40
        assert run.outputs() == []
        made = run.clients.plain
        assert len(made) > 2  # several rounds of refusals, each on a new producer
        await until(lambda: sum(not p.stopped for p in made) == 1)


async def test_an_old_failure_does_not_make_a_later_one_fatal() -> None:
    """A partition whose idle commit failed once (it rewound, then committed its position
    and idled past --delivery-timeout, no batch finishing) rewinds again on its next
    transient failure instead of stopping the service: the clock starts at the first
    failure of the current episode (issue 20, item 8)."""
    broker = FakeBroker()
    broker.feed(0, values(5))
    async with running(broker, assign={P0}, guarantee="exactly-once", delivery_timeout=0.3) as run:
        await until(lambda: run.committed(P0) == 5)
        broker.append("in", 0, None, None)  # offset 5 stands for a transaction marker
        run.clients.producers[-1].fail_commit = 1
        run.consumer.positions[P0] = 6  # the consumer skips it: an idle commit of 6
        await until(lambda: len(run.clients.producers) >= 2)  # it failed: a rewind
        await until(lambda: run.engine.assignment.get(P0) is not None)
        run.consumer.positions[P0] = 6  # the rewind sought back to 5: skip the marker again
        await until(lambda: run.committed(P0) == 6)
        await asyncio.sleep(0.5)  # idle for longer than the delivery timeout
        run.clients.producers[-1].fail_commit = 1
        broker.append("in", 0, b"k", values(1)[0])  # offset 6
        await until(lambda: run.committed(P0) == 7)
        assert not run.task.done()
        assert run.outputs() == [0, 1, 2, 3, 4, 0]


async def test_record_after_record_dead_lettered_for_one_reason_is_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stream the service cannot read at all (here: not JSON) says so once in its log,
    with a hint, instead of dead-lettering everything silently (issue 21)."""
    broker = FakeBroker()
    broker.feed(0, [b"not json %d" % i for i in range(30)])
    async with running(broker, assign={P0}) as run:
        await until(lambda: run.committed(P0) == 30)
        assert len(broker.records("in.dlq")) == 30
    warnings = [r.getMessage() for r in caplog.records if "were dead-lettered" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "stream read in.dlq" in warnings[0]
