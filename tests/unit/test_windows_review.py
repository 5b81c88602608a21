"""Review of the windows (issue 22): exactly-once state, restore, the two-table store,
the worker side and the event loop, on the in-memory fakes and on the store directly.

Each test pins what must hold; the expected windows come from a plain reference written
here (tumbling windows, Kafka Streams' closing rule), sharing no code with the service."""

from __future__ import annotations

import asyncio
import gc
import inspect
import math
import os
import random
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream import worker
from stream.engine.assignment import Partition
from stream.engine.batch import Batch
from stream.engine.routing import HEADER_REASON
from stream.engine.windowing import Owned, WindowConfig, Windowing
from stream.errors import FatalError
from stream.kafka.protocols import TopicPartition
from stream.metrics import WindowMetrics
from stream.offsets import PartitionOffsets, Ticket
from stream.pool import WorkerPool, _combine
from stream.windows.aggregates import Records, empty_records
from stream.windows.changelog import POSITION_KEY, position_change
from stream.windows.custom import Aggregate, Column, Extras
from stream.windows.extract import WindowInput
from stream.windows.spec import WindowSpec
from stream.windows.store import WindowResult, WindowStore
from stream.worker import BatchResult
from tests.engine_run import P0, P1, Run, running, until
from tests.fakes import FakeBroker, FakeClients

CHANGELOG = "g-in-windows-changelog"
EOS: dict[str, Any] = {
    "guarantee": "exactly-once",
    "transaction_interval": 0.02,
    "window": "tumbling:10s",
    "event_time": "ts",
}
Event = tuple[bytes | None, float, list[float]]


def event(ts: float, *readings: float) -> bytes:
    return orjson.dumps({"ts": ts, "values": list(readings)})


def feed(broker: FakeBroker, events: list[Event], p: int = 0) -> None:
    for key, ts, readings in events:
        broker.append("in", p, key, event(ts, *readings))


def spread(n: int, start: int = 0) -> list[Event]:
    """``n`` events of two keys, one a second, two readings each."""
    return [
        (b"ab"[i % 2 : i % 2 + 1], float(i), [i * 0.5, (i * 3) % 7])
        for i in range(start, start + n)
    ]


def reference(
    events: list[Event], size_s: float = 10.0
) -> dict[tuple[bytes | None, int], list[float]]:
    """Closed tumbling windows (no grace) of events read in this order:
    {(key, start ms): readings}."""
    open_: dict[tuple[bytes | None, int], list[float]] = defaultdict(list)
    closed: dict[tuple[bytes | None, int], list[float]] = {}
    stream_time = -math.inf
    for key, ts, readings in events:
        stream_time = max(stream_time, ts)
        start = math.floor(ts / size_s) * size_s
        if start + size_s > stream_time:
            open_[(key, round(start * 1000))].extend(readings)
        for window in [w for w in open_ if w[1] / 1000 + size_s <= stream_time]:
            closed[window] = open_.pop(window)
    return closed


def outputs(broker: FakeBroker) -> dict[tuple[bytes | None, int], dict[str, Any]]:
    seen: dict[tuple[bytes | None, int], dict[str, Any]] = {}
    for record in broker.records("out"):
        assert record.value is not None
        value = orjson.loads(record.value)
        window = (record.key, value["window_start"])
        assert window not in seen, f"window {window} output twice"
        seen[window] = value
    return seen


def check(
    found: dict[tuple[bytes | None, int], dict[str, Any]], want: dict[Any, list[float]]
) -> None:
    assert set(found) == set(want)
    for window, readings in want.items():
        got = found[window]
        assert got["count"] == len(readings)
        assert got["sum"] == pytest.approx(sum(readings), rel=1e-9)
        assert got["min"] == min(readings)
        assert got["max"] == max(readings)


def last_position(broker: FakeBroker) -> bytes | None:
    positions = [r.value for r in broker.records(CHANGELOG) if r.key == POSITION_KEY]
    return positions[-1] if positions else None


def committed(run: Run, tp: TopicPartition = P0) -> int | None:
    return run.committed(tp)


# --- exactly-once through the engine ------------------------------------------------------------


