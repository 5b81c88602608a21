"""The bytes of window state changes, for a compacted changelog: one record per window.

A change is ``(record key, record value)``. A window's record key is ``b"w"`` (or
``b"n"`` for a record without a key) then its start as 8 big-endian bytes, then the
input key's bytes; its value is the partial as 40 little-endian bytes (count as int64;
sum, m2, min, max as float64), or None for a window that closed (a tombstone). The
partition's stream time is the record keyed ``b"t"``, its value 8 big-endian bytes, and
the input offset the state reaches is the record keyed ``b"o"``, alike.
Plain code, no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

Key = bytes | None
Change = tuple[bytes, bytes | None]

STREAM_TIME_KEY = b"t"
POSITION_KEY = b"o"  # the input partition's next offset when the state was written
SHAPE_KEY = b"s"  # what the state means: the windows and the columns of custom aggregates
PARTIAL = np.dtype(
    [("count", "<i8"), ("sum", "<f8"), ("m2", "<f8"), ("min", "<f8"), ("max", "<f8")]
)
_START = struct.Struct(">q")


def window_key(key: Key, start: int) -> bytes:
    """The record key of window ``[start, ...)`` of input key ``key``."""
    if key is None:
        return b"n" + _START.pack(start)
    return b"w" + _START.pack(start) + key


def parse_window_key(record_key: bytes) -> tuple[Key, int]:
    """``(input key, window start)`` of a window's record key."""
    tag = record_key[:1]
    if tag not in (b"w", b"n") or len(record_key) < 9 or (tag == b"n" and len(record_key) != 9):
        raise ValueError(f"changelog key {record_key[:20]!r}: not a window key")
    (start,) = _START.unpack_from(record_key, 1)
    return (None if tag == b"n" else record_key[9:]), start


def stream_time_change(stream_time: int) -> Change:
    """The record holding a partition's stream time."""
    return STREAM_TIME_KEY, _START.pack(stream_time)


def position_change(offset: int) -> Change:
    """The record holding the input offset the state reaches (written in the same
    transaction as the consumer group's offset, so the two agree)."""
    return POSITION_KEY, _START.pack(offset)


def parse_stream_time(value: bytes) -> int:
    """The stream time in a ``b"t"`` record's value."""
    if len(value) != _START.size:
        raise ValueError(f"changelog stream time: {len(value)} bytes, expected {_START.size}")
    (stream_time,) = _START.unpack(value)
    return int(stream_time)


def partial_type(width: int = 0) -> np.dtype[np.void]:
    """A partial's layout: ``PARTIAL``, then ``width`` custom columns (float64 each)."""
    if not width:
        return PARTIAL
    return np.dtype([*PARTIAL.descr, ("extra", "<f8", (width,))])


def encode_partials(  # noqa: PLR0917 - the partial's columns, in their order
    count: NDArray[np.int64],
    total: NDArray[np.float64],
    m2: NDArray[np.float64],
    minimum: NDArray[np.float64],
    maximum: NDArray[np.float64],
    extra: NDArray[np.float64] | None = None,
) -> list[bytes]:
    """One value per partial, 40 bytes and 8 a custom column (packed in one numpy call,
    then cut)."""
    width = 0 if extra is None else extra.shape[1]
    layout = partial_type(width)
    packed = np.empty(len(count), dtype=layout)
    packed["count"], packed["sum"], packed["m2"] = count, total, m2
    packed["min"], packed["max"] = minimum, maximum
    if width:
        packed["extra"] = extra
    data = packed.tobytes()
    size = layout.itemsize
    return [data[i : i + size] for i in range(0, len(data), size)]


def decode_partials(values: list[bytes], width: int = 0) -> NDArray[np.void]:
    """The partials in their values, as one structured array (``partial_type(width)``)."""
    layout = partial_type(width)
    if any(len(value) != layout.itemsize for value in values):
        sizes = sorted({len(value) for value in values} - {layout.itemsize})
        raise ValueError(
            f"changelog window value of {sizes[0]} bytes, expected {layout.itemsize}: was it"
            " written with other custom aggregates? (their columns are part of the state)"
        )
    decoded = np.frombuffer(b"".join(values), dtype=layout)
    if not width:  # one shape for callers: an empty custom part
        widened = np.zeros(len(decoded), dtype=partial_type_empty())
        for name in PARTIAL.names or ():
            widened[name] = decoded[name]
        return widened
    return decoded


def partial_type_empty() -> np.dtype[np.void]:
    return np.dtype([*PARTIAL.descr, ("extra", "<f8", (0,))])


def parse_changes(
    changes: Iterable[Change], width: int = 0
) -> tuple[int | None, list[Key], NDArray[np.int64], NDArray[np.void]]:
    """The state in changelog records read in order, a later record of a window replacing
    an earlier one: ``(stream time or None, input keys, window starts, partials)``, one
    entry per window; a removed window's partial has count 0."""
    latest: dict[bytes, bytes | None] = {}
    stream_time: int | None = None
    for record_key, value in changes:
        if record_key == STREAM_TIME_KEY:
            stream_time = None if value is None else parse_stream_time(value)
        else:
            latest[record_key] = value
    windows = [parse_window_key(record_key) for record_key in latest]
    removed = bytes(partial_type(width).itemsize)  # count 0: no window holds that
    partials = decode_partials([removed if v is None else v for v in latest.values()], width)
    starts = np.fromiter((s for _, s in windows), dtype=np.int64, count=len(windows))
    return stream_time, [key for key, _ in windows], starts, partials
