"""The changelog's bytes: window record keys, partial values, the stream-time record, and
what is refused; and the output value of a window whose aggregates are not finite."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from stream.windows import changelog
from stream.windows.output import window_value
from stream.windows.spec import WindowSpec
from stream.windows.store import WindowResult, WindowStore


@pytest.mark.parametrize("key", [b"sensor-1", b"", b"\x00\xff", None])
@pytest.mark.parametrize("start", [0, -60_000, 1_780_000_000_000])
def test_window_keys_round_trip(key: bytes | None, start: int) -> None:
    record_key = changelog.window_key(key, start)
    assert changelog.parse_window_key(record_key) == (key, start)
    assert record_key != changelog.STREAM_TIME_KEY


@pytest.mark.parametrize("record_key", [b"", b"t", b"x" + bytes(8), b"w1234", b"n" + bytes(9)])
def test_what_is_not_a_window_key_is_refused(record_key: bytes) -> None:
    with pytest.raises(ValueError, match="not a window key"):
        changelog.parse_window_key(record_key)


def test_partials_round_trip_and_bad_lengths_are_refused() -> None:
    count = np.array([1, 5], dtype=np.int64)
    floats = [
        np.array([0.5, -2.0]),
        np.array([0.0, 3.25]),
        np.array([0.5, -9.0]),
        np.array([0.5, 1e300]),
    ]
    values = changelog.encode_partials(count, *floats)
    assert [len(v) for v in values] == [40, 40]
    back = changelog.decode_partials(values)
    assert back["count"].tolist() == [1, 5]
    assert back["max"].tolist() == [0.5, 1e300]
    with pytest.raises(ValueError, match="of 39 bytes, expected 40"):
        changelog.decode_partials([values[0][:39]])
    assert len(changelog.decode_partials([])) == 0


def test_the_stream_time_record() -> None:
    key, value = changelog.stream_time_change(-5)
    assert key == changelog.STREAM_TIME_KEY
    assert value is not None
    assert changelog.parse_stream_time(value) == -5
    with pytest.raises(ValueError, match="expected 8"):
        changelog.parse_stream_time(b"\x00")


def test_apply_keeps_the_last_record_of_a_window_and_removes_on_a_tombstone() -> None:
    spec = WindowSpec.parse("tumbling:10s")
    source = WindowStore(spec)
    source.add([b"a", b"b"], [1_000, 2_000], [1.0, 2.0])
    first = source.take_changes()
    source.add([b"a"], [3_000], [3.0])
    second = source.take_changes()
    store = WindowStore(spec)
    store.apply(first + second)
    assert [(r.key, r.count, r.sum) for r in store.windows()] == [(b"a", 2, 4.0), (b"b", 1, 2.0)]
    store.apply([(changelog.window_key(b"b", 0), None), (changelog.window_key(b"zz", 0), None)])
    assert [r.key for r in store.windows()] == [b"a"]
    assert store.stream_time == 3_000
    store.apply([changelog.stream_time_change(1_000)])  # stream time never goes back
    assert store.stream_time == 3_000


def test_a_value_that_is_not_finite_is_null_in_json() -> None:
    result = WindowResult(b"k", 0, 10, 2, math.inf, math.inf, math.nan, 1.0, math.inf)
    assert orjson.loads(window_value(result, ("count", "sum", "std"))) == {
        "window_start": 0,
        "window_end": 10,
        "count": 2,
        "sum": None,
        "std": None,
    }


def test_a_changelog_of_other_windows_is_refused_before_anything_changes() -> None:
    minute = WindowStore(WindowSpec.parse("tumbling:1m"))
    minute.add([b"a"], [30_000], [1.0])
    minute.add([b"a"], [90_000], [1.0])
    hour = WindowStore(WindowSpec.parse("tumbling:1h"))
    with pytest.raises(ValueError, match="60000 ms is not aligned to tumbling:3600000ms"):
        hour.apply(minute.take_changes())
    assert (len(hour), hour.stream_time, hour.key_count) == (0, None, 0)


def test_parse_changes_keeps_the_last_record_of_each_window() -> None:
    one = changelog.encode_partials(
        np.array([3]), np.array([6.0]), np.array([2.0]), np.array([1.0]), np.array([3.0])
    )[0]
    records = [
        (changelog.window_key(b"a", 0), one),
        changelog.stream_time_change(7),
        (changelog.window_key(None, 10), one),
        (changelog.window_key(b"a", 0), None),
        changelog.stream_time_change(9),
    ]
    stream_time, keys, starts, partials = changelog.parse_changes(records)
    assert (stream_time, keys, starts.tolist()) == (9, [b"a", None], [0, 10])
    assert partials["count"].tolist() == [0, 3]  # count 0: removed
    assert partials["sum"].tolist() == [0.0, 6.0]