async def test_a_refused_dead_letter_resends_the_transaction_with_each_window_once() -> None:
    """The refusal loop sends a transaction's batches again on a new producer: the
    windows' outputs and changelog records go again with them, once, and the changelog's
    position is the offset committed."""
    broker = FakeBroker()
    events = [*spread(25), (b"a", 2.0, [9.0]), *spread(10, start=25)]  # one late record
    feed(broker, events)
    refused = {"n": 0}

    def refuse(topic: str, _record: Any) -> str | None:
        if topic == "in.dlq" and refused["n"] == 0:
            refused["n"] += 1
            return "MessageSizeTooLarge"
        return None

    broker.refuse = refuse
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == len(events))
    assert refused["n"] == 1
    expected = reference([e for i, e in enumerate(events) if i != 25])
    check(outputs(broker), expected)
    assert last_position(broker) == position_change(len(events))[1]
    (letter,) = broker.records("in.dlq")
    assert dict(letter.headers)[HEADER_REASON] == b"late"


async def test_the_idle_close_writes_the_position_it_commits() -> None:
    """A batch of no records closing windows on quiet input: its changelog position is
    the offset committed with it, and every window goes out once."""
    broker = FakeBroker()
    events = spread(5)
    feed(broker, events)
    windows = EOS | {"window": "tumbling:1s"}
    async with running(broker, assign={P0}, idle_close="50ms", **windows) as run:
        await until(lambda: committed(run) == 5)
        await until(lambda: len(broker.records("out")) == 5)
        await until(lambda: last_position(broker) is not None)
        await asyncio.sleep(0.2)
    assert len(outputs(broker)) == 5
    assert last_position(broker) == position_change(5)[1]
    assert broker.committed[("g", P0)] == 5


async def test_null_keys_with_require_key_are_dead_letters_and_count_in_no_window() -> None:
    broker = FakeBroker()
    events: list[Event] = [(b"a" if i % 3 else None, float(i), [float(i)]) for i in range(25)]
    feed(broker, events)
    async with running(broker, assign={P0}, require_key=True, **EOS) as run:
        await until(lambda: committed(run) == 25)
    check(outputs(broker), reference([e for e in events if e[0] is not None]))
    letters = broker.records("in.dlq")
    assert len(letters) == len([e for e in events if e[0] is None])
    assert {dict(r.headers)[HEADER_REASON] for r in letters} == {b"null_key"}


async def test_a_revoke_during_the_restore_leaves_the_service_running() -> None:
    """Issue 22: the restore "runs per partition (a revoke cancels it)". A revoke while
    a partition restores must cancel that restore and leave the rest running; it must not
    stop the service (today the opening goes on after the revoke, seeks the partition it
    no longer has, and the error stops the engine)."""
    broker = FakeBroker()
    feed(broker, spread(12))
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 12)
    feed(broker, spread(6), p=1)
    async with running(broker, assign=set(), **EOS) as run:
        run.clients.restore_gate.clear()
        assign = asyncio.create_task(run.consumer.rebalance(set(), {P0}))
        await until(lambda: run.clients.restores == [0])
        await run.consumer.rebalance({P0}, {P1})
        run.clients.restore_gate.set()
        await asyncio.gather(assign, return_exceptions=True)
        await asyncio.sleep(0.1)
        assert not run.task.done(), "the service stopped after a revoke during a restore"
        await until(lambda: committed(run, P1) == 6)


async def test_a_revoke_cancels_the_restore_of_a_rewinding_partition() -> None:
    """A rewind restores in the partition's own task; a revoke meanwhile should cancel
    that restore at once (issue 22: "a revoke cancels it"). Today the restore goes on
    (nothing looks at ``closing`` while the changelog is read) until the revoke gives
    up on it: the drain timeout and two close steps later (here 2 + 6 s), while the
    whole group's rebalance waits."""
    broker = FakeBroker()
    feed(broker, spread(12))
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 12)
        run.clients.restore_gate.clear()
        run.clients.producers[-1].fail_commit = 1  # the next transaction fails: a rewind
        feed(broker, spread(5, start=12))
        await until(lambda: run.clients.restores.count(0) >= 2)  # restoring again, held
        started = time.monotonic()
        await asyncio.wait_for(run.consumer.rebalance({P0}, set()), 15)
        took = time.monotonic() - started
        run.clients.restore_gate.set()
    assert took < 1.0, f"the revoke waited {took:.1f}s for the restore"


