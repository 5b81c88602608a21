"""One input partition's window state: open windows, stream time, closing and lateness.

Open windows live in a ``WindowTable``: numpy columns sorted by one int64 code per
window, ``window_index << bits | key_id`` (``key_id`` interns the input key; the store
widens ``bits`` as keys come and renumbers them when most have no window left). Finding
a batch's windows is one ``np.searchsorted``, merging is vectorised, new windows go in
with ``np.insert`` and closing cuts a prefix (the windows due first sort first). A batch
costs O(batch) numpy work plus one copy of the columns when it opens or closes windows;
the only Python loops are one per distinct key in a batch (interning) and one per window
closed or written to the changelog (each becomes an output or changelog record anyway).

Time follows Kafka Streams: stream time is the largest event time seen, in offset order;
a window ``[start, end)`` is closed once stream time reaches ``end + grace``. A record's
contribution to a closed window is dropped, at the stream time of that record (so how
records are cut into batches changes nothing); a record whose every window is closed is
late. Plain code, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from stream.windows import changelog
from stream.windows.aggregates import (
    Partials,
    Records,
    Value,
    per_record,
    readings,
    reduce_records,
)
from stream.windows.aggregates import mean as mean_of
from stream.windows.aggregates import std as std_of
from stream.windows.changelog import Change, Key
from stream.windows.custom import Extras
from stream.windows.spec import WindowSpec
from stream.windows.table import Tiers, WindowTable

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
    extra: Mapping[str, float] = field(default_factory=dict)  # custom aggregates by name


class WindowStore:
    """The open windows of one partition (see the module docstring)."""

    def __init__(self, spec: WindowSpec, extras: Extras | None = None) -> None:
        self.spec = spec
        self.extras = extras or Extras()
        self.stream_time: int | None = None
        self._keys: list[Key] = []
        self._ids: dict[Key, int] = {}
        self._bits = _FIRST_BITS
        self._table = Tiers(self.extras)
        self._removed: list[tuple[Key, int]] = []  # closed since the last take_changes()

    def __len__(self) -> int:
        """How many windows are open."""
        return len(self._table)

    @property
    def key_count(self) -> int:
        """How many input keys are held (keys with open windows, and recent others)."""
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        """Bytes held by the window columns (not the interned keys)."""
        return self._table.nbytes

    # --- records in ---------------------------------------------------------------------

    def add(
        self,
        keys: Sequence[Key],
        times: Sequence[int] | NDArray[np.int64],
        values: Sequence[Value] | NDArray[np.float64],
    ) -> NDArray[np.bool_]:
        """Add a batch of records, in offset order: input keys, event times (epoch ms) and
        values (a number or an array of numbers each). Returns which records are late
        (every window of theirs already closed): they changed nothing, and the caller
        dead-letters them with reason ``late``. A record with an empty array moves stream
        time and opens no window. Raises ``ValueError`` before changing anything for a
        value that is not numeric or a window whose code would not fit in int64."""
        stamps = np.asarray(times, dtype=np.int64)
        if not len(keys) == len(stamps) == len(values):
            raise ValueError(f"{len(keys)} keys, {len(stamps)} times, {len(values)} values")
        counts, flat = readings(values)
        return self.add_records(keys, per_record(stamps, counts, flat, self.extras))

    def add_records(self, keys: Sequence[Key], records: Records) -> NDArray[np.bool_]:
        """``add`` for records whose readings are already reduced per record (as worker
        processes send them): the same state, late records and windows."""
        stamps = records.time
        if len(keys) != len(records):
            raise ValueError(f"{len(keys)} keys, {len(records)} records")
        if len(stamps) == 0:
            return np.zeros(0, dtype=np.bool_)
        before = _INT64_MIN if self.stream_time is None else self.stream_time
        running = np.maximum.accumulate(np.maximum(stamps, before))  # with the record itself
        which, starts = self.spec.windows(stamps)
        open_ = self.spec.closes_at(starts) > running[which]
        which, starts = which[open_], starts[open_]
        late = np.ones(len(stamps), dtype=np.bool_)
        late[which] = False
        ids = self._intern_in_range(keys, starts)
        self.stream_time = int(running[-1])
        some = records.count[which] > 0  # a record without readings opens no window
        which, starts = which[some], starts[some]
        self._merge(reduce_records(ids[which], starts, records.take(which), self.extras))
        self._forget_keys()  # late records of new keys opened nothing: their ids go
        return late

    def _intern_in_range(self, keys: Sequence[Key], starts: NDArray[np.int64]) -> NDArray[np.int64]:
        """Intern ``keys`` and check that windows at ``starts`` can be coded; on
        ``ValueError`` the new keys are forgotten again, so nothing has changed."""
        before = len(self._keys)
        try:
            ids = self._intern(keys)
            _check_range(self.spec, starts, self._bits, len(self._keys))
        except ValueError:
            for key in self._keys[before:]:
                del self._ids[key]
            del self._keys[before:]
            raise
        return ids

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

    def _codes(self, key_id: NDArray[np.int64], start: NDArray[np.int64]) -> NDArray[np.int64]:
        return ((start // self.spec.advance_ms) << self._bits) | key_id

    def _recode(self, bits: int, remap: NDArray[np.int64] | None) -> None:
        """Widen the key-id field to ``bits`` and/or renumber key ids (``remap[old]``,
        increasing, so the order of the windows stays)."""
        if bits > self._bits:
            _check_range(
                self.spec,
                (self._table.flushed().code >> self._bits) * self.spec.advance_ms,
                bits,
                len(self._keys),
            )
        self._table.flushed().recode(self._bits, bits, remap)
        self._bits = bits

    def _merge(self, partials: Partials) -> None:
        """Merge a batch's per-window partials into the table, in code order."""
        codes = self._codes(partials.key_id, partials.start)
        order = np.argsort(codes, kind="stable")
        self._table.merge(codes[order], partials.take(order))

    # --- windows out --------------------------------------------------------------------

    def close(self, stream_time: int | None = None) -> list[WindowResult]:
        """Close every window with ``end + grace <= stream time``, remove it and return it,
        by window end then input key. ``stream_time`` (epoch ms), when given, first moves
        the partition's stream time forward to it (never back): quiet input closing on
        the wall clock."""
        if stream_time is not None:
            self._advance(stream_time)
        if self.stream_time is None or len(self._table) == 0:
            return []
        spec = self.spec
        last_closed = (self.stream_time - spec.size_ms - spec.grace_ms) // spec.advance_ms
        bound = min(max((last_closed + 1) << self._bits, _INT64_MIN), _INT64_MAX)
        if not self._table.any_below(bound):
            return []
        table = self._table.flushed()
        cut = int(np.searchsorted(table.code, bound, side="left"))
        closed = self._results(table, slice(0, cut))
        self._removed.extend((r.key, r.start) for r in closed)
        table.keep(np.arange(cut, len(table)))
        self._forget_keys()
        return closed

    def windows(self) -> list[WindowResult]:
        """Every open window's current aggregates, by window start then input key."""
        table = self._table.flushed()
        return self._results(table, slice(0, len(table)))

    def changed(self) -> list[WindowResult]:
        """The open windows changed since the changelog last took the changes (their
        current aggregates, for ``--emit update``), by window start then input key."""
        found = [r for t, rows in self._table.dirty_rows() for r in self._results(t, rows)]
        found.sort(key=_order)
        return found

    def _results(self, table: WindowTable, rows: slice | NDArray[np.intp]) -> list[WindowResult]:
        return _results(table, rows, self._keys, self._bits, self.spec)

    def _forget_keys(self) -> None:
        """Drop the keys without open windows once they outnumber the others (so a
        stream of ever-new keys keeps memory flat); the ids left keep their order."""
        if len(self._keys) <= 2 * len(self._table) + 1024:
            return
        live = np.unique(self._table.flushed().code & ((1 << self._bits) - 1))
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
        for table, rows in self._table.dirty_rows():
            changes += self._encode(table, rows)
        if self.stream_time is not None:
            changes.append(changelog.stream_time_change(self.stream_time))
        self._removed.clear()
        self._table.clear_dirty()
        return changes

    def snapshot(self) -> list[Change]:
        """Every open window and the stream time, as changelog records."""
        table = self._table.flushed()
        changes = self._encode(table, np.arange(len(table)))
        if self.stream_time is not None:
            changes.append(changelog.stream_time_change(self.stream_time))
        return changes

    def _encode(self, table: WindowTable, rows: NDArray[np.intp]) -> list[Change]:
        code = table.code[rows]
        starts = ((code >> self._bits) * self.spec.advance_ms).tolist()
        key_ids = (code & ((1 << self._bits) - 1)).tolist()
        values = changelog.encode_partials(
            table.count[rows],
            table.sum[rows],
            table.m2[rows],
            table.min[rows],
            table.max[rows],
            table.extra[rows],
        )
        keys = self._keys
        return [
            (changelog.window_key(keys[k], s), v)
            for k, s, v in zip(key_ids, starts, values, strict=True)
        ]

    def apply(self, changes: Iterable[Change]) -> None:
        """Apply changelog records in order (a later record of a window replaces an
        earlier one; None removes it), as a restore does. Applied windows are not marked
        changed: they are in the changelog already. Raises ``ValueError``, before changing
        anything, for a record that is not the store's (a bad key or value, or a window
        start off this spec's grid)."""
        restored, keys, starts, partials = changelog.parse_changes(changes, self.extras.width)
        kept = partials["count"] > 0
        misaligned = starts % self.spec.advance_ms != 0
        if misaligned.any():
            raise ValueError(
                f"changelog window start {int(starts[misaligned][0])} ms is not aligned to"
                f" {self.spec.describe()}: was the changelog written for other windows?"
            )
        codes = self._codes(self._intern_in_range(keys, starts), starts)
        table = self._table
        table.remove(np.sort(codes[~kept]))
        order = np.argsort(codes[kept], kind="stable")
        fields = [partials[name][kept][order] for name in ("count", "sum", "m2", "min", "max")]
        count, total, m2, minimum, maximum = fields
        extra = partials["extra"][kept][order].reshape(len(order), self.extras.width)
        table.put(codes[kept][order], (count, total, m2, minimum, maximum, extra))
        if restored is not None:
            self._advance(restored)

    def _advance(self, stream_time: int) -> None:
        """Move stream time forward to ``stream_time`` (never back)."""
        if self.stream_time is None or stream_time > self.stream_time:
            self.stream_time = stream_time


