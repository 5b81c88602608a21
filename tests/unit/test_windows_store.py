"""One partition's window store against a reference model written here in plain Python,
record by record (it shares no code with ``stream.windows``), and the property that any
batching of the same records gives the same state, the same late records and the same
closed windows in the same order.

Readings are multiples of 1/8 well below 2**40, so sums are exact in float64 in any
order: count, sum, min and max must be equal; mean and std within 1e-9 relative."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.windows.output import window_value
from stream.windows.spec import WindowSpec
from stream.windows.store import WindowResult, WindowStore

Key = bytes | None
Record = tuple[Key, int, Any]  # key, event time (ms), a number or a list of numbers
Row = tuple[Key, int, int, int, float, float, float, float, float]


# --- the reference model ----------------------------------------------------------------------


@dataclass
class Reference:
    """Kafka Streams' rule, one record at a time, windows as lists of readings."""

    size: int
    advance: int
    grace: int
    stream_time: int | None = None

    def __post_init__(self) -> None:
        self.open: dict[tuple[Key, int], list[float]] = {}
        self.closed: list[tuple[Key, int, list[float]]] = []
        self.late: list[bool] = []

    def add(self, key: Key, t: int, value: Any) -> None:
        self.stream_time = t if self.stream_time is None else max(self.stream_time, t)
        readings = [float(v) for v in value] if isinstance(value, list) else [float(value)]
        start = t - t % self.advance
        starts = []
        while start > t - self.size:
            starts.append(start)
            start -= self.advance
        kept = [s for s in starts if s + self.size + self.grace > self.stream_time]
        self.late.append(not kept)
        for s in kept:
            if readings:
                self.open.setdefault((key, s), []).extend(readings)

    def close(self) -> None:
        assert self.stream_time is not None
        due = [w for w in self.open if w[1] + self.size + self.grace <= self.stream_time]
        for key, s in sorted(due, key=lambda w: (w[1], w[0] is not None, w[0] or b"")):
            self.closed.append((key, s, self.open.pop((key, s))))

    def rows(self, windows: list[tuple[Key, int, list[float]]]) -> list[Row]:
        out = []
        for key, s, xs in windows:
            total = 0.0
            for x in xs:
                total += x
            mu = total / len(xs)
            sd = math.sqrt(sum((x - mu) ** 2 for x in xs) / len(xs))
            out.append((key, s, s + self.size, len(xs), total, mu, sd, min(xs), max(xs)))
        return out

    def open_rows(self) -> list[Row]:
        order = sorted(self.open, key=lambda w: (w[1], w[0] is not None, w[0] or b""))
        return self.rows([(k, s, self.open[(k, s)]) for k, s in order])


def rows(results: list[WindowResult]) -> list[Row]:
    return [(r.key, r.start, r.end, r.count, r.sum, r.mean, r.std, r.min, r.max) for r in results]


def assert_rows(got: list[Row], want: list[Row]) -> None:
    assert [g[:5] + g[7:] for g in got] == [w[:5] + w[7:] for w in want]
    for g, w in zip(got, want, strict=True):
        assert math.isclose(g[5], w[5], rel_tol=1e-9, abs_tol=1e-12), (g, w)
        assert math.isclose(g[6], w[6], rel_tol=1e-9, abs_tol=1e-9), (g, w)


def run(
    spec: WindowSpec, records: list[Record], cuts: list[int]
) -> tuple[WindowStore, list[bool], list[WindowResult]]:
    """Feed ``records`` cut at ``cuts``, closing after each batch."""
    store, late, closed = WindowStore(spec), [], []
    bounds = [0, *sorted(set(cuts)), len(records)]
    for a, b in itertools.pairwise(bounds):
        batch = records[a:b]
        late += store.add(
            [r[0] for r in batch], [r[1] for r in batch], [r[2] for r in batch]
        ).tolist()
        closed += store.close()
    return store, late, closed


def reference(spec: WindowSpec, records: list[Record]) -> Reference:
    model = Reference(spec.size_ms, spec.advance_ms, spec.grace_ms)
    for key, t, value in records:
        model.add(key, t, value)
    if records:
        model.close()
    return model


# --- the property test ------------------------------------------------------------------------