async def test_a_group_ahead_of_the_changelog_is_one_clear_line() -> None:
    """Issue 22: "A changelog whose last committed offset disagrees with the consumer
    group's is one clear line, not silent drift". A group moved past the state (reset
    forward) must stop the start too: today the records between are never counted and
    the windows they belong to go out short, silently."""
    broker = FakeBroker()
    feed(broker, spread(12))
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == 12)
    feed(broker, spread(8, start=12))
    broker.committed[("g", P0)] = 16  # the group was reset past records 12..15
    async with running(broker, assign={P0}, **EOS) as run:
        with pytest.raises(FatalError, match=r"holds state up to offset 12"):
            await asyncio.wait_for(run.task, 2)


async def test_a_key_too_large_for_its_window_output_is_a_dead_letter_not_a_stop() -> None:
    """A record never stops the service: the stateless router dead-letters a record whose
    key and output do not fit the output topic; a windowed run takes any key into its
    state, and when that window closes the broker refuses its output and the service
    stops with a FatalError, and again after every restart (the transaction aborted, the
    record is read again). Its key should make it a dead letter, the rest go on."""
    limit = 400
    broker = FakeBroker(limits={"out": limit})

    def refuse(topic: str, record: Any) -> str | None:
        size = len(record[0] or b"") + len(record[1] or b"")
        if topic in ("out", CHANGELOG) and size > limit:
            return "MessageSizeTooLargeError"
        return None

    broker.refuse = refuse
    big = b"k" * 350  # fits the input and the changelog (359 + 40 bytes), not its output
    events: list[Event] = [*spread(12), (big, 12.5, [1.0]), *spread(15, start=13)]
    feed(broker, events)
    async with running(broker, assign={P0}, **EOS) as run:
        await until(lambda: committed(run) == len(events) or run.task.done())
        assert not run.task.done(), f"the service stopped: {run.task.exception()!r}"
    check(outputs(broker), reference([e for e in events if e[0] != big]))
    assert len(broker.records("in.dlq")) == 1


# --- the store -------------------------------------------------------------------------------


_ABSMAX = Aggregate({"p": Column(np.maximum, np.abs)}, lambda c: c["p"], "review:absmax")
_SUMSQ = Aggregate({"q": Column(np.add, np.square)}, lambda c: c["q"] / c["count"], "review:ms")


def _rows(windows: list[WindowResult]) -> list[tuple[Any, ...]]:
    return [
        (w.key, w.start, w.count, w.min, w.max, round(w.sum, 6), tuple(sorted(w.extra.items())))
        for w in windows
    ]


@pytest.mark.parametrize(
    ("spec", "keys"),
    [
        (WindowSpec("tumbling", 100, 100, 20), 300),
        (WindowSpec("hopping", 300, 100, 50), 90_000),  # widens the codes past 16 bits
    ],
)
def test_the_changelog_follows_the_store_across_flushes_recodes_and_forgetting(
    spec: WindowSpec, keys: int
) -> None:
    """Every take_changes() applied to a replica gives the store's windows: dirty marks
    survive the small table's merge, closed windows leave tombstones, renumbered keys
    encode right, custom columns go through merge, flush and the changelog."""
    rng = random.Random(7)
    extras = Extras([_ABSMAX, _SUMSQ])
    store, replica = WindowStore(spec, extras), WindowStore(spec, extras)
    closed: set[tuple[bytes | None, int]] = set()
    t = 0
    for _ in range(40):
        n = rng.randint(1, 4000)
        batch_keys: list[bytes | None] = []
        times: list[int] = []
        values: list[list[float]] = []
        for _ in range(n):
            t += rng.randint(0, 2)
            batch_keys.append(None if rng.random() < 0.01 else f"k{rng.randrange(keys)}".encode())
            times.append(t - rng.randint(0, 300))
            values.append([rng.uniform(-5, 5) for _ in range(rng.randint(0, 3))])
        store.add(batch_keys, times, values)
        for window in store.close():
            assert (window.key, window.start) not in closed
            closed.add((window.key, window.start))
        if rng.random() < 0.6:
            replica.apply(store.take_changes())
            assert _rows(replica.windows()) == _rows(store.windows())
            assert replica.stream_time == store.stream_time


