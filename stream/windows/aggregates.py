"""Partial aggregates per (key, window), computed and merged with numpy.

A partial holds ``count``, ``sum``, ``m2`` (the sum of squared deviations from the mean),
``min`` and ``max`` of the readings it has seen; the mean is ``sum / count`` and the
population standard deviation ``sqrt(m2 / count)``. Two partials merge in O(1) with
Chan, Golub and LeVeque's parallel update of ``m2``, so a batch is reduced on its own and
then merged into the state, and any split of the same readings into batches gives the
same counts, sums, minima and maxima (and ``m2`` up to rounding).

``reduce_batch`` and ``merge`` work on whole arrays: one ``np.lexsort`` and a few
``reduceat`` calls per batch, no Python loop per record, reading or window.
``readings`` turns the records' values into one array of readings; only when they are
arrays of several lengths does it touch each value once from Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from stream.windows.custom import Extras

Value = float | int | Sequence[float | int] | NDArray[np.float64]
_NUMERIC = "iuf"  # numpy kinds taken as readings: signed, unsigned, float


@dataclass(frozen=True, slots=True)
class Partials:
    """Partial aggregates, one entry per (key id, window start), all arrays one length."""

    key_id: NDArray[np.int64]
    start: NDArray[np.int64]
    count: NDArray[np.int64]
    sum: NDArray[np.float64]
    m2: NDArray[np.float64]
    min: NDArray[np.float64]
    max: NDArray[np.float64]
    extra: NDArray[np.float64] = field(default_factory=lambda: np.empty((0, 0)))  # custom columns

    def __len__(self) -> int:
        return len(self.count)

    def take(self, index: NDArray[np.intp]) -> Partials:
        """The entries at ``index``, in that order."""
        return Partials(
            self.key_id[index],
            self.start[index],
            self.count[index],
            self.sum[index],
            self.m2[index],
            self.min[index],
            self.max[index],
            self.extra[index] if len(self.extra) else _no_extra(len(index)),
        )


def readings(
    values: Sequence[Value] | NDArray[np.float64],
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Flatten record values into readings: ``(per_record, flat)``, where ``per_record[i]``
    is how many readings record ``i`` has and ``flat`` holds them all in record order.

    A value is a number (one reading) or a flat sequence of numbers (one reading each,
    possibly none); text and None are not numbers. When every value is a number, or
    every one an array of one length, this is one ``np.asarray``; otherwise each value is
    converted once (the records arrive as Python objects). Raises ``ValueError`` naming
    the first record whose value is neither."""
    try:
        whole = np.asarray(values)
    except (ValueError, TypeError):  # ragged: arrays of several lengths
        whole = np.empty(0, dtype=np.object_)
    if whole.dtype.kind in _NUMERIC and whole.ndim in (1, 2):
        flat = whole.astype(np.float64, copy=False)
        if flat.ndim == 1:
            return np.ones(len(flat), dtype=np.intp), flat
        return np.full(flat.shape[0], flat.shape[1], dtype=np.intp), flat.reshape(-1)
    arrays: list[NDArray[np.float64]] = []
    for i, value in enumerate(values):
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):  # a ragged nested list
            raise ValueError(f"record {i}: value is a nested array, not a flat one") from None
        if array.dtype.kind not in _NUMERIC and not (array.ndim == 1 and len(array) == 0):
            raise ValueError(f"record {i}: value is not a number or an array of numbers")
        if array.ndim > 1:
            raise ValueError(f"record {i}: value is a nested array, not a flat one")
        arrays.append(array.astype(np.float64).reshape(-1))
    per_record = np.fromiter((len(a) for a in arrays), dtype=np.intp, count=len(arrays))
    flat = np.concatenate(arrays) if arrays else np.empty(0, dtype=np.float64)
    return per_record, flat