reading = st.integers(-(2**30), 2**30).map(lambda n: n / 8)
value = reading | st.lists(reading, max_size=4)
specs = st.sampled_from(
    [
        WindowSpec.parse("tumbling:10s"),
        WindowSpec.parse("tumbling:10s", "3s"),
        WindowSpec.parse("hopping:10s/5s", "2s"),
        WindowSpec.parse("hopping:1s/300ms", "100ms"),
    ]
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[WindowSpec, list[Record], list[int]]:
    spec = draw(specs)
    n = draw(st.integers(0, 60))
    t = draw(st.integers(-50_000, 1_800_000_000_000))
    records: list[Record] = []
    for _ in range(n):
        t += draw(st.integers(-15_000, 8_000))  # mostly forward, some out of order (late)
        key = draw(st.sampled_from([b"a", b"b", b"", b"\x00z", None]))
        records.append((key, t, draw(value)))
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    return spec, records, cuts


@settings(max_examples=150, deadline=None)
@given(streams())
def test_any_batching_gives_the_reference_state_late_records_and_closed_windows(
    case: tuple[WindowSpec, list[Record], list[int]],
) -> None:
    spec, records, cuts = case
    model = reference(spec, records)
    store, late, closed = run(spec, records, cuts)
    assert late == model.late
    assert_rows(rows(closed), model.rows(model.closed))
    assert_rows(rows(store.windows()), model.open_rows())
    assert store.stream_time == model.stream_time
    whole, whole_late, whole_closed = run(spec, records, [])
    assert whole_late == late
    assert_rows(rows(whole_closed), rows(closed))
    assert_rows(rows(whole.windows()), rows(store.windows()))


@settings(max_examples=60, deadline=None)
@given(streams())
def test_the_changelog_rebuilds_the_state(case: tuple[WindowSpec, list[Record], list[int]]) -> None:
    spec, records, cuts = case
    store, restored = WindowStore(spec), WindowStore(spec)
    log = []
    for a, b in itertools.pairwise([0, *sorted(set(cuts)), len(records)]):
        batch = records[a:b]
        store.add([r[0] for r in batch], [r[1] for r in batch], [r[2] for r in batch])
        store.close()
        log += store.take_changes()
    restored.apply(log)
    assert rows(restored.windows()) == rows(store.windows())
    assert restored.stream_time == store.stream_time
    again = WindowStore(spec)
    again.apply(store.snapshot())
    assert rows(again.windows()) == rows(store.windows())
    assert again.take_changes() == store.take_changes()  # restored windows are not changes


# --- closing, grace, lateness, hopping ----------------------------------------------------------


def test_a_window_closes_when_stream_time_reaches_end_plus_grace() -> None:
    store = WindowStore(WindowSpec.parse("tumbling:10s", "2s"))
    store.add([b"k"], [1_000], [1.0])
    store.add([b"k"], [11_999], [2.0])  # end 10s + grace 2s not reached
    assert store.close() == []
    assert store.add([b"k"], [9_000], [3.0]).tolist() == [False]  # in grace: still counts
    store.add([b"x"], [12_000], [0.0])
    (closed,) = store.close()
    assert (closed.key, closed.start, closed.end, closed.count, closed.sum) == (
        b"k",
        0,
        10_000,
        2,
        4.0,
    )
    assert len(store) == 2


def test_a_record_whose_windows_are_all_closed_is_late_and_changes_nothing() -> None:
    store = WindowStore(WindowSpec.parse("tumbling:10s", "1s"))
    late = store.add([b"a", b"a", b"a", b"b"], [5_000, 21_000, 9_999, 20_500], [1, 2, 3, 4])
    assert late.tolist() == [False, False, True, False]  # 9.999s: [0, 10s) closed at 11s
    assert [(r.key, r.start, r.count) for r in store.windows()] == [
        (b"a", 0, 1),
        (b"a", 20_000, 1),
        (b"b", 20_000, 1),
    ]
    store.close()
    assert store.add([b"a"], [10_000], [5.0]).tolist() == [True]  # [10s, 20s) closes at 21s
    assert store.add([b"c"], [20_000], [5.0]).tolist() == [False]


def test_idle_close_moves_stream_time_forward_only() -> None:
    store = WindowStore(WindowSpec.parse("tumbling:1m"))
    store.add([b"a"], [30_000], [1.0])
    assert store.close(59_999) == []
    assert [r.start for r in store.close(60_000)] == [0]
    assert store.close(1_000) == []
    assert store.stream_time == 60_000
    assert store.add([b"a"], [59_000], [1.0]).tolist() == [True]
    at_zero = WindowStore(WindowSpec.parse("tumbling:1m"))
    at_zero.add([b"a"], [0], [1.0])
    at_zero.close(-5)
    assert at_zero.stream_time == 0  # zero is a stream time too


def test_a_hopping_record_counts_in_every_window_it_falls_in() -> None:
    store = WindowStore(WindowSpec.parse("hopping:10s/5s"))
    assert store.add([b"a", b"a"], [7_000, 12_000], [[1, 3], 5]).tolist() == [False, False]
    got = [(r.start, r.count, r.sum, r.min, r.max) for r in store.windows()]
    assert got == [(0, 2, 4.0, 1.0, 3.0), (5_000, 3, 9.0, 1.0, 5.0), (10_000, 1, 5.0, 5.0, 5.0)]
    assert store.add([b"a"], [9_000], [1]).tolist() == [False]  # [0,10s) closed, [5s,15s) open
    assert [(r.start, r.count) for r in store.windows()] == [(0, 2), (5_000, 4), (10_000, 1)]
    assert [r.start for r in store.close()] == [0]


def test_bad_values_change_nothing() -> None:
    store = WindowStore(WindowSpec.parse("tumbling:10s"))
    not_numbers: list[Any] = [1.0, "x"]
    with pytest.raises(ValueError, match="record 1"):
        store.add([b"a", b"b"], [1_000, 2_000], not_numbers)
    with pytest.raises(ValueError, match="out of range"):
        store.add([b"a"], [2**62], [1.0])
    with pytest.raises(ValueError, match="2 keys, 1 times"):
        store.add([b"a", b"b"], [1], [1.0, 2.0])
    assert (len(store), store.stream_time) == (0, None)
    assert store.add([], [], []).tolist() == []
    assert store.close() == []


def test_many_keys_widen_the_codes_and_old_keys_are_forgotten() -> None:
    store = WindowStore(WindowSpec.parse("tumbling:1s"))
    n = 70_000  # more than the first 65,536 key ids
    keys = [b"%d" % i for i in range(n)]
    store.add(keys, np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.float64))
    assert len(store) == n
    store.add([b"69999", b"5"], [500, 500], [1.0, 2.0])
    got = {r.key: (r.count, r.sum) for r in store.windows()}
    assert got[b"69999"] == (2, 70_000.0)
    assert got[b"5"] == (2, 7.0)
    assert got[b"0"] == (1, 0.0)
    store.add([b"late-comer"], [1_000], [1.0])
    assert len(store.close()) == n
    assert store.key_count < 2_000  # the 70,000 keys without windows are gone
    store.add([b"5"], [1_500], [4.0])
    assert [(r.key, r.count, r.sum) for r in store.windows()] == [
        (b"5", 1, 4.0),
        (b"late-comer", 1, 1.0),
    ]