def test_late_records_of_new_keys_do_not_grow_the_store_without_bound() -> None:
    """A record with no open window (late, or without readings) holds no window: its key
    must not stay interned forever. Today every late record's key is kept while no window
    closes (forgetting runs only when one does), so after one record from the far future
    a stream of ever-new keys grows the store's memory without bound."""
    store = WindowStore(WindowSpec("tumbling", 60_000, 60_000, 0))
    store.add([b"future"], [10**12], [1.0])
    for b in range(20):
        keys: list[bytes | None] = [f"k{b}-{i}".encode() for i in range(5000)]
        assert store.add(keys, [1_000] * 5000, [1.0] * 5000).all()  # all late
    assert len(store) == 1
    assert store.key_count <= 2 * len(store) + 1024  # the store's own bound on kept keys


# --- the event loop -------------------------------------------------------------------------------


def _windowing(spec: WindowSpec) -> Windowing:
    config = WindowConfig(spec, ("count", "sum", "mean", "std", "min", "max"), CHANGELOG)
    return Windowing(config, FakeClients(FakeBroker()), WindowMetrics(CollectorRegistry()))


def _batch(keys: list[bytes | None], times: list[int], first: int) -> Batch:
    n = len(keys)
    stamps = np.asarray(times, dtype=np.int64)
    ones = np.ones(n)
    records = Records(
        stamps, np.ones(n, dtype=np.int64), ones, np.zeros(n), ones, ones, np.zeros((n, 0))
    )
    result: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
    result.set_result(BatchResult([], [], 0.0, 0, window=records))
    ticket = Ticket(first, first + n, n, 0.0)
    return Batch(ticket, keys, [b"{}"] * n, list(range(first, first + n)), [0] * n, 0, result)


async def _step(windowing: Windowing, part: Partition, batches: list[Batch]) -> None:
    """``Windowing.step``, sync or async."""
    done = cast("Callable[..., object]", windowing.step)(part, batches)
    if inspect.isawaitable(done):
        await done


async def test_one_batch_closing_many_windows_does_not_hold_the_event_loop_for_long() -> None:
    """All windows of one period close together (tumbling windows are aligned): with
    200,000 keys one batch closes 200,000 windows. The state step runs on the event loop
    (heartbeats, fetches, every other partition); making every output and tombstone in
    one synchronous step holds it for ~1.6-2.8 s here, ~8 s or more at the issue's million
    windows, near aiokafka's 10 s session timeout. The loop should never wait half a
    second."""
    windowing = _windowing(WindowSpec("tumbling", 60_000, 60_000, 0))
    tp = TopicPartition("in", 0)
    part = Partition(tp, PartitionOffsets(committed=0))
    store = WindowStore(windowing.config.spec)
    windowing.owned[tp] = Owned(store, None, 0.0)
    n = 200_000
    await _step(
        windowing, part, [_batch([f"sensor-{i}".encode() for i in range(n)], [1_000] * n, 0)]
    )
    assert len(store) == n
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def ticker() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.005)
            now = loop.time()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    await _step(windowing, part, [_batch([b"tick"], [200_000], n)])  # every window closes
    await asyncio.sleep(0.02)
    ticking.cancel()
    await asyncio.gather(ticking, return_exceptions=True)
    assert len(store) == 1
    assert max(gaps) < 0.5, f"one step held the event loop for {max(gaps):.2f}s"