@dataclass(frozen=True, slots=True)
class Records:
    """Per record: its event time (epoch ms) and the partial of its own readings (count
    0 for a record with none). What a worker process sends back for a batch, so that
    the readings never cross to the event loop: merging is per record, not per reading."""

    time: NDArray[np.int64]
    count: NDArray[np.int64]
    sum: NDArray[np.float64]
    m2: NDArray[np.float64]
    min: NDArray[np.float64]
    max: NDArray[np.float64]
    extra: NDArray[np.float64]  # custom aggregates' columns, (records, columns)

    def __len__(self) -> int:
        return len(self.time)

    def take(self, index: NDArray[np.intp] | NDArray[np.bool_]) -> Records:
        """The records at ``index`` (or where it is True), in that order."""
        return Records(*(getattr(self, name)[index] for name in _RECORD_FIELDS))

    def put(self, at: NDArray[np.intp], other: Records) -> None:
        """Write ``other``'s records at positions ``at`` of these."""
        for name in _RECORD_FIELDS:
            getattr(self, name)[at] = getattr(other, name)

    @classmethod
    def concat(cls, parts: Sequence[Records]) -> Records:
        """Consecutive slices of a batch, as one (custom columns as wide as the widest:
        a failed record's place holder has none)."""
        if not parts:
            return empty_records(0)
        width = max(p.extra.shape[1] for p in parts)
        widened = [p if p.extra.shape[1] == width else _widen(p, width) for p in parts]
        return cls(
            *(np.concatenate([getattr(p, name) for p in widened]) for name in _RECORD_FIELDS)
        )


_RECORD_FIELDS = ("time", "count", "sum", "m2", "min", "max", "extra")


def _widen(records: Records, width: int) -> Records:
    r = records
    return Records(r.time, r.count, r.sum, r.m2, r.min, r.max, np.zeros((len(r), width)))


def _no_extra(n: int) -> NDArray[np.float64]:
    return np.zeros((n, 0))


def empty_records(n: int, width: int = 0) -> Records:
    """``n`` records without readings (event time 0): failed records' place holders."""
    ints = np.zeros(n, dtype=np.int64)
    floats = np.zeros(n, dtype=np.float64)
    return (
        Records(
            ints, ints.copy(), floats, floats.copy(), floats.copy(), floats.copy(), _no_extra(n)
        )
        if not width
        else Records(
            ints,
            ints.copy(),
            floats,
            floats.copy(),
            floats.copy(),
            floats.copy(),
            np.zeros((n, width)),
        )
    )


def per_record(
    times: NDArray[np.int64],
    counts: NDArray[np.intp],
    flat: NDArray[np.float64],
    extras: Extras | None = None,
) -> Records:
    """Each record's partial of its own readings (``counts[i]`` readings of ``flat``, in
    record order, as :func:`readings` gives them): whole-array numpy, a fixed-width
    batch as one 2-D reduction."""
    n = len(counts)
    count = np.asarray(counts, dtype=np.int64)
    total, m2 = np.zeros(n), np.zeros(n)
    low, high = np.full(n, np.inf), np.full(n, -np.inf)
    if n and len(flat) == n * int(count[0]) and bool((count == count[0]).all()) and count[0]:
        grid = flat.reshape(n, int(count[0]))
        total = grid.sum(axis=1)
        deviation = grid - (total / count)[:, None]
        m2 = np.einsum("ij,ij->i", deviation, deviation)
        low, high = grid.min(axis=1), grid.max(axis=1)
    elif len(flat):
        some = count > 0
        first = (np.cumsum(count) - count)[some]
        total[some] = np.add.reduceat(flat, first)
        deviation = flat - np.repeat(total[some] / count[some], count[some])
        m2[some] = np.add.reduceat(deviation * deviation, first)
        low[some] = np.minimum.reduceat(flat, first)
        high[some] = np.maximum.reduceat(flat, first)
    extra = _no_extra(n) if extras is None else extras.per_record(count, flat)
    return Records(np.asarray(times, dtype=np.int64), count, total, m2, low, high, extra)


