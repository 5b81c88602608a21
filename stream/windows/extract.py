"""A windowed run's work in a worker process: decode a batch, run the transform if one
was given, and reduce each record's readings to one partial, so that only six numbers
per record cross back to the event loop (never the readings).

Per record: its event time (the ``--event-time`` field, seconds since the epoch, or the
Kafka timestamp) and the numbers under ``--value-field`` (a number, or a flat array of
numbers). A record without them is an error for that record (reason ``invalid_value``),
never for the batch. Plain code, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.windows.aggregates import Records, empty_records, per_record, readings
from stream.windows.custom import Extras
from transforms.base import BadRecord, Transform
from transforms.batch import apply_batch_fn
from transforms.codec import JSON_DECODER, Decoder
from transforms.messages import bounded
from transforms.reasons import Reason

KAFKA_TIME = "kafka"
# Event times the service takes: years 1 to 9999, in seconds since the epoch.
EARLIEST_S, LATEST_S = -62_135_596_800.0, 253_402_300_799.0

Error = tuple[int, str, str]


@dataclass(frozen=True, slots=True)
class WindowInput:
    """Where a record's readings and event time are (``--value-field``,
    ``--event-time``: a field name, or ``kafka`` for the record's timestamp)."""

    value_field: str = "values"
    event_time: str = KAFKA_TIME
    custom: tuple[str, ...] = ()  # aggregates of one's own, by import path

    def extras(self) -> Extras:
        """The custom aggregates' columns (loaded once per process)."""
        found = _extras.get(self.custom)
        if found is None:
            found = _extras[self.custom] = Extras.of(self.custom)
        return found


_extras: dict[tuple[str, ...], Extras] = {}


def window_batch(
    transform: Transform | None,
    values: Sequence[bytes | None],
    timestamps: Sequence[int],
    max_record_bytes: int,
    where: WindowInput,
    *,
    decoder: Decoder = JSON_DECODER,
) -> tuple[list[Error], Records]:
    """Per record of the batch: its partial, or an error (its place in ``Records`` then
    holds no readings). Errors are sorted by index."""
    decoded = decoder.decode_batch(values, max_record_bytes)
    errors: list[Error] = list(decoded.errors)
    index, items = decoded.index, decoded.items
    if transform is not None and items:
        results = apply_batch_fn(transform, items)
        kept = [(i, r) for i, r in zip(index, results, strict=True)]
        errors += [(i, r.reason, bounded(r.message)) for i, r in kept if isinstance(r, BadRecord)]
        index = [i for i, r in kept if not isinstance(r, BadRecord)]
        items = [r for _, r in kept if not isinstance(r, BadRecord)]
    good: list[int] = []
    times: list[int] = []
    found: list[Any] = []
    for i, item in zip(index, items, strict=True):
        try:
            value, stamp = _fields(item, where, timestamps[i])
        except BadRecord as bad:
            errors.append((i, bad.reason, bad.message))
            continue
        good.append(i)
        times.append(stamp)
        found.append(value)
    extras = where.extras()
    records = empty_records(len(values), extras.width)
    if good:
        try:
            counts, flat = readings(found)
        except ValueError:  # a record's value is not numbers: find which, keep the rest
            good, times, found = _numeric_only(good, times, found, errors, where.value_field)
            counts, flat = readings(found) if found else readings([])
        if good:
            mine = per_record(np.asarray(times, dtype=np.int64), counts, flat, extras)
            at = np.asarray(good, dtype=np.intp)
            finite = np.isfinite(mine.sum) & np.isfinite(mine.m2)
            if not finite.all():  # NaN or infinity among its readings
                for i in at[~finite].tolist():
                    errors.append((i, Reason.INVALID_VALUE, f"{where.value_field!r}: not finite"))
                mine, at = mine.take(finite), at[finite]
            records.put(at, mine)
    errors.sort()
    return errors, records


def _fields(item: Any, where: WindowInput, timestamp: int) -> tuple[Any, int]:
    """The record's value field and its event time in epoch milliseconds."""
    if not isinstance(item, dict):
        raise BadRecord(Reason.INVALID_VALUE, "the record is not an object with fields")
    if where.value_field not in item:
        raise BadRecord(Reason.INVALID_VALUE, f"the record has no {where.value_field!r} field")
    if where.event_time == KAFKA_TIME:
        return item[where.value_field], timestamp
    seconds = item.get(where.event_time)
    if (
        not isinstance(seconds, int | float)
        or isinstance(seconds, bool)
        or not math.isfinite(seconds)
        or not EARLIEST_S <= seconds <= LATEST_S
    ):
        raise BadRecord(
            Reason.INVALID_VALUE,
            f"event time {where.event_time!r} must be seconds since the epoch (a number in "
            f"years 1 to 9999), got {bounded(repr(seconds), 60)}",
        )
    # The millisecond it falls in (a window is [start, end)): rounded to the microsecond
    # first, so that 1.001 s, stored as 1.00099999..., is 1001 ms, then floored, so that
    # 59.9996 s is in the minute it is in.
    return item[where.value_field], round(seconds * 1_000_000) // 1000


def _numeric_only(
    good: list[int], times: list[int], found: list[Any], errors: list[Error], field: str
) -> tuple[list[int], list[int], list[Any]]:
    """The records whose value is numeric; the others become errors."""
    keep_good, keep_times, keep_found = [], [], []
    for i, stamp, value in zip(good, times, found, strict=True):
        try:
            readings([value])
        except ValueError:
            errors.append(
                (i, Reason.INVALID_VALUE, f"{field!r} must be a number or a flat array of numbers")
            )
            continue
        keep_good.append(i)
        keep_times.append(stamp)
        keep_found.append(value)
    return keep_good, keep_times, keep_found