async def test_the_outputs_of_closed_windows_hold_about_their_own_size() -> None:
    """The outputs of a step are held until its transaction commits. orjson 3.13's
    ``dumps`` keeps a 4 KiB allocation behind every result (``tracemalloc`` sees 4,097
    bytes for a ~100-byte value), so 1,000,000 windows closing together hold ~4 GB of
    outputs (RSS grew by 4.2 GB here), far past the issue's 300 MB for a million windows;
    --emit update holds as much per changed window. A window's output and tombstone
    should cost a few hundred bytes."""
    windowing = _windowing(WindowSpec("tumbling", 60_000, 60_000, 0))
    tp = TopicPartition("in", 0)
    part = Partition(tp, PartitionOffsets(committed=0))
    store = WindowStore(windowing.config.spec)
    windowing.owned[tp] = Owned(store, None, 0.0)
    n = 20_000
    await _step(
        windowing, part, [_batch([f"sensor-{i}".encode() for i in range(n)], [1_000] * n, 0)]
    )
    closing = _batch([b"tick"], [200_000], n)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await _step(windowing, part, [closing])  # every window closes
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    out = closing.window_out
    assert out is not None
    assert len(out.outputs) == n
    assert held / n < 1_000, f"{held / n:.0f} bytes held per window closed"


# --- the pool's isolation path ------------------------------------------------------------------


def die_on_flag(records: Sequence[Any]) -> list[Any]:
    """Kill the worker process outright on a record with ``"die": true``."""
    for record in records:
        if isinstance(record, dict) and record.get("die") is True:
            os._exit(1)
    return list(records)


async def test_a_worker_killed_mid_batch_keeps_each_record_s_kafka_time_and_custom_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The isolation path on real worker processes (probe, the culprit alone, the rest
    as a batch): every other record comes back with its own Kafka timestamp and its
    custom columns in its own place; the culprit is an error with a place holder."""
    for name in worker.BLAS_THREAD_VARS:
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    where = WindowInput("values", "kafka", ("tests.windows_aggregates:rms",))
    pool = WorkerPool(f"{__name__}:die_on_flag", 1, 1 << 20, windowing=where)
    values: list[bytes | None] = [
        orjson.dumps({"values": [float(i), 2.0], "die": i == 3}) for i in range(6)
    ]
    stamps = [1_000 * (i + 1) for i in range(6)]
    try:
        await pool.start()
        result = await asyncio.wait_for(pool.run(values, timestamps=stamps), 60)
    finally:
        await pool.close()
    assert [(i, reason) for i, reason, _ in result.errors] == [(3, "worker_crash")]
    window = result.window
    assert window is not None
    assert window.time.tolist() == [*stamps[:3], 0, *stamps[4:]]
    assert window.count.tolist() == [2, 2, 2, 0, 2, 2]
    assert window.extra.shape == (6, 1)
    sumsq = [float(i * i + 4) if i != 3 else 0.0 for i in range(6)]
    assert window.extra[:, 0].tolist() == sumsq


def test_combine_keeps_window_records_and_errors_in_place() -> None:
    """A batch isolated record by record: the parts' per-record partials and errors come
    back at the records' own places, a failed record's place holder widened to the custom
    columns."""

    def part(times: list[int], width: int) -> BatchResult:
        n = len(times)
        records = Records(
            np.asarray(times, dtype=np.int64),
            np.ones(n, dtype=np.int64),
            np.asarray(times, dtype=np.float64),
            np.zeros(n),
            np.zeros(n),
            np.zeros(n),
            np.full((n, width), 2.0),
        )
        return BatchResult([], [], 0.0, 1, window=records)

    lost = BatchResult([None], [(0, "worker_crashed", "died")], 0.0, 0, window=empty_records(1))
    rest = part([30, 40], 2)
    rest = BatchResult([], [(1, "invalid_value", "bad")], 0.0, 1, window=rest.window)
    combined = _combine([(part([10], 2), 1), (lost, 1), (rest, 2)], [b"1", b"2", b"3", b"4"])
    assert combined.outputs == []
    assert combined.errors == [(1, "worker_crashed", "died"), (3, "invalid_value", "bad")]
    window = combined.window
    assert window is not None
    assert window.time.tolist() == [10, 0, 30, 40]
    assert window.count.tolist() == [1, 0, 1, 1]
    assert window.extra.shape == (4, 2)
    assert window.extra[:, 0].tolist() == [2.0, 0.0, 2.0, 2.0]