def reduce_records(
    key_id: NDArray[np.int64],
    start: NDArray[np.int64],
    r: Records,
    extras: Extras | None = None,
) -> Partials:
    """Per-(key id, window start) partials of per-record partials (one entry per record
    and window, every count positive), sorted by key id then window start: one
    ``np.lexsort``, then grouped sums with Chan's correction of ``m2`` around each
    group's mean, and ``np.minimum.reduceat`` / ``np.maximum.reduceat``."""
    if len(r) == 0:
        return empty_partials(extras.width if extras is not None else 0)
    order = np.lexsort((start, key_id))
    keys, starts = key_id[order], start[order]
    count, total, m2 = r.count[order], r.sum[order], r.m2[order]
    boundary = np.flatnonzero((keys[1:] != keys[:-1]) | (starts[1:] != starts[:-1])) + 1
    first = np.concatenate((np.zeros(1, dtype=np.intp), boundary))
    sizes = np.diff(np.append(first, len(count)))
    group_count = np.add.reduceat(count, first)
    group_sum = np.add.reduceat(total, first)
    deviation = total / count - np.repeat(group_sum / group_count, sizes)
    group_m2 = np.add.reduceat(m2 + count * deviation * deviation, first)
    return Partials(
        key_id=keys[first],
        start=starts[first],
        count=group_count,
        sum=group_sum,
        m2=group_m2,
        min=np.minimum.reduceat(r.min[order], first),
        max=np.maximum.reduceat(r.max[order], first),
        extra=(
            extras.reduceat(r.extra[order], first)
            if extras is not None and extras.width
            else _no_extra(len(first))
        ),
    )


def reduce_batch(
    key_id: NDArray[np.int64], start: NDArray[np.int64], value: NDArray[np.float64]
) -> Partials:
    """Per-(key id, window start) partials of one batch of readings (one entry per
    reading in each array), sorted by key id then window start: one ``np.lexsort``, then
    ``np.add.reduceat`` for count, sum and (two-pass, around each group's mean) ``m2``,
    and ``np.minimum.reduceat`` / ``np.maximum.reduceat``."""
    if len(value) == 0:
        return empty_partials()
    order = np.lexsort((start, key_id))
    keys, starts, values = key_id[order], start[order], value[order]
    boundary = np.flatnonzero((keys[1:] != keys[:-1]) | (starts[1:] != starts[:-1])) + 1
    first = np.concatenate((np.zeros(1, dtype=np.intp), boundary))
    count = np.diff(np.append(first, len(values))).astype(np.int64)
    total = np.add.reduceat(values, first)
    deviation = values - np.repeat(total / count, count)
    return Partials(
        key_id=keys[first],
        start=starts[first],
        count=count,
        sum=total,
        m2=np.add.reduceat(deviation * deviation, first),
        min=np.minimum.reduceat(values, first),
        max=np.maximum.reduceat(values, first),
    )


def merge(
    a: tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]],
    b: tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]],
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """``(count, sum, m2)`` of two sets of partials merged entry by entry (Chan et al.):
    ``m2 = m2_a + m2_b + delta^2 * n_a * n_b / n`` with ``delta`` the difference of the
    means. Every count must be positive. Minimum and maximum merge with
    ``np.minimum`` / ``np.maximum``."""
    count_a, sum_a, m2_a = a
    count_b, sum_b, m2_b = b
    count = count_a + count_b
    delta = sum_b / count_b - sum_a / count_a
    m2 = m2_a + m2_b + delta * delta * (count_a * count_b / count)
    return count, sum_a + sum_b, m2


def mean(count: NDArray[np.int64], total: NDArray[np.float64]) -> NDArray[np.float64]:
    """The mean of each partial."""
    return total / count


def std(count: NDArray[np.int64], m2: NDArray[np.float64]) -> NDArray[np.float64]:
    """The population standard deviation of each partial (``m2`` below zero by rounding
    counts as zero)."""
    return np.sqrt(np.maximum(m2, 0.0) / count)


def empty_partials(width: int = 0) -> Partials:
    """No partials."""
    ints = np.empty(0, dtype=np.int64)
    floats = np.empty(0, dtype=np.float64)
    return Partials(ints, ints, ints, floats, floats, floats, floats, np.zeros((0, width)))
