"""`stream bench`'s windows group without a broker: the quix-streams peer's aggregation
against numpy, the input's event times and closing events, the committed offsets that
end both cases, and the report's ratios against quix-streams and the stateless
exactly-once case."""

from __future__ import annotations

import itertools
import math
import sys
from collections import namedtuple
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

from stream.bench.cases import PAIRS, WINDOWS
from stream.bench.quix_windows import (
    READY,
    announce_once,
    event_time_ms,
    merge,
    summarize,
    window_output,
)
from stream.bench.report import table
from stream.bench.topics import (
    closing_events,
    committed_records,
    event_start,
    spread_event_times,
)
from stream.bench.windows import window_lines, windows
from stream.kafka.send import Partitioner
from tests.unit.bench_reports import report, result


def test_the_peers_reduce_gives_numpys_count_sum_mean_population_std_min_max() -> None:
    rng = np.random.default_rng(3)
    records = [rng.normal(0.5, 2.0, size=64).tolist() for _ in range(7)]
    state = summarize(records[0])
    for readings in records[1:]:
        state = merge(state, readings)
    out = window_output({"start": 60_000, "end": 120_000, "value": state})
    every = np.array(records).ravel()
    assert (out["window_start"], out["window_end"]) == (60_000, 120_000)
    assert out["count"] == 7 * 64
    assert (out["min"], out["max"]) == (every.min(), every.max())
    for field, expected in (("sum", every.sum()), ("mean", every.mean()), ("std", every.std())):
        assert out[field] == pytest.approx(expected, rel=1e-9)
    assert set(out) == {"window_start", "window_end", "count", "sum", "mean", "std", "min", "max"}
    orjson.dumps(state)  # quix keeps it in RocksDB as JSON


def test_the_std_of_readings_far_from_zero_does_not_cancel() -> None:
    # A sum of squares (1e12 each) would lose the variance (0.01) to rounding.
    readings = [[1e6 + 0.1] * 64, [1e6 + 0.3] * 64, [1e6 + 0.2] * 64]
    state = merge(merge(summarize(readings[0]), readings[1]), readings[2])
    out = window_output({"start": 0, "end": 1, "value": state})
    assert out["std"] == pytest.approx(np.array(readings).std(), rel=1e-6)
    assert summarize(readings[0])["m2"] < 1e-12


def test_event_time_is_the_ts_field_in_milliseconds() -> None:
    extract = event_time_ms("ts")
    assert extract({"ts": 1_700_000_000.25}, [], 5, 0) == 1_700_000_000_250


def test_the_ready_line_comes_once(capsys: pytest.CaptureFixture[str]) -> None:
    announce = announce_once()
    announce("in", 0, 0)
    announce("in", 1, 0)
    assert capsys.readouterr().err == READY + "\n"


def test_the_peer_imports_quixstreams_only_when_it_runs() -> None:
    assert "quixstreams" not in sys.modules


