"""`stream try --window`: a file through the service's windows, in process. Expected
windows are worked out by hand from the records (no code shared with the service)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from stream.cli import main
from stream.config import TrySettings
from stream.options import ConfigError, load
from stream.trial import Line
from stream.trial_windows import WindowTrial, WindowTry, run_window_file, run_windows, window_lines
from stream.windows.custom import Column, aggregate
from stream.windows.extract import WindowInput
from stream.windows.spec import WindowSpec
from transforms import Transform
from transforms.testing import as_transform

# Two sensors, one record every 5 s of event time from ts 1000 s, readings [i, i + 1].
EVENTS = [
    {"sensor_id": f"s{i % 2}", "seq": i, "ts": 1000.0 + 5 * i, "values": [float(i), i + 1.0]}
    for i in range(30)
]


def config(
    window: str = "tumbling:60s",
    grace: str = "0s",
    aggregates: str = "count,sum,min,max",
    **kw: Any,
) -> WindowTry:
    where = WindowInput(kw.pop("value_field", "values"), kw.pop("event_time", "ts"))
    return WindowTry(WindowSpec.parse(window, grace), tuple(aggregates.split(",")), where, **kw)


def lines_of(events: list[Any]) -> list[Line]:
    return [
        Line(i + 1, e if isinstance(e, bytes) else orjson.dumps(e)) for i, e in enumerate(events)
    ]


def run_on(
    events: list[Any], cfg: WindowTry, transform: Transform | None = None, batch: int = 7
) -> WindowTrial:
    return run_windows(
        transform,
        lines_of(events),
        cfg,
        max_record_bytes=1 << 20,
        max_array_length=100,
        batch_max_records=batch,
    )


def window(key: str | None, start_s: int, size_s: int, readings: list[float]) -> dict[str, Any]:
    return {
        "key": key,
        "window_start": start_s * 1000,
        "window_end": (start_s + size_s) * 1000,
        "count": len(readings),
        "sum": sum(readings),
        "min": min(readings),
        "max": max(readings),
    }


def readings(records: range) -> list[float]:
    """The readings of records ``i`` in ``records``: i and i + 1 each."""
    return [float(v) for i in records for v in (i, i + 1)]


def printed(trial: WindowTrial) -> list[tuple[str, dict[str, Any]]]:
    """The window lines as (where and what, the JSON)."""
    out = []
    for line in window_lines(trial):
        head, brace, rest = line.partition("{")
        if brace and " window " in head:
            out.append((head.strip(), orjson.loads(brace + rest)))
    return out


@pytest.mark.parametrize("batch", [1, 4, 7, 100])
def test_tumbling_windows_close_at_the_record_that_passes_their_end(batch: int) -> None:
    """ts = 1000 + 5i: [960, 1020) s holds i 0..3 and closes at ts 1020 (i 4, line 5);
    [1020, 1080) closes at line 17, [1080, 1140) at line 29; [1140, 1200) holds i 28
    and 29 and stays open. Whatever the batching, the same lines."""
    trial = run_on(EVENTS, config(), batch=batch)
    assert printed(trial) == [
        ("line 5: window closed", window("s0", 960, 60, [0, 1, 2, 3])),  # i 0, 2
        ("line 5: window closed", window("s1", 960, 60, [1, 2, 3, 4])),  # i 1, 3
        ("line 17: window closed", window("s0", 1020, 60, readings(range(4, 16, 2)))),
        ("line 17: window closed", window("s1", 1020, 60, readings(range(5, 16, 2)))),
        ("line 29: window closed", window("s0", 1080, 60, readings(range(16, 28, 2)))),
        ("line 29: window closed", window("s1", 1080, 60, readings(range(17, 28, 2)))),
        ("end of file: window open", window("s0", 1140, 60, [28, 29])),
        ("end of file: window open", window("s1", 1140, 60, [29, 30])),
    ]
    assert trial.records == 30
    assert trial.dead_letters == []
    assert list(window_lines(trial))[-1].startswith(
        "30 records: 6 windows closed, 2 still open at the end, 0 dead letters; "
    )


def test_grace_and_late_records_are_dead_letters() -> None:
    """With 10 s of grace [960, 1020) closes at ts 1030 (i 6, line 7). A record at ts
    1010 after that is late; one at ts 1025 still counts (its window [1020, 1080) is
    open)."""
    events = [
        *EVENTS[:8],
        {**EVENTS[0], "ts": 1010.0},
        {**EVENTS[1], "ts": 1025.0, "values": [9.0]},
    ]
    trial = run_on(events, config(grace="10s", aggregates="count,max"), batch=3)
    assert [(d.number, d.reason) for d in trial.dead_letters] == [(9, "late")]
    assert trial.dead_letters[0].message == (
        "every window of its event time had closed (stream time 1035000 ms, "
        "tumbling:60000ms grace 10000ms)"
    )
    rows = [
        (where, w["key"], w["window_start"], w["count"], w["max"]) for where, w in printed(trial)
    ]
    assert rows == [
        ("line 7: window closed", "s0", 960_000, 4, 3.0),  # i 0, 2: 2 readings each
        ("line 7: window closed", "s1", 960_000, 4, 4.0),  # i 1, 3
        ("end of file: window open", "s0", 1_020_000, 4, 7.0),  # i 4, 6
        ("end of file: window open", "s1", 1_020_000, 5, 9.0),  # i 5, 7 and the 9.0
    ]
    assert "1 dead letter (late 1)" in list(window_lines(trial))[-1]


def test_hopping_windows_count_a_record_in_each_of_its_windows() -> None:
    events = [
        {"sensor_id": "a", "ts": 10.0, "values": 1.0},
        {"sensor_id": "a", "ts": 25.0, "values": 2.0},
        {"sensor_id": "a", "ts": 70.0, "values": 4.0},
    ]
    trial = run_on(events, config("hopping:30s/10s", aggregates="count,sum"), batch=2)
    got = [(where, w["window_start"] // 1000, w["count"], w["sum"]) for where, w in printed(trial)]
    # 10 s is in [-10, 20), [0, 30), [10, 40); 25 s in [0, 30), [10, 40), [20, 50).
    # ts 25 closes [-10, 20); ts 70 every window ending at or before 70.
    assert got == [
        ("line 2: window closed", -10, 1, 1.0),
        ("line 3: window closed", 0, 2, 3.0),
        ("line 3: window closed", 10, 2, 3.0),
        ("line 3: window closed", 20, 1, 2.0),
        ("end of file: window open", 50, 1, 4.0),
        ("end of file: window open", 60, 1, 4.0),
        ("end of file: window open", 70, 1, 4.0),
    ]


def test_a_transform_runs_before_the_windows() -> None:
    """The windows aggregate the transform's outputs: here each event's mean."""

    def means(records: Sequence[Any]) -> list[Any]:
        return [{**r, "mean": sum(r["values"]) / len(r["values"])} for r in records]

    trial = run_on(EVENTS[:4], config(value_field="mean", key_field=""), as_transform(means))
    ((where, only),) = printed(trial)
    assert where == "end of file: window open"
    # One key (null): the means of [0, 1], [1, 2], [2, 3], [3, 4].
    assert only == window(None, 960, 60, [0.5, 1.5, 2.5, 3.5])
    assert trial.transform.endswith("means")


def test_a_bad_record_is_a_dead_letter_and_the_rest_go_on() -> None:
    events: list[Any] = [
        EVENTS[0],
        b"{not json",
        {"sensor_id": "s0", "ts": "noon", "values": [1.0]},
        {"sensor_id": "s0", "ts": 1001.0, "values": ["x"]},
        {"ts": 1002.0, "values": 7.0},  # no sensor_id: key null
    ]
    trial = run_on(events, config(aggregates="count,sum"), batch=10)
    assert [(d.number, d.reason) for d in trial.dead_letters] == [
        (2, "invalid_json"),
        (3, "invalid_value"),
        (4, "invalid_value"),
    ]
    assert [(w["key"], w["count"], w["sum"]) for _, w in printed(trial)] == [
        (None, 1, 7.0),
        ("s0", 2, 1.0),
    ]


def test_emit_update_prints_each_batchs_changed_windows() -> None:
    trial = run_on(EVENTS[:8], config(aggregates="count", emit_update=True), batch=4)
    assert [(where, w["key"], w["count"]) for where, w in printed(trial)][:4] == [
        ("line 4: window updated", "s0", 4),  # 2 records, 2 readings each
        ("line 4: window updated", "s1", 4),
        ("line 5: window closed", "s0", 4),
        ("line 5: window closed", "s1", 4),
    ]


def test_an_avro_file_gives_what_the_same_json_lines_give() -> None:
    from tests.unit.test_trial import avro_bytes, json_lines

    def run(data: bytes, fmt: str) -> list[str]:
        trial = run_window_file(
            None,
            io.BytesIO(data),
            config(),
            name="the file",
            input_format=fmt,
            max_record_bytes=1 << 20,
            max_array_length=100,
            batch_max_records=5,
        )
        return list(window_lines(trial, unit="record"))[:-1]

    events = [{**e, "sensor_id": str(e["sensor_id"])} for e in EVENTS]
    assert run(avro_bytes(events), "avro") == run(json_lines(events), "json")


@aggregate(sumsq=Column(np.add, np.square))
def rms(c: Any) -> Any:
    """An aggregate of one's own, loaded by ``--aggregate`` from this module."""
    return np.sqrt(c["sumsq"] / c["count"])


