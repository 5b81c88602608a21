"""One input partition's window state: open windows, stream time, closing and lateness.

Open windows live in numpy columns (count, sum, m2, min, max: 40 bytes a window) sorted
by one int64 code per window, ``window_index << bits | key_id`` (``window_index = start //
advance``; ``key_id`` interns the input key). Finding a batch's windows is one
``np.searchsorted``, merging is vectorised, new windows go in with ``np.insert`` and
closing cuts a prefix (the windows due first sort first). A batch costs O(batch) numpy
work plus one copy of the columns when it opens or closes windows; the only Python loops
are one per distinct key in a batch (interning) and one per window closed or written to
the changelog (each becomes an output or changelog record anyway).

Time follows Kafka Streams: stream time is the largest event time seen, in offset order;
a window ``[start, end)`` is closed once stream time reaches ``end + grace``. A record's
contribution to a closed window is dropped, at the stream time of that record (so how
records are cut into batches changes nothing); a record whose every window is closed is
late. Plain code, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from stream.windows import changelog
from stream.windows.aggregates import Partials, Value, merge, readings, reduce_batch
from stream.windows.aggregates import mean as mean_of
from stream.windows.aggregates import std as std_of
from stream.windows.changelog import Change, Key
from stream.windows.spec import WindowSpec

_INT64_MIN = int(np.iinfo(np.int64).min)
_INT64_MAX = int(np.iinfo(np.int64).max)
_FIRST_BITS = 16  # room for 65,536 key ids before the codes are widened


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One window's aggregates, ``[start, end)`` in epoch milliseconds."""

    key: Key
    start: int
    end: int
    count: int
    sum: float
    mean: float
    std: float
    min: float
    max: float


