"""A transform's output record (JSON bytes) and its source position -> one table row.

Pure: no I/O. The built-in ``sensor-features`` transform gets typed columns; every other
transform gets the generic ``(key, value jsonb)`` columns. Every row starts with the
record's source topic, partition and offset (the table's primary key).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import orjson

TYPED_TRANSFORM: Final = "sensor-features"

Row = tuple[Any, ...]
RowBuilder = Callable[[bytes | None, bytes, str, int, int], Row]
"""(key, value, source topic, source partition, source offset) -> row."""


class RowError(ValueError):
    """The output cannot become a row of the table (its message says why): a dead letter
    with reason ``sink_refused``, as a row the database refuses."""


def _field(record: dict[str, Any], name: str, kinds: tuple[type, ...], what: str) -> Any:
    if name not in record:
        raise RowError(f"missing field {name}")
    value = record[name]
    if not isinstance(value, kinds) or isinstance(value, bool) != (bool in kinds):
        raise RowError(f"{name} must be {what}, got {type(value).__name__}")
    return value


def _float(record: dict[str, Any], name: str) -> float:
    return float(_field(record, name, (int, float), "a number"))


def _int(record: dict[str, Any], name: str) -> int:
    value: int = _field(record, name, (int,), "an integer")
    return value


def _object(value: bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise RowError(f"output is not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise RowError(f"output must be a JSON object, got {type(record).__name__}")
    return record


def sensor_row(key: bytes | None, value: bytes, topic: str, partition: int, offset: int) -> Row:
    """A row of the typed table: source topic, partition, offset, sensor_id, ts, seq, n,
    mean, std, min, max, peak_bins, zscore, anomaly (the columns of
    ``schema.SENSOR_COLUMNS``)."""
    del key  # the sensor id is the key, and it is in the record
    record = _object(value)
    seq = record.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise RowError(f"seq must be an integer, got {type(seq).__name__}")
    peaks = _field(record, "peak_bins", (list,), "an array of integers")
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in peaks):
        raise RowError("peak_bins must be an array of integers")
    ts = _float(record, "ts")
    if not math.isfinite(ts):
        raise RowError("ts must be a finite number")
    return (
        topic,
        partition,
        offset,
        _field(record, "sensor_id", (str,), "a string"),
        ts,
        seq,
        _int(record, "n"),
        _float(record, "mean"),
        _float(record, "std"),
        _float(record, "min"),
        _float(record, "max"),
        peaks,
        _float(record, "zscore"),
        _field(record, "anomaly", (bool,), "true or false"),
    )


def generic_row(key: bytes | None, value: bytes, topic: str, partition: int, offset: int) -> Row:
    """A row of the generic table: source topic, partition, offset, key (bytes or None),
    value (the JSON text, stored as jsonb)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise RowError("output is not UTF-8 text") from None
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise RowError(f"output is not JSON: {exc}") from None
    return (topic, partition, offset, key, text)


def row_builder(transform: str) -> RowBuilder:
    """The row builder for a transform's table (typed for ``sensor-features``)."""
    return sensor_row if transform == TYPED_TRANSFORM else generic_row