def test_the_windows_input_spans_whole_minutes_in_the_past_in_offset_order() -> None:
    now = 1_800_000_030.5
    start = event_start(now, 300.0)
    assert start % 60 == 0
    assert start + 300 + 60 <= now
    encode = spread_event_times(start, 300.0, 200_000)
    times = [orjson.loads(encode({"sensor_id": "s", "ts": now}))["ts"] for _ in range(200_000)]
    assert times[0] == start
    assert times == sorted(times)
    assert times[-1] == start + 299.998  # the last window stays open: its end is not reached
    assert len({math.floor(t / 60) for t in times}) == 5  # five windows; four close by the end
    # Whole milliseconds: truncating (quix) and rounding (ours) agree on every window.
    millis = [t * 1000 for t in times]
    assert [int(m) // 60_000 for m in millis] == [round(m) // 60_000 for m in millis]
    assert times[40_000] == start + 60  # 1.5 ms apart: cut to 1 or 2 ms, exact at the edge
    assert {round((b - a) * 1000) for a, b in itertools.pairwise(times)} == {1, 2}


def test_the_closing_events_land_one_in_each_partition_past_the_last_window() -> None:
    closers = closing_events(1_800_000_360.0, 65, 4)
    partitioner = Partitioner()
    assert sorted(partitioner(e.key or b"", 4) for e in closers) == [0, 1, 2, 3]
    for event in closers:
        body = orjson.loads(event.value)
        assert body["ts"] == 1_800_000_360.0
        assert body["sensor_id"].encode() == event.key
        assert body["values"] == [0.0] * 65


def test_committed_records_sum_the_inputs_offsets_and_ignore_uncommitted_ones() -> None:
    tp = namedtuple("tp", "topic partition")  # as aiokafka's TopicPartition

    offsets = {
        tp("in", 0): SimpleNamespace(offset=1200),
        tp("in", 1): SimpleNamespace(offset=-1),  # never committed
        tp("in", 2): SimpleNamespace(offset=800),
        tp("other", 0): SimpleNamespace(offset=5000),
    }
    assert committed_records(offsets, "in") == 2000
    assert committed_records({}, "in") == 0


def windows_run(**changes: dict[str, Any]) -> dict[str, Any]:
    """A report of the stateless pair and both windows cases; ``changes`` by case name."""
    stateless = result(PAIRS[0].exactly_once, 60_000.0)
    stateless["ready_records_per_s"] = 50_000.0
    ours = result(WINDOWS.ours, 45_000.0, reference=PAIRS[0].exactly_once)
    peer = result(WINDOWS.peer, 12_000.0, reference=PAIRS[0].exactly_once)
    for row in (ours, peer):
        row.update(timed_from="input end", latency_ms={}, outputs=49_990)
        row["ready_records_per_s"] = row["records_per_s"]
    rows = [result(PAIRS[0].at_least_once, 70_000.0), stateless, ours, peer]
    for row in rows:
        row.update(changes.get(row["name"], {}))
    return report(*rows)


def test_ours_is_set_against_quix_and_the_stateless_case_on_one_clock() -> None:
    row = windows(windows_run())
    assert row["records_per_s"] == {"ours": 45_000.0, "peer": 12_000.0, "stateless": 50_000.0}
    assert row["stateless_clock"] == "ready"
    assert row["to_peer"] == pytest.approx(3.75)
    assert row["to_peer_met"] is True
    assert row["to_stateless"] == pytest.approx(0.9)
    assert row["to_stateless_met"] is True
    assert row["outputs"] == {"ours": 49_990, "peer": 49_990}
    lines = window_lines(windows_run())
    assert lines[2] == f"  {WINDOWS.ours}: 45,000 records/s, 49,990 windows out"
    assert lines[4] == f"  {PAIRS[0].exactly_once}: 50,000 records/s (same clock)"
    assert lines[5] == "  ours against quix-streams (target >= 3x): 3.75x (met)"
    assert lines[6] == "  ours against the stateless case (target >= 0.8x): 0.90x (met)"
    assert "\n".join(lines) in table(windows_run())


def test_missed_failed_and_older_files_say_so() -> None:
    slow = windows_run(**{WINDOWS.ours: {"records_per_s": 30_000.0}})
    slow["results"][2]["ready_records_per_s"] = 30_000.0
    row = windows(slow)
    assert (row["to_peer_met"], row["to_stateless_met"]) == (False, False)
    failed = windows(windows_run(**{WINDOWS.peer: {"error": "quix did not start"}}))
    assert failed["to_peer"] is None
    assert failed["to_peer_met"] is None
    assert "ours against quix-streams (target >= 3x): - (not run)" in "\n".join(
        window_lines(windows_run(**{WINDOWS.peer: {"error": "x"}}))
    )
    # A results file without the ready-line figure: the stateless case's own rate.
    older = windows_run(**{PAIRS[0].exactly_once: {"ready_records_per_s": None}})
    assert windows(older)["records_per_s"]["stateless"] == 60_000.0
    assert windows(older)["stateless_clock"] == "first output"
    assert "(first to last output)" in window_lines(older)[4]


def test_no_windows_case_no_windows_lines() -> None:
    plain = report(result("sensor-features", 70_000.0))
    assert windows(plain) == {}
    assert window_lines(plain) == []