def _check_range(spec: WindowSpec, starts: NDArray[np.int64], bits: int, keys: int) -> None:
    """Refuse windows whose code would not fit in int64: window indexes beyond
    ``2**(62 - bits)`` (event times thousands of years away, or a tiny advance with
    millions of keys)."""
    if len(starts) == 0:
        return
    limit = 1 << (62 - bits)
    low, high = int(starts.min()), int(starts.max())
    if low // spec.advance_ms < -limit or high // spec.advance_ms >= limit:
        raise ValueError(
            f"window start {high if high >= 0 else low} ms is out of range for"
            f" {spec.describe()} with {keys} keys"
        )


def _results(
    table: WindowTable,
    rows: slice | NDArray[np.intp],
    keys: list[Key],
    bits: int,
    spec: WindowSpec,
) -> list[WindowResult]:
    """The windows at ``rows`` with their aggregates, by window start then input key."""
    code, count, total = table.code[rows], table.count[rows], table.sum[rows]
    start = (code >> bits) * spec.advance_ms
    key_id = (code & ((1 << bits) - 1)).tolist()
    mean, std = mean_of(count, total), std_of(count, table.m2[rows])
    if table.extras.width:
        builtin = {"count": count.astype(np.float64), "sum": total, "mean": mean, "std": std}
        builtin |= {"min": table.min[rows], "max": table.max[rows]}
        custom = table.extras.results(builtin, table.extra[rows])
        extra = [dict(zip(custom, v, strict=True)) for v in zip(*custom.values(), strict=True)]
    else:
        extra = [{}] * len(code)
    results = [
        WindowResult(keys[k], s, s + spec.size_ms, n, t, mu, sd, lo, hi, x)
        for k, s, n, t, mu, sd, lo, hi, x in zip(
            key_id,
            start.tolist(),
            count.tolist(),
            total.tolist(),
            mean.tolist(),
            std.tolist(),
            table.min[rows].tolist(),
            table.max[rows].tolist(),
            extra,
            strict=True,
        )
    ]
    results.sort(key=_order)
    return results


def _order(r: WindowResult) -> tuple[int, bool, bytes]:
    """Windows by start, then input key (a null key first)."""
    return (r.start, r.key is not None, r.key or b"")