class WindowStore:
    """The open windows of one partition (see the module docstring)."""

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.stream_time: int | None = None
        self._keys: list[Key] = []
        self._ids: dict[Key, int] = {}
        self._bits = _FIRST_BITS
        self._code = np.empty(0, dtype=np.int64)
        self._count = np.empty(0, dtype=np.int64)
        self._sum = np.empty(0, dtype=np.float64)
        self._m2 = np.empty(0, dtype=np.float64)
        self._min = np.empty(0, dtype=np.float64)
        self._max = np.empty(0, dtype=np.float64)
        self._dirty = np.empty(0, dtype=np.bool_)  # changed since the last take_changes()
        self._removed: list[tuple[Key, int]] = []  # closed since the last take_changes()

    def __len__(self) -> int:
        """How many windows are open."""
        return len(self._code)

    @property
    def nbytes(self) -> int:
        """Bytes held by the window columns (not the interned keys)."""
        columns = (self._code, self._count, self._sum, self._m2, self._min, self._max)
        return sum(c.nbytes for c in columns) + self._dirty.nbytes

    # --- records in ---------------------------------------------------------------------

    def add(
        self, keys: Sequence[Key], times: Sequence[int] | NDArray[np.int64], values: Sequence[Value]
    ) -> NDArray[np.bool_]:
        """Add a batch of records, in offset order: input keys, event times (epoch ms) and
        values (a number or an array of numbers each). Returns which records are late
        (every window of theirs already closed): they changed nothing, and the caller
        dead-letters them with reason ``late``. Raises ``ValueError`` for a value that is
        not numeric, before changing anything."""
        stamps = np.asarray(times, dtype=np.int64)
        if not len(keys) == len(stamps) == len(values):
            raise ValueError(f"{len(keys)} keys, {len(stamps)} times, {len(values)} values")
        if len(stamps) == 0:
            return np.zeros(0, dtype=np.bool_)
        per_record, flat = readings(values)
        before = _INT64_MIN if self.stream_time is None else self.stream_time
        running = np.maximum.accumulate(np.maximum(stamps, before))  # with the record itself
        which, starts = self.spec.windows(stamps)
        open_ = self.spec.closes_at(starts) > running[which]
        which, starts = which[open_], starts[open_]
        late = np.ones(len(stamps), dtype=np.bool_)
        late[which] = False
        self._check_range(starts)
        ids = self._intern(keys)
        self.stream_time = int(running[-1])
        # One entry per (window, reading): each window entry repeated by its record's readings.
        reps = per_record[which]
        entry = np.repeat(np.arange(len(which)), reps)
        first_reading = (np.cumsum(per_record) - per_record)[which]
        within = np.arange(len(entry)) - np.repeat(np.cumsum(reps) - reps, reps)
        reading = first_reading[entry] + within
        self._merge(reduce_batch(ids[which][entry], starts[entry], flat[reading]))
        return late

    def _intern(self, keys: Sequence[Key]) -> NDArray[np.int64]:
        """The key id of each key, new keys numbered in first-seen order (one Python step
        per distinct key; the per-record mapping runs in ``np.fromiter``)."""
        ids = self._ids
        for key in dict.fromkeys(keys):
            if key not in ids:
                ids[key] = len(self._keys)
                self._keys.append(key)
        while len(self._keys) > 1 << self._bits:
            self._recode(self._bits + 4, None)
        return np.fromiter(map(ids.__getitem__, keys), dtype=np.int64, count=len(keys))

    def _check_range(self, starts: NDArray[np.int64]) -> None:
        """Refuse windows whose code would not fit in int64 (event times thousands of
        years from now, or tiny advances with millions of keys)."""
        if len(starts) == 0:
            return
        limit = 1 << (62 - self._bits - 4)  # room for the key ids to grow once more
        low, high = int(starts.min()) // self.spec.advance_ms, int(starts.max())
        if low < -limit or high // self.spec.advance_ms >= limit:
            raise ValueError(f"event time {high} ms is out of range for {self.spec.describe()}")

    def _codes(self, key_id: NDArray[np.int64], start: NDArray[np.int64]) -> NDArray[np.int64]:
        return ((start // self.spec.advance_ms) << self._bits) | key_id

    def _recode(self, bits: int, remap: NDArray[np.int64] | None) -> None:
        """Widen the key-id field to ``bits`` and/or renumber key ids (``remap[old]``,
        increasing, so the order of the windows stays)."""
        key_id = self._code & ((1 << self._bits) - 1)
        if remap is not None:
            key_id = remap[key_id]
        self._code = ((self._code >> self._bits) << bits) | key_id
        self._bits = bits

    def _merge(self, partials: Partials) -> None:
        """Merge per-window partials into the columns (vectorised): existing windows with
        Chan's update, new ones inserted in code order. Marks them changed."""
        codes = self._codes(partials.key_id, partials.start)
        order = np.argsort(codes, kind="stable")
        codes, p = codes[order], partials.take(order)
        pos, found = self._find(codes)
        rows = pos[found]
        self._count[rows], self._sum[rows], self._m2[rows] = merge(
            (self._count[rows], self._sum[rows], self._m2[rows]),
            (p.count[found], p.sum[found], p.m2[found]),
        )
        self._min[rows] = np.minimum(self._min[rows], p.min[found])
        self._max[rows] = np.maximum(self._max[rows], p.max[found])
        self._dirty[rows] = True
        new = ~found
        self._insert(
            pos[new], codes[new], (p.count[new], p.sum[new], p.m2[new], p.min[new], p.max[new])
        )

    def _find(self, codes: NDArray[np.int64]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        """For sorted ``codes``: where each is or would go in the columns, and which exist."""
        pos = np.searchsorted(self._code, codes)
        found = pos < len(self._code)
        found[found] = self._code[pos[found]] == codes[found]
        return pos, found

    def _insert(
        self,
        pos: NDArray[np.intp],
        codes: NDArray[np.int64],
        values: tuple[
            NDArray[np.int64],
            NDArray[np.float64],
            NDArray[np.float64],
            NDArray[np.float64],
            NDArray[np.float64],
        ],
        dirty: bool = True,
    ) -> None:
        if len(pos) == 0:
            return
        count, total, m2, minimum, maximum = values
        self._code = np.insert(self._code, pos, codes)
        self._count = np.insert(self._count, pos, count)
        self._sum = np.insert(self._sum, pos, total)
        self._m2 = np.insert(self._m2, pos, m2)
        self._min = np.insert(self._min, pos, minimum)
        self._max = np.insert(self._max, pos, maximum)
        self._dirty = np.insert(self._dirty, pos, dirty)

    # --- windows out --------------------------------------------------------------------

    def close(self, stream_time: int | None = None) -> list[WindowResult]:
        """Close every window with ``end + grace <= stream time``, remove it and return it,
        by window end then input key. ``stream_time`` (epoch ms), when given, first moves
        the partition's stream time forward to it (never back): quiet input closing on
        the wall clock."""
        if stream_time is not None:
            self.stream_time = max(stream_time, self.stream_time or _INT64_MIN)
        if self.stream_time is None or len(self._code) == 0:
            return []
        spec = self.spec
        last_closed = (self.stream_time - spec.size_ms - spec.grace_ms) // spec.advance_ms
        bound = min(max((last_closed + 1) << self._bits, _INT64_MIN), _INT64_MAX)
        cut = int(np.searchsorted(self._code, bound, side="left"))
        if cut == 0:
            return []
        closed = self._results(slice(0, cut))
        self._removed.extend((r.key, r.start) for r in closed)
        self._keep(np.arange(cut, len(self._code)))
        self._forget_keys()
        return closed

    def windows(self) -> list[WindowResult]:
        """Every open window's current aggregates, by window start then input key."""
        return self._results(slice(0, len(self._code)))

    def _results(self, rows: slice) -> list[WindowResult]:
        code, count, total = self._code[rows], self._count[rows], self._sum[rows]
        start = (code >> self._bits) * self.spec.advance_ms
        key_id = (code & ((1 << self._bits) - 1)).tolist()
        keys = self._keys
        results = [
            WindowResult(keys[k], s, s + self.spec.size_ms, n, t, mu, sd, lo, hi)
            for k, s, n, t, mu, sd, lo, hi in zip(
                key_id,
                start.tolist(),
                count.tolist(),
                total.tolist(),
                mean_of(count, total).tolist(),
                std_of(count, self._m2[rows]).tolist(),
                self._min[rows].tolist(),
                self._max[rows].tolist(),
                strict=True,
            )
        ]
        results.sort(key=lambda r: (r.start, r.key is not None, r.key or b""))
        return results

    def _keep(self, rows: NDArray[np.intp]) -> None:
        """Keep only the windows at ``rows`` (increasing)."""
        self._code, self._count, self._sum = self._code[rows], self._count[rows], self._sum[rows]
        self._m2, self._min, self._max = self._m2[rows], self._min[rows], self._max[rows]
        self._dirty = self._dirty[rows]

    def _forget_keys(self) -> None:
        """Drop the keys without open windows once they outnumber the others (so a
        stream of ever-new keys keeps memory flat); the ids left keep their order."""
        if len(self._keys) <= 2 * len(self._code) + 1024:
            return
        live = np.unique(self._code & ((1 << self._bits) - 1))
        remap = np.zeros(len(self._keys), dtype=np.int64)
        remap[live] = np.arange(len(live), dtype=np.int64)
        self._recode(self._bits, remap)
        self._keys = [self._keys[i] for i in live.tolist()]
        self._ids = {key: i for i, key in enumerate(self._keys)}

    # --- changelog ----------------------------------------------------------------------

    def take_changes(self) -> list[Change]:
        """The changelog records since the last call (tombstones for closed windows, the
        new value of each changed window, then the stream time), and forget them."""
        changes: list[Change] = [(changelog.window_key(k, s), None) for k, s in self._removed]
        changes += self._encode(np.flatnonzero(self._dirty))
        if self.stream_time is not None:
            changes.append(changelog.stream_time_change(self.stream_time))
        self._removed.clear()
        self._dirty[:] = False
        return changes

    def snapshot(self) -> list[Change]:
        """Every open window and the stream time, as changelog records."""
        changes = self._encode(np.arange(len(self._code)))
        if self.stream_time is not None:
            changes.append(changelog.stream_time_change(self.stream_time))
        return changes

    def _encode(self, rows: NDArray[np.intp]) -> list[Change]:
        code = self._code[rows]
        starts = ((code >> self._bits) * self.spec.advance_ms).tolist()
        key_ids = (code & ((1 << self._bits) - 1)).tolist()
        values = changelog.encode_partials(
            self._count[rows], self._sum[rows], self._m2[rows], self._min[rows], self._max[rows]
        )
        keys = self._keys
        return [
            (changelog.window_key(keys[k], s), v)
            for k, s, v in zip(key_ids, starts, values, strict=True)
        ]

    def apply(self, changes: Iterable[Change]) -> None:
        """Apply changelog records in order (a later record of a window replaces an
        earlier one; None removes it), as a restore does. Applied windows are not marked
        changed: they are in the changelog already."""
        latest: dict[bytes, bytes | None] = {}
        for record_key, value in changes:
            if record_key == changelog.STREAM_TIME_KEY:
                if value is not None:
                    restored = changelog.parse_stream_time(value)
                    self.stream_time = max(restored, self.stream_time or _INT64_MIN)
            else:
                latest[record_key] = value
        windows = [changelog.parse_window_key(k) for k in latest]
        keys = [key for key, _ in windows]
        starts = np.fromiter((s for _, s in windows), dtype=np.int64, count=len(windows))
        self._check_range(starts)
        codes = self._codes(self._intern(keys), starts)
        gone = np.fromiter((v is None for v in latest.values()), dtype=np.bool_, count=len(codes))
        pos, found = self._find(np.sort(codes[gone]))
        self._keep(np.setdiff1d(np.arange(len(self._code)), pos[found], assume_unique=True))
        kept = ~gone
        order = np.argsort(codes[kept], kind="stable")
        values = [v for v in latest.values() if v is not None]
        partials = changelog.decode_partials([values[i] for i in order.tolist()])
        codes = codes[kept][order]
        pos, found = self._find(codes)
        rows = pos[found]
        self._count[rows], self._sum[rows] = partials["count"][found], partials["sum"][found]
        self._m2[rows], self._min[rows] = partials["m2"][found], partials["min"][found]
        self._max[rows] = partials["max"][found]
        new = ~found
        fields = tuple(partials[f][new] for f in ("count", "sum", "m2", "min", "max"))
        self._insert(pos[new], codes[new], fields, dirty=False)  # type: ignore[arg-type]