def test_codes_that_would_overflow_are_refused_before_any_window_changes() -> None:
    store = WindowStore(WindowSpec.parse("tumbling:1ms"))
    now = 1_780_000_000_000  # window index 1.78e12: room for 2**20 key ids, not 2**24
    store.add([b"%d" % i for i in range(70_000)], np.full(70_000, now), np.ones(70_000))
    assert len(store) == 70_000  # widened once, to 20 bits
    with pytest.raises(ValueError, match="out of range for tumbling:1ms"):
        store.add([b"k%d" % i for i in range(2**20)], np.full(2**20, now), np.ones(2**20))
    assert (len(store), store.key_count, store.stream_time) == (70_000, 70_000, now)
    store.add([b"k"], [now + 5], [2.0])  # the store goes on
    assert len(store) == 70_001


def test_a_closed_window_is_a_json_value_with_the_aggregates_asked_for() -> None:
    store = WindowStore(WindowSpec.parse("tumbling:1m"))
    store.add([b"s1"] * 4, [60_000, 61_000, 62_000, 63_000], [2, 4, 4, [4, 5, 5, 7, 9]])
    (result,) = store.close(120_000)
    value = window_value(result, ("count", "sum", "mean", "std", "min", "max"))
    assert orjson.loads(value) == {
        "window_start": 60_000,
        "window_end": 120_000,
        "count": 8,
        "sum": 40.0,
        "mean": 5.0,
        "std": 2.0,
        "min": 2.0,
        "max": 9.0,
    }
    assert list(orjson.loads(window_value(result, ("max", "count")))) == [
        "window_start",
        "window_end",
        "max",
        "count",
    ]
    with pytest.raises(ValueError, match="unknown median"):
        window_value(result, ("median",))
