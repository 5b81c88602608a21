"""``stream produce``: pacing (``stream.produce._next_chunk``: every event once, in
order, in batches rather than one at a time, and never ahead of ``--rate``), and the
demo events' event time (``--start-time``, ``--event-interval``)."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import fastavro
import orjson
import pytest

from stream.cli import main
from stream.config import ProduceSettings
from stream.options import ConfigError, load
from stream.produce import (
    CHUNK,
    Event,
    EventClock,
    _next_chunk,
    demo_events,
    file_events,
    write_avro_file,
)


def _events(n: int) -> list[Event]:
    return [Event(b"k%d" % (i % 7), b"%d" % i) for i in range(n)]


async def _drain(events: list[Event], rate: float) -> tuple[list[list[Event]], float]:
    source = iter(events)
    chunks: list[list[Event]] = []
    sent = 0
    started = time.monotonic()
    while chunk := await _next_chunk(source, rate, started, sent):
        chunks.append(chunk)
        sent += len(chunk)
    return chunks, time.monotonic() - started


async def test_unpaced_events_come_in_chunks_in_order() -> None:
    events = _events(2 * CHUNK + 5)
    chunks, _ = await _drain(events, 0.0)
    assert [len(c) for c in chunks] == [CHUNK, CHUNK, 5]
    assert [e for c in chunks for e in c] == events


async def test_paced_events_are_batched_and_never_ahead_of_the_rate() -> None:
    rate, count = 2000.0, 1000  # half a second of events
    events = _events(count)
    chunks, seconds = await _drain(events, rate)
    assert [e for c in chunks for e in c] == events
    # The last event is due at (count - 1) / rate: nothing may leave before its time.
    assert seconds >= (count - 1) / rate
    # Batched per tick (about 10 events each at this rate), not one send per event.
    assert len(chunks) < count / 4, len(chunks)


async def test_a_slow_rate_ends_without_waiting_after_the_last_event() -> None:
    chunks, seconds = await _drain(_events(3), 2.0)  # due at 0, 0.5 and 1 s
    assert [len(c) for c in chunks] == [1, 1, 1]
    assert 1.0 <= seconds < 1.4  # not 1.5: the end is seen before waiting for a 4th


# --- event time of the demo events -------------------------------------------------------------

NEW_YEAR = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _settings(**flags: str) -> ProduceSettings:
    return load(ProduceSettings, flags, environ={})


def _stamps(settings: ProduceSettings) -> list[tuple[str, float]]:
    return [
        (body["sensor_id"], body["ts"])
        for body in (orjson.loads(e.value) for e in demo_events(settings))
    ]


def test_an_event_interval_spreads_the_events_over_event_time() -> None:
    """The README's tutorial: 6000 events, 10 keys, 100 ms apart: 600 s of event time,
    ten 1-minute windows for every key, whatever the sending rate."""
    settings = _settings(
        count="6000", keys="10", event_interval="100ms", start_time="2026-01-01T00:00:00Z"
    )
    stamps = _stamps(settings)
    assert [ts for _, ts in stamps[:4]] == [
        NEW_YEAR,
        NEW_YEAR + 0.1,
        NEW_YEAR + 0.2,
        NEW_YEAR + 0.3,
    ]
    assert [ts for _, ts in stamps] == [NEW_YEAR + i / 10 for i in range(6000)]
    assert stamps[-1][1] - stamps[0][1] == pytest.approx(599.9)
    minutes: dict[str, set[int]] = {}
    for key, ts in stamps:
        minutes.setdefault(key, set()).add(int(ts // 60))
    assert len(minutes) == 10
    assert all(len(m) == 10 for m in minutes.values())
    # The same seed gives the same events, event times included.
    assert _stamps(settings) == stamps


def test_a_start_time_is_an_iso_time_or_epoch_seconds() -> None:
    for start in ("2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00"):
        assert _settings(start_time=start).start_seconds == NEW_YEAR
    assert _settings(start_time=" 1767225600.5 ").start_seconds == NEW_YEAR + 0.5
    assert _settings().start_seconds is None
    assert _settings(event_interval="2s").event_interval_ms == 2000


def test_without_an_interval_ts_follows_the_wall_clock_from_the_start_time() -> None:
    wall = iter([500.0, 502.5, 510.0])
    clock = EventClock(NEW_YEAR, None, wall=lambda: next(wall))
    assert clock.times(0, 2) == [NEW_YEAR, NEW_YEAR]
    assert clock.times(2, 1) == [NEW_YEAR + 2.5]
    assert clock.times(3, 1) == [NEW_YEAR + 10.0]


def test_by_default_ts_is_the_wall_clock_and_an_interval_starts_now() -> None:
    wall = iter([1000.25, 1003.0])
    clock = EventClock(wall=lambda: next(wall))
    assert clock.times(0, 2) == [1000.25, 1000.25]
    assert clock.times(2, 1) == [1003.0]
    now = iter([2000.0, 9999.0])
    spread = EventClock(None, 250, wall=lambda: next(now))
    assert spread.times(0, 3) == [2000.0, 2000.25, 2000.5]
    assert spread.times(3, 2) == [2000.75, 2001.0]  # the wall clock no longer matters


def test_matrix_events_and_the_avro_file_carry_the_same_times(tmp_path: Path) -> None:
    matrices = _settings(kind="matrix", count="3", event_interval="1s", start_time="100")
    assert [orjson.loads(e.value)["ts"] for e in demo_events(matrices)] == [100.0, 101.0, 102.0]
    path = tmp_path / "events.avro"
    settings = _settings(count="5", event_interval="1m", start_time="0", avro_file=str(path))
    assert write_avro_file(settings, str(path)) == 5
    with path.open("rb") as handle:
        stamps = [r["ts"] for r in fastavro.reader(handle) if isinstance(r, dict)]
        assert stamps == [0.0, 60.0, 120.0, 180.0, 240.0]


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        ({"start_time": "yesterday"}, "--start-time (from --start-time): expected an ISO 8601"),
        ({"start_time": "1e20"}, "must be a time in the years 1 to 9999"),
        ({"event_interval": "100"}, "--event-interval (from --event-interval): event interval"),
        ({"event_interval": "0s"}, "must be more than zero"),
        ({"file": "x.jsonl", "event_interval": "1s"}, "--file sends its lines as they are"),
        ({"file": "x.jsonl", "start_time": "0"}, "--file sends its lines as they are"),
    ],
)
def test_bad_event_time_options_are_one_line(flags: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        _settings(**flags)


def test_file_events_are_sent_as_they_are() -> None:
    lines = b'{"sensor_id": "a", "ts": 5}\n\n{"id": 7}\nnot json\n'
    events = list(file_events(io.BytesIO(lines)))
    assert events == [
        Event(b"a", b'{"sensor_id": "a", "ts": 5}'),
        Event(b"7", b'{"id": 7}'),
        Event(None, b"not json"),
    ]


def test_produce_refuses_event_time_options_with_a_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["produce", "--file", "-", "--event-interval", "100ms"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("stream produce: error: --start-time and --event-interval shape")


def test_the_event_time_range_is_said_in_utc_to_the_millisecond() -> None:
    from stream.commands import _utc

    assert _utc(1_767_225_600.0) == "2026-01-01T00:00:00.000Z"
    assert _utc(1_767_225_659.9) == "2026-01-01T00:00:59.900Z"
