"""The window spec parser: durations, window shapes, grace, aggregates, and which windows
an event time falls in."""

from __future__ import annotations

import numpy as np
import pytest

from stream.windows.spec import WindowSpec, parse_aggregates, parse_duration


@pytest.mark.parametrize(
    ("text", "ms"),
    [("500ms", 500), ("60s", 60_000), ("5m", 300_000), ("1h", 3_600_000), ("1d", 86_400_000)],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "60", "s", "1.5s", "-1s", "60x", "60 s", "1e3ms"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="whole number and a unit") as info:
        parse_duration(text)
    assert "\n" not in str(info.value)


def test_zero_is_refused_except_for_grace() -> None:
    with pytest.raises(ValueError, match="more than zero"):
        parse_duration("0s")
    assert parse_duration("0s", allow_zero=True) == 0
    assert WindowSpec.parse("tumbling:1m", "0ms").grace_ms == 0


def test_tumbling_and_hopping() -> None:
    assert WindowSpec.parse("tumbling:60s", "5s") == WindowSpec("tumbling", 60_000, 60_000, 5_000)
    assert WindowSpec.parse("hopping:5m/1m") == WindowSpec("hopping", 300_000, 60_000, 0)
    assert WindowSpec.parse("hopping:1s/300ms").max_windows == 4  # the advance need not divide
    assert WindowSpec.parse("hopping:1m/1m").max_windows == 1


@pytest.mark.parametrize(
    ("window", "grace", "message"),
    [
        ("sliding:60s", "0s", "expected tumbling:SIZE or hopping:SIZE/ADVANCE"),
        ("tumbling", "0s", "expected tumbling:SIZE or hopping:SIZE/ADVANCE"),
        ("tumbling:60s/10s", "0s", "takes no advance"),
        ("tumbling:0s", "0s", "more than zero"),
        ("tumbling:60", "0s", "whole number and a unit"),
        ("hopping:60s", "0s", "needs SIZE/ADVANCE"),
        ("hopping:60s/2m", "0s", "must not exceed the size"),
        ("hopping:60s/0s", "0s", "more than zero"),
        ("tumbling:60s", "five", "grace 'five'"),
    ],
)
def test_bad_windows_are_one_line(window: str, grace: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        WindowSpec.parse(window, grace)
    assert "\n" not in str(info.value)


def test_a_spec_built_by_hand_is_checked() -> None:
    with pytest.raises(ValueError, match="advances by its size"):
        WindowSpec("tumbling", 1000, 500)
    with pytest.raises(ValueError, match="must not exceed"):
        WindowSpec("hopping", 1000, 2000)
    with pytest.raises(ValueError, match="grace >= 0"):
        WindowSpec("tumbling", 1000, 1000, -1)


def test_aggregates() -> None:
    assert parse_aggregates("count,sum,mean,std,min,max") == (
        "count",
        "sum",
        "mean",
        "std",
        "min",
        "max",
    )
    assert parse_aggregates(" max , count") == ("max", "count")
    for text, message in [
        ("", "comma-separated"),
        ("count,,sum", "comma-separated"),
        ("count,median", "unknown median"),
        ("sum,sum", "sum given more than once"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_aggregates(text)


def test_tumbling_windows_are_aligned_to_the_epoch() -> None:
    spec = WindowSpec.parse("tumbling:10s")
    which, starts = spec.windows(np.array([0, 9_999, 10_000, -1, 1_700_000_000_123]))
    assert which.tolist() == [0, 1, 2, 3, 4]
    assert starts.tolist() == [0, 0, 10_000, -10_000, 1_700_000_000_000]


def test_hopping_windows_hold_a_time_in_each_window_it_falls_in() -> None:
    spec = WindowSpec.parse("hopping:10s/5s")
    which, starts = spec.windows(np.array([5_000, 7_500]))
    assert list(zip(which.tolist(), starts.tolist(), strict=True)) == [
        (0, 5_000),
        (0, 0),
        (1, 5_000),
        (1, 0),
    ]
    uneven = WindowSpec.parse("hopping:1s/300ms")
    for t in range(-2_000, 2_000, 37):
        which, starts = uneven.windows(np.array([t]))
        expected = [s for s in range(-3_000, 3_000, 300) if s <= t < s + 1_000]
        assert sorted(starts.tolist()) == expected


def test_describe_and_closing_time() -> None:
    spec = WindowSpec.parse("hopping:1m/30s", "5s")
    assert spec.describe() == "hopping:60000ms/30000ms grace 5000ms"
    assert spec.closes_at(np.array([0])).tolist() == [65_000]
