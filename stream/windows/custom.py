"""Aggregates of one's own: vectorised, mergeable, named by import path.

An aggregate declares the columns of its partial, each reduced by a numpy ufunc
(``np.add``, ``np.minimum``, ``np.maximum``, ``np.multiply``...) over the readings, or
over an elementwise function of them, and a function from the window's columns to its
value. Because every column merges by its ufunc, a window's partial is built batch by
batch, restored from the changelog and merged, whatever the batching, like the
built-in ones::

    # mypkg/aggs.py
    import numpy as np
    from stream.windows.custom import Column, aggregate

    @aggregate(sumsq=Column(np.add, np.square))
    def rms(c):
        return np.sqrt(c["sumsq"] / c["count"])

``stream run --window tumbling:60s --aggregate count,mean,mypkg.aggs:rms`` then outputs
``"mypkg.aggs:rms": ...`` for each window. The function receives the closed windows'
columns as arrays (its own, and ``count``, ``sum``, ``mean``, ``std``, ``min``,
``max``) and returns one float per window: one numpy call for every window closing
together, never Python per window. Plain code, no I/O but the import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Result = Callable[[Mapping[str, Floats]], Floats]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a partial: ``reduce`` (a binary numpy ufunc such as ``np.add``)
    over ``of(readings)`` (elementwise; None: the readings themselves)."""

    reduce: np.ufunc
    of: Callable[[Floats], Floats] | None = None


@dataclass(frozen=True, slots=True)
class Aggregate:
    """An aggregate of one's own: its columns and its value from them."""

    columns: Mapping[str, Column]
    result: Result
    name: str = ""  # the import path it was loaded by


def aggregate(**columns: Column) -> Callable[[Result], Aggregate]:
    """Declare an aggregate: its columns by name, and (decorated) its value function."""
    for name, column in columns.items():
        if not isinstance(column, Column) or not isinstance(column.reduce, np.ufunc):
            raise TypeError(f"column {name!r}: expected Column(<numpy ufunc>, <function>)")
        if column.reduce.nin != 2:
            raise TypeError(f"column {name!r}: {column.reduce.__name__} is not a binary ufunc")

    def decorate(fn: Result) -> Aggregate:
        return Aggregate(dict(columns), fn)

    return decorate


def is_custom(name: str) -> bool:
    """An aggregate named by import path (``package.module:name``)."""
    return ":" in name


def load(spec: str) -> Aggregate:
    """The aggregate at ``package.module:name``; ``ValueError`` in one line if it is not
    one."""
    module_name, _, attr = spec.partition(":")
    try:
        found: Any = importlib.import_module(module_name.strip())
        for part in attr.strip().split("."):
            found = getattr(found, part)
    except Exception as exc:  # noqa: BLE001 - any failure: it cannot be loaded
        raise ValueError(
            f"aggregate {spec!r} cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(found, Aggregate):
        raise ValueError(
            f"aggregate {spec!r} is not declared with @stream.windows.custom.aggregate(...)"
        )
    return Aggregate(found.columns, found.result, spec)


class Extras:
    """The columns of every custom aggregate of a run, side by side: one float64 matrix
    column each, in the order of the aggregates, then of their columns."""

    def __init__(self, aggregates: Sequence[Aggregate] = ()) -> None:
        self.aggregates = tuple(aggregates)
        self.columns = [(a, name, c) for a in aggregates for name, c in a.columns.items()]

    @classmethod
    def of(cls, names: Sequence[str]) -> Extras:
        return cls([load(name) for name in names if is_custom(name)])

    @property
    def width(self) -> int:
        return len(self.columns)

    def per_record(self, counts: NDArray[np.int64], flat: Floats) -> Floats:
        """Each record's columns over its own readings (a record with none: zeros; it
        opens no window)."""
        out = np.zeros((len(counts), self.width))
        some = counts > 0
        if not self.width or not some.any():
            return out
        first = (np.cumsum(counts) - counts)[some]
        for j, (_agg, _name, column) in enumerate(self.columns):
            mapped = flat if column.of is None else np.asarray(column.of(flat), dtype=np.float64)
            out[some, j] = column.reduce.reduceat(mapped, first)
        return out

    def reduceat(self, values: Floats, first: NDArray[np.intp]) -> Floats:
        """Grouped reduction of rows (sorted into groups starting at ``first``)."""
        out = np.empty((len(first), self.width))
        for j, (_agg, _name, column) in enumerate(self.columns):
            out[:, j] = column.reduce.reduceat(values[:, j], first)
        return out

    def merge(self, a: Floats, b: Floats) -> Floats:
        """Two sets of partials' columns merged row by row."""
        out = np.empty_like(a)
        for j, (_agg, _name, column) in enumerate(self.columns):
            out[:, j] = column.reduce(a[:, j], b[:, j])
        return out

    def results(self, builtin: Mapping[str, Floats], values: Floats) -> dict[str, list[float]]:
        """Each custom aggregate's value per window, from the windows' columns."""
        out: dict[str, list[float]] = {}
        at = 0
        for agg in self.aggregates:
            columns = dict(builtin)
            for name in agg.columns:
                columns[name] = values[:, at]
                at += 1
            answer = np.asarray(agg.result(columns), dtype=np.float64).reshape(-1)
            if len(answer) != len(values):
                raise ValueError(
                    f"aggregate {agg.name!r} returned {len(answer)} values for "
                    f"{len(values)} windows"
                )
            out[agg.name] = answer.tolist()
        return out
