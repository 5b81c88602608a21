"""Partial aggregates against a reference written here in plain Python, one reading at a
time (it shares no code with ``stream.windows``): count, sum, min and max equal, mean
and the population standard deviation within 1e-9 relative.

Readings are multiples of 1/8 below 2**20, so every sum is exact in float64 whatever the
order of the additions: equality of sums is then a fair demand of any batching."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.windows.aggregates import Partials, merge, readings, reduce_batch, std

Reading = tuple[int, int, float]  # key id, window start, value
Summary = dict[tuple[int, int], tuple[int, float, float, float, float, float]]


def reference(
    rows: list[Reading],
) -> dict[tuple[int, int], tuple[int, float, float, float, float, float]]:
    """(key, start) -> (count, sum, mean, std, min, max), one reading at a time."""
    groups: dict[tuple[int, int], list[float]] = {}
    for key, start, value in rows:
        groups.setdefault((key, start), []).append(value)
    out = {}
    for group, values in groups.items():
        total = 0.0
        for value in values:
            total += value
        mu = total / len(values)
        var = 0.0
        for value in values:
            var += (value - mu) ** 2
        out[group] = (
            len(values),
            total,
            mu,
            math.sqrt(var / len(values)),
            min(values),
            max(values),
        )
    return out


def as_dict(p: Partials) -> Summary:
    means = (p.sum / p.count).tolist()
    stds = std(p.count, p.m2).tolist()
    return {
        (k, s): (n, t, mu, sd, lo, hi)
        for k, s, n, t, mu, sd, lo, hi in zip(
            p.key_id.tolist(),
            p.start.tolist(),
            p.count.tolist(),
            p.sum.tolist(),
            means,
            stds,
            p.min.tolist(),
            p.max.tolist(),
            strict=True,
        )
    }


def assert_same(got: Summary, want: Summary) -> None:
    assert got.keys() == want.keys()
    for group, (n, total, mu, sd, lo, hi) in want.items():
        g = got[group]
        assert (g[0], g[1], g[4], g[5]) == (n, total, lo, hi), group
        assert math.isclose(g[2], mu, rel_tol=1e-9, abs_tol=1e-12), group
        assert math.isclose(g[3], sd, rel_tol=1e-9, abs_tol=1e-9), group


def random_rows(rng: random.Random, n: int) -> list[Reading]:
    return [
        (rng.randrange(5), rng.randrange(4) * 60_000, rng.randrange(-(2**20), 2**20) / 8)
        for _ in range(n)
    ]


def columns(rows: list[Reading]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=np.float64),
    )


def test_one_batch_matches_the_reference() -> None:
    rows = random_rows(random.Random(1), 5_000)
    partials = reduce_batch(*columns(rows))
    assert_same(as_dict(partials), reference(rows))
    order = list(zip(partials.key_id.tolist(), partials.start.tolist(), strict=True))
    assert order == sorted(order)  # by key id, then window start


def test_an_empty_batch_has_no_partials() -> None:
    assert len(reduce_batch(*columns([]))) == 0


def merged(a: Partials, b: Partials) -> Partials:
    """Merge two batches' partials the way a store does: shared groups with ``merge``."""
    index = {
        (k, s): i for i, (k, s) in enumerate(zip(a.key_id.tolist(), a.start.tolist(), strict=True))
    }
    rows = []
    for j, (k, s) in enumerate(zip(b.key_id.tolist(), b.start.tolist(), strict=True)):
        if (k, s) in index:
            i = index.pop((k, s))
            (n,), (t,), (m2,) = merge(
                (a.count[i : i + 1], a.sum[i : i + 1], a.m2[i : i + 1]),
                (b.count[j : j + 1], b.sum[j : j + 1], b.m2[j : j + 1]),
            )
            rows.append((k, s, n, t, m2, min(a.min[i], b.min[j]), max(a.max[i], b.max[j])))
        else:
            rows.append((k, s, b.count[j], b.sum[j], b.m2[j], b.min[j], b.max[j]))
    for (k, s), i in index.items():
        rows.append((k, s, a.count[i], a.sum[i], a.m2[i], a.min[i], a.max[i]))
    if not rows:
        return a
    cols = list(zip(*rows, strict=True))
    return Partials(*(np.array(c, dtype=d) for c, d in zip(cols, "qqqdddd", strict=True)))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_merging_batches_matches_one_pass(data: st.DataObject) -> None:
    rows = random_rows(
        random.Random(data.draw(st.integers(0, 2**32))), data.draw(st.integers(1, 300))
    )
    cut = data.draw(st.integers(0, len(rows)))
    a, b = reduce_batch(*columns(rows[:cut])), reduce_batch(*columns(rows[cut:]))
    assert_same(as_dict(merged(a, b)), reference(rows))


def test_merge_is_chans_update() -> None:
    values = [1.0, 2.0, 4.0, 8.0, 16.0]
    a, b = values[:2], values[2:]

    def part(xs: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mu = sum(xs) / len(xs)
        return np.array([len(xs)]), np.array([sum(xs)]), np.array([sum((x - mu) ** 2 for x in xs)])

    n, total, m2 = merge(part(a), part(b))
    mu = sum(values) / 5
    assert (n[0], total[0]) == (5, 31.0)
    assert math.isclose(m2[0], sum((x - mu) ** 2 for x in values), rel_tol=1e-12)


def test_readings_flatten_numbers_and_arrays() -> None:
    per_record, flat = readings([1, [2.5, 3], np.array([4.0]), [], 5.5])
    assert per_record.tolist() == [1, 2, 1, 0, 1]
    assert flat.tolist() == [1.0, 2.5, 3.0, 4.0, 5.5]
    per_record, flat = readings([0.5, 1, 2])  # all numbers: one conversion
    assert (per_record.tolist(), flat.tolist()) == ([1, 1, 1], [0.5, 1.0, 2.0])
    per_record, flat = readings([[1, 2], [3, 4]])  # arrays of one length
    assert (per_record.tolist(), flat.tolist()) == ([2, 2], [1.0, 2.0, 3.0, 4.0])
    assert readings([])[1].tolist() == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0, "x"], "record 1: value is not a number"),
        ([1.0, {"a": 1}], "record 1: value is not a number"),
        ([1.0, "2.5"], "record 1: value is not a number"),
        ([1.0, None], "record 1: value is not a number"),
        ([[1.0], [2.0, [3.0]]], "record 1: value is a nested array"),
        ([[1.0], [[2.0]]], "record 1: value is a nested array"),
    ],
)
def test_readings_refuse_what_is_not_numeric(values: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        readings(values)