def test_an_aggregate_of_ones_own_is_computed_and_printed_under_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"{__name__}:rms"
    path = write(tmp_path, EVENTS[:5])
    argv = ["try", "--window", "tumbling:60s", "--aggregate", f"count,{name}", "--file", path]
    assert main(argv) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith('line 5: window closed {"key":"s0"')
    value = orjson.loads(first.partition(" closed ")[2])
    assert value["count"] == 4
    assert value[name] == pytest.approx((sum(x * x for x in (0, 1, 2, 3)) / 4) ** 0.5)


# --- the command ------------------------------------------------------------------------------


def write(tmp_path: Path, events: list[Any]) -> str:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(line.value + b"\n" for line in lines_of(events)))
    return str(path)


def test_try_window_prints_windows_dead_letters_open_windows_and_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, [*EVENTS[:8], {**EVENTS[0], "ts": 900.0}])
    argv = ["try", "--window", "tumbling:60s", "--aggregate", "count", "--file", path]
    assert main(argv) == 1  # a dead letter
    out = capsys.readouterr().out.splitlines()
    assert out == [
        'line 5: window closed {"key":"s0","window_start":960000,"window_end":1020000,"count":4}',
        'line 5: window closed {"key":"s1","window_start":960000,"window_end":1020000,"count":4}',
        "line 9: dead letter (late): every window of its event time had closed (stream time "
        "1035000 ms, tumbling:60000ms grace 0ms)",
        'end of file: window open {"key":"s0","window_start":1020000,"window_end":1080000,'
        '"count":4}',
        'end of file: window open {"key":"s1","window_start":1020000,"window_end":1080000,'
        '"count":4}',
        out[-1],
    ]
    assert out[-1].startswith("9 records: 2 windows closed, 2 still open at the end, ")
    assert out[-1].endswith("(no transform; tumbling:60000ms grace 0ms, by sensor_id)")
    assert main([*argv, "--allow-dead-letters", "--quiet"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # the dead letter, the summary


def test_try_without_window_is_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["try", "--file", write(tmp_path, EVENTS[:2])]) == 0
    out = capsys.readouterr().out
    assert out.startswith('line 1: {"sensor_id":"s0"')  # sensor-features, per record
    assert "2 records: 2 outputs, 0 dead letters" in out


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (
            ["--window", "tumbling:60s", "--event-time", "kafka"],
            "--event-time kafka: a file has no Kafka timestamps; name the field holding each "
            "record's time in seconds since the epoch (as --event-time ts)",
        ),
        (["--grace", "5s"], "--grace needs --window"),
        (["--key-field", "id"], "--key-field needs --window"),
        (["--window", "sliding:60s"], "--window (from --window): window 'sliding:60s': "),
        (["--window", "tumbling:60s", "--grace", "soon"], "--grace (from --grace): grace 'soon'"),
        (["--window", "tumbling:60s", "--aggregate", "median"], "aggregates 'median': unknown"),
        (["--window", "tumbling:60s", "--emit", "always"], "--emit (from --emit): must be one"),
        (
            ["--window", "tumbling:60s", "--aggregate", "count,no_such_module:agg"],
            "--aggregate: aggregate 'no_such_module:agg' cannot be loaded: ModuleNotFoundError",
        ),
    ],
)
def test_bad_window_options_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], error: str
) -> None:
    assert main(["try", *flags, "--file", write(tmp_path, EVENTS[:1])]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("stream try: error: ")
    assert error in line


def test_the_window_options_read_the_services_variables_but_event_time_its_own() -> None:
    env = {"STREAM_WINDOW": "hopping:2m/1m", "STREAM_GRACE": "5s", "STREAM_EVENT_TIME": "kafka"}
    settings = load(TrySettings, {}, environ={**env, "STREAM_TRY_KEY_FIELD": ""})
    assert (settings.window, settings.grace, settings.event_time) == ("hopping:2m/1m", "5s", "ts")
    assert settings.key_field == ""
    with pytest.raises(ConfigError, match="a file has no Kafka timestamps"):
        load(TrySettings, {}, environ={**env, "STREAM_TRY_EVENT_TIME": "kafka"})
