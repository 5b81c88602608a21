"""Aggregates of one's own (stream.windows.custom): loaded by import path, computed per
record, merged by their ufuncs whatever the batching, kept in the changelog."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.windows.custom import Column, Extras, aggregate, load
from stream.windows.output import window_value
from stream.windows.spec import WindowSpec, parse_aggregates
from stream.windows.store import WindowStore

RMS = "tests.windows_aggregates:rms"
PRODUCT = "tests.windows_aggregates:product"
SPEC = WindowSpec.parse("tumbling:10s")

readings = st.lists(st.floats(-100, 100, allow_nan=False).map(lambda x: round(x, 2)), max_size=4)
events = st.lists(st.tuples(st.sampled_from([b"a", b"b"]), st.integers(0, 25_000), readings))


def store() -> WindowStore:
    return WindowStore(SPEC, Extras.of([RMS, PRODUCT]))


@given(events, st.integers(1, 7))
def test_any_batching_gives_the_same_values(
    records: list[tuple[bytes, int, list[float]]], size: int
) -> None:
    one, cut = store(), store()
    keys, times, values = zip(*records, strict=True) if records else ((), (), ())
    one.add(list(keys), list(times), list(values))
    for at in range(0, len(records), size):
        part = records[at : at + size]
        cut.add([k for k, _, _ in part], [t for _, t, _ in part], [v for _, _, v in part])
    for a, b in zip(one.windows(), cut.windows(), strict=True):
        assert (a.key, a.start, a.count) == (b.key, b.start, b.count)
        assert a.extra[RMS] == pytest.approx(b.extra[RMS], rel=1e-9)
        assert a.extra[PRODUCT] == pytest.approx(b.extra[PRODUCT], rel=1e-9)
    assert len(one.windows()) == len(cut.windows())


def test_values_are_the_plain_formulas_and_go_out_under_their_import_path() -> None:
    s = store()
    s.add([b"k", b"k", b"k"], [1_000, 2_000, 30_000], [[3.0, 4.0], [2.0], [1.0]])
    (window,) = s.close()
    assert window.extra[RMS] == pytest.approx(math.sqrt((9 + 16 + 4) / 3))
    assert window.extra[PRODUCT] == 24.0
    value = window_value(window, parse_aggregates(f"count,{RMS}"))
    assert value.startswith(
        b'{"window_start":0,"window_end":10000,"count":3,"tests.windows_aggregates:rms":'
    )


def test_the_changelog_keeps_the_custom_columns_and_refuses_another_set() -> None:
    s = store()
    s.add([b"k", b"j"], [1_000, 2_000], [[3.0, 4.0], [2.0]])
    again = store()
    again.apply(s.take_changes())
    assert [w.extra for w in again.windows()] == [w.extra for w in s.windows()]
    plain = WindowStore(SPEC)
    with pytest.raises(ValueError, match="other custom aggregates"):
        plain.apply(s.snapshot())


def test_a_bad_import_path_or_object_is_one_line() -> None:
    with pytest.raises(ValueError, match="cannot be loaded: ModuleNotFoundError"):
        load("no_such_module:rms")
    with pytest.raises(ValueError, match="is not declared with"):
        load("tests.windows_aggregates:not_an_aggregate")
    with pytest.raises(TypeError, match="expected Column"):
        aggregate(x=np.add)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a binary ufunc"):
        aggregate(x=Column(np.negative))
