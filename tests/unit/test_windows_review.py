"""Review of the windows (issue 22): exactly-once state, restore, the two-table store,
the worker side and the event loop, on the in-memory fakes and on the store directly.

Each test pins what must hold; the expected windows come from a plain reference written
here (tumbling windows, Kafka Streams' closing rule), sharing no code with the service."""

from __future__ import annotations

import asyncio
import math
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest

from stream import worker
from stream.engine.routing import HEADER_REASON
from stream.kafka.protocols import TopicPartition
from stream.pool import WorkerPool, _combine
from stream.windows.aggregates import Records, empty_records
from stream.windows.changelog import POSITION_KEY, position_change
from stream.windows.custom import Aggregate, Column, Extras
from stream.windows.extract import WindowInput
from stream.windows.spec import WindowSpec
from stream.windows.store import WindowResult, WindowStore
from stream.worker import BatchResult
from tests.engine_run import P0, Run, running, until
from tests.fakes import FakeBroker

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
