"""From a batch's JSON values to numpy arrays: checks and descriptions of single values,
one group of same-shape arrays stacked into one ``ndarray`` (records with a bad number get
a :class:`~transforms.base.BadRecord` in their slot), and chunks that bound the memory of
one numpy call. The built-in transforms share these.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from transforms.base import BadRecord
from transforms.messages import bounded
from transforms.reasons import Reason

__all__ = [
    "CHUNK_ELEMENTS",
    "FloatArray",
    "chunks",
    "describe",
    "is_integer",
    "is_number",
    "stack_floats",
]

CHUNK_ELEMENTS: Final = 1 << 22
"""At most this many float64 numbers (32 MiB) are stacked into one array for one numpy call."""

FloatArray = NDArray[np.float64]
_NUMBER_TYPES: Final = (int, float, np.integer, np.floating)
_INTEGER_TYPES: Final = (int, np.integer)
# Exact types that np.array(..., dtype=float64) converts faithfully (bool is deliberately absent).
_PLAIN_NUMBER_TYPES: Final = frozenset({int, float})


def is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    return isinstance(value, _INTEGER_TYPES) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, _NUMBER_TYPES):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def describe(value: Any) -> str:
    """``'string "abc"'``-style description of a value for error messages (bounded length)."""
    kind = _json_type(value)
    if value is None:
        return kind
    return f"{kind} {bounded(repr(value), 40)}"


def _walk(item: Any, depth: int, path: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``("[i][j]", value)`` for every scalar of a nested list ``depth`` levels deep."""
    for index, value in enumerate(item):
        here = f"{path}[{index}]"
        if depth == 1:
            yield here, value
        else:
            yield from _walk(value, depth - 1, here)


def _one_to_floats(item: Any, depth: int, field: str) -> FloatArray | BadRecord:
    """Convert one nested list of numbers, explaining precisely what is wrong if it cannot."""
    for path, value in _walk(item, depth):
        if not is_number(value):
            return BadRecord(
                Reason.SCHEMA, f"{field}{path} is {describe(value)}, expected a number"
            )
    try:
        return np.array(item, dtype=np.float64)
    except OverflowError:
        for path, value in _walk(item, depth):
            try:
                float(value)
            except OverflowError:
                return BadRecord(
                    Reason.INVALID_VALUE,
                    f"{field}{path} = {describe(value)} is outside float64 range",
                )
        return BadRecord(Reason.INVALID_VALUE, f"{field} has a value outside float64 range")
    except (TypeError, ValueError) as exc:
        return BadRecord(Reason.SCHEMA, f"{field} is not numeric: {type(exc).__name__}: {exc}")


def stack_floats(
    records: Sequence[Any],
    indices: list[int],
    field: str,
    shape: tuple[int, ...],
    out: list[Any],
) -> tuple[list[int], FloatArray]:
    """Stack ``records[i][field]`` (each a nested list of the given shape) for ``i in indices``.

    Records whose numbers are not all finite real numbers get a BadRecord in ``out``.  Returns the
    indices that were kept and the stacked ``(len(kept), *shape)`` float64 array.

    The fast path checks the element types of the whole group in one C-level pass and converts
    the group with a single ``np.array`` call; only if that fails are records converted one by one.
    """
    items = [records[i][field] for i in indices]
    scalars: Any = items
    for _ in shape:
        scalars = chain.from_iterable(scalars)

    stacked: FloatArray | None = None
    if set(map(type, scalars)) <= _PLAIN_NUMBER_TYPES:
        try:
            stacked = np.array(items, dtype=np.float64)
        except OverflowError:  # an int beyond float64 range: diagnose record by record below
            stacked = None

    kept: list[int]
    if stacked is not None:
        kept = list(indices)
    else:
        kept, arrays = [], []
        for index, item in zip(indices, items, strict=True):
            converted = _one_to_floats(item, len(shape), field)
            if isinstance(converted, BadRecord):
                out[index] = converted
            else:
                kept.append(index)
                arrays.append(converted)
        if not arrays:
            return kept, np.empty((0, *shape), dtype=np.float64)
        stacked = np.stack(arrays)

    finite = np.isfinite(stacked).reshape(len(kept), -1).all(axis=1)
    if not finite.all():
        for k in np.flatnonzero(~finite).tolist():
            row = stacked[k]
            position = np.unravel_index(int(np.argmin(np.isfinite(row))), shape)
            path = "".join(f"[{int(p)}]" for p in position)
            out[kept[k]] = BadRecord(
                Reason.INVALID_VALUE,
                f"{field}{path} is not a finite number ({float(row[position])!r})",
            )
        good = np.flatnonzero(finite)
        kept = [kept[k] for k in good.tolist()]
        stacked = stacked[good]
    return kept, stacked


def chunks(indices: list[int], elements_per_record: int) -> Iterator[list[int]]:
    """Split ``indices`` so that one chunk holds at most CHUNK_ELEMENTS numbers (>= 1 record)."""
    per_chunk = max(1, CHUNK_ELEMENTS // max(1, elements_per_record))
    for start in range(0, len(indices), per_chunk):
        yield indices[start : start + per_chunk]
