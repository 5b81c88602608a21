"""Windows in the engine, on the in-memory fakes: closed windows out in the partition's
transaction, state restored from the changelog by a new opening, dropped with an
aborted transaction, late records, quiet input, the offset check, readiness while
restoring, and aggregates of one's own. The expected windows come from a plain
reference written here, sharing no code with the service."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from typing import Any

import orjson
import pytest

from stream.engine.routing import HEADER_REASON
from stream.errors import FatalError
from stream.kafka.protocols import TopicPartition
from stream.windows.changelog import POSITION_KEY, position_change
from tests.engine_run import P0, P1, Run, running, until
from tests.fakes import FakeBroker

CHANGELOG = "g-in-windows-changelog"
EOS: dict[str, Any] = {
    "guarantee": "exactly-once",
    "transaction_interval": 0.02,
    "window": "tumbling:10s",
    "event_time": "ts",
}


def event(ts: float, *readings: float) -> bytes:
    return orjson.dumps({"ts": ts, "values": list(readings)})


def reference(
    events: list[tuple[bytes, float, list[float]]], size_s: float, grace_s: float = 0.0
) -> tuple[dict[tuple[bytes, int], list[float]], list[int]]:
    """Closed tumbling windows of (key, ts seconds, readings) read in this order (one
    partition): {(key, start ms): readings}, and the indexes of late events."""
    open_: dict[tuple[bytes, int], list[float]] = defaultdict(list)
    closed: dict[tuple[bytes, int], list[float]] = {}
    stream_time = -math.inf
    late = []
    for i, (key, ts, readings) in enumerate(events):
        stream_time = max(stream_time, ts)
        start = math.floor(ts / size_s) * size_s
        if start + size_s + grace_s <= stream_time:
            late.append(i)
        else:
            open_[(key, round(start * 1000))].extend(readings)
        for window in [w for w in open_ if w[1] / 1000 + size_s + grace_s <= stream_time]:
            closed[window] = open_.pop(window)
    return closed, late


def outputs(broker: FakeBroker) -> dict[tuple[bytes, int], dict[str, Any]]:
    seen: dict[tuple[bytes, int], dict[str, Any]] = {}
    for record in broker.records("out"):
        assert record.key is not None
        assert record.value is not None
        value = orjson.loads(record.value)
        window = (record.key, value["window_start"])
        assert window not in seen, f"window {window} output twice"
        seen[window] = value
    return seen


def check(found: dict[tuple[bytes, int], dict[str, Any]], want: dict[Any, list[float]]) -> None:
    assert set(found) == set(want)
    for window, readings in want.items():
        got = found[window]
        assert got["count"] == len(readings)
        assert got["min"] == min(readings)
        assert got["max"] == max(readings)
        mean = sum(readings) / len(readings)
        assert got["mean"] == pytest.approx(mean, rel=1e-9)
        std = math.sqrt(sum((r - mean) ** 2 for r in readings) / len(readings))
        assert got["std"] == pytest.approx(std, rel=1e-9, abs=1e-12)
        assert got["window_end"] - got["window_start"] == 10_000


def feed(broker: FakeBroker, events: list[tuple[bytes, float, list[float]]], p: int = 0) -> None:
    for key, ts, readings in events:
        broker.append("in", p, key, event(ts, *readings))


def spread(n: int, start: int = 0) -> list[tuple[bytes, float, list[float]]]:
    """``n`` events of two keys, one a second, three readings each."""
    return [
        (b"ab"[i % 2 : i % 2 + 1], float(i), [i * 1.5, -i, (i * 7) % 5])
        for i in range(start, start + n)
    ]


def committed(run: Run, tp: TopicPartition = P0) -> int | None:
    return run.committed(tp)


async def test_closed_windows_go_out_in_the_transaction_with_the_state_and_offsets() -> None:
    broker = FakeBroker()
    events = spread(45)
    feed(broker, events)
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 45)
    want, late = reference(events, 10)
    assert late == []
    check(outputs(broker), want)  # windows 0..30 s closed; 40 s still open
    log = broker.records(CHANGELOG)
    assert log
    assert all(r.partition == 0 for r in log)
    positions = [r.value for r in log if r.key == POSITION_KEY]
    assert positions[-1] == position_change(45)[1]


async def test_a_new_owner_restores_the_state_and_counts_every_record_once() -> None:
    broker = FakeBroker()
    events = spread(60)
    feed(broker, events[:25])
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 25)
    feed(broker, events[25:])
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 60)
        assert run.clients.restores == [0]
    want, _ = reference(events, 10)
    check(outputs(broker), want)


async def test_an_aborted_transaction_drops_its_state_changes() -> None:
    broker = FakeBroker()
    events = spread(60)
    feed(broker, events[:20])
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 20)
        run.clients.producers[-1].fail_commit = 1  # the next transaction aborts
        feed(broker, events[20:])
        await until(lambda: committed(run) == 60)
        assert broker.aborted >= 1
        assert run.clients.restores.count(0) >= 2  # the rewind read the changelog again
    want, _ = reference(events, 10)
    check(outputs(broker), want)


async def test_a_late_record_is_a_dead_letter_with_reason_late() -> None:
    broker = FakeBroker()
    events = [*spread(25), (b"a", 3.0, [1.0]), *spread(10, start=25)]
    feed(broker, events)
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == len(events))
        late_metric = run.engine.metrics.registry.get_sample_value(
            "stream_window_late_records_total"
        )
    want, late = reference(events, 10)
    assert late == [25]
    check(outputs(broker), want)
    (letter,) = broker.records("in.dlq")
    assert dict(letter.headers)[HEADER_REASON] == b"late"
    assert letter.value == event(3.0, 1.0)
    assert late_metric == 1


async def test_quiet_input_closes_windows_with_idle_close() -> None:
    broker = FakeBroker()
    feed(broker, spread(5))
    async with running(
        broker, assign={P0}, idle_close="100ms", **EOS | {"window": "tumbling:1s"}
    ) as run:
        await until(lambda: committed(run) == 5)
        # Stream time 4 s: windows 0..3 closed; the one at 4 s closes on the wall clock.
        await until(
            lambda: any(
                orjson.loads(r.value or b"{}")["window_start"] == 4000
                for r in broker.records("out")
            )
        )
    assert len(outputs(broker)) == 5


async def test_a_changelog_ahead_of_the_group_stops_the_start_in_one_line() -> None:
    broker = FakeBroker()
    feed(broker, spread(12))
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 12)
    broker.committed[("g", P0)] = 5  # the group was reset behind the state
    async with running(broker, assign={P0}, **EOS) as run:
        with pytest.raises(FatalError, match=r"holds state up to offset 12, but the group is at 5"):
            await asyncio.wait_for(run.task, 5)


async def test_readiness_says_restoring_until_the_changelog_is_read() -> None:
    broker = FakeBroker()
    feed(broker, spread(12))
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 12)
    broker.feed(1, [])
    async with running(broker, assign=set(), **EOS) as run:
        run.clients.restore_gate.clear()
        assign = asyncio.create_task(run.consumer.rebalance(set(), {P0}))
        monitor = run.engine.monitor
        assert monitor is not None
        await until(lambda: "restoring" in monitor.readiness().reason)
        assert not monitor.readiness().ok
        run.clients.restore_gate.set()
        await assign
        await until(lambda: monitor.readiness().ok)


async def test_a_revoke_during_the_restore_cancels_it_and_the_next_owner_restores() -> None:
    broker = FakeBroker()
    feed(broker, spread(12))
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 12)
    async with running(broker, assign=set(), **EOS) as run:
        run.clients.restore_gate.clear()
        assign = asyncio.create_task(run.consumer.rebalance(set(), {P0}))
        await until(lambda: run.clients.restores == [0])
        await run.consumer.rebalance({P0}, {P1})
        run.clients.restore_gate.set()
        await asyncio.wait_for(assign, 5)
        assert P0 not in run.engine.assignment.parts
    feed(broker, spread(20, start=12))
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 32)
    want, _ = reference(spread(32), 10)
    check(outputs(broker), want)


async def test_an_aggregate_of_one_s_own_runs_in_the_workers_and_merges_by_its_ufunc() -> None:
    broker = FakeBroker()
    events = spread(25)
    feed(broker, events)
    aggregates = "count,tests.windows_aggregates:rms,tests.windows_aggregates:product"
    async with running(broker, assign={P0}, aggregate=aggregates, **EOS) as run:
        await until(lambda: committed(run) == 25)
    want, _ = reference(events, 10)
    found = outputs(broker)
    assert set(found) == set(want)
    for window, readings in want.items():
        got = found[window]
        assert list(got) == [
            "window_start",
            "window_end",
            "count",
            "tests.windows_aggregates:rms",
            "tests.windows_aggregates:product",
        ]
        rms = math.sqrt(sum(r * r for r in readings) / len(readings))
        assert got["tests.windows_aggregates:rms"] == pytest.approx(rms, rel=1e-9)
        assert got["tests.windows_aggregates:product"] == pytest.approx(math.prod(readings))


async def test_a_changelog_of_other_windows_stops_the_start_and_grace_may_change() -> None:
    broker = FakeBroker()
    feed(broker, spread(12))
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 12)
    shorter = EOS | {"window": "tumbling:5s"}  # 10 s windows would be read as 5 s ones
    async with running(broker, assign={P0}, **shorter) as run:
        with pytest.raises(FatalError, match=r"holds windows of 'tumbling:10000ms/10000ms;'"):
            await asyncio.wait_for(run.task, 5)
    feed(broker, spread(8, start=12))
    async with running(broker, assign={P0}, grace="1s", **EOS) as run:
        await until(lambda: committed(run) == 20)
    want, _ = reference(spread(20), 10, grace_s=1)
    check(outputs(broker), want)


async def test_written_counts_the_windows_output_not_the_records() -> None:
    broker = FakeBroker()
    feed(broker, spread(25))
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 25)
        counts = run.engine.progress.counts
        assert (counts.read, counts.written) == (25, len(outputs(broker)))


async def test_more_windows_than_the_cap_stop_the_service_in_one_line() -> None:
    broker = FakeBroker()
    for i in range(30):
        broker.append("in", 0, f"key-{i}".encode(), event(1.0, 1.0))
    async with running(broker, assign={P0}, max_windows=20, **EOS) as run:
        with pytest.raises(FatalError, match=r"windows are open, more than --max-windows 20"):
            await asyncio.wait_for(run.task, 5)
    assert (run.committed(P0) or 0) < 30  # the batch past the cap was not committed


def test_a_time_counts_in_the_millisecond_it_falls_in() -> None:
    from stream.windows.extract import WindowInput, window_batch

    values = [orjson.dumps({"ts": ts, "values": 1}) for ts in (59.9996, 1.001, 1767225600.001)]
    errors, records = window_batch(None, values, [0, 0, 0], 1 << 20, WindowInput("values", "ts"))
    assert errors == []
    assert records.time.tolist() == [59_999, 1_001, 1_767_225_600_001]
