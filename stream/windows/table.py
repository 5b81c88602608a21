"""Open windows as numpy columns sorted by one int64 code per window.

The code is ``window_index << bits | key_id`` (``window_index = start // advance``), so
windows sort by start, then key id, and the windows due to close first are a prefix.
Columns: ``count`` (int64), ``sum``, ``m2``, ``min``, ``max`` (float64), ``dirty``
(changed since the changelog last took them): 49 bytes a window with its code; and
``extra``, the columns of custom aggregates (``stream.windows.custom``), 8 bytes each. Lookups
are one ``np.searchsorted``; merges, inserts and removals are whole-array numpy calls
(an insert or removal copies the columns once). Plain code, no I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from stream.windows.aggregates import Partials, merge
from stream.windows.custom import Extras

FRESH_MIN = 4096  # windows the small table of Tiers holds before it may be merged
Floats = NDArray[np.float64]
# count, sum, m2, min, max, extra
Columns = tuple[NDArray[np.int64], Floats, Floats, Floats, Floats, Floats]


class WindowTable:
    """The columns of the open windows, in code order."""

    def __init__(self, extras: Extras | None = None) -> None:
        self.extras = extras or Extras()
        self.extra = np.zeros((0, self.extras.width))
        self.code = np.empty(0, dtype=np.int64)
        self.count = np.empty(0, dtype=np.int64)
        self.sum = np.empty(0, dtype=np.float64)
        self.m2 = np.empty(0, dtype=np.float64)
        self.min = np.empty(0, dtype=np.float64)
        self.max = np.empty(0, dtype=np.float64)
        self.dirty = np.empty(0, dtype=np.bool_)

    def __len__(self) -> int:
        return len(self.code)

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns."""
        columns = (self.code, self.count, self.sum, self.m2, self.min, self.max, self.dirty)
        return sum(c.nbytes for c in columns) + self.extra.nbytes

    def find(self, codes: NDArray[np.int64]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        """For sorted ``codes``: the row where each is or would go, and which exist."""
        pos = np.searchsorted(self.code, codes)
        found = pos < len(self.code)
        found[found] = self.code[pos[found]] == codes[found]
        return pos, found

    def merge(
        self, codes: NDArray[np.int64], p: Partials, *, insert: bool = True
    ) -> NDArray[np.bool_]:
        """Merge partials (unique ``codes``, sorted, in the partials' order) into the
        windows: existing ones with Chan's update and min/max, new ones inserted (unless
        not ``insert``). Marks them changed; returns which were there."""
        pos, found = self.find(codes)
        rows = pos[found]
        self.count[rows], self.sum[rows], self.m2[rows] = merge(
            (self.count[rows], self.sum[rows], self.m2[rows]),
            (p.count[found], p.sum[found], p.m2[found]),
        )
        self.min[rows] = np.minimum(self.min[rows], p.min[found])
        self.max[rows] = np.maximum(self.max[rows], p.max[found])
        extra = self._extra_of(p)
        if self.extras.width:
            self.extra[rows] = self.extras.merge(self.extra[rows], extra[found])
        self.dirty[rows] = True
        new = ~found
        if insert:
            columns = (p.count[new], p.sum[new], p.m2[new], p.min[new], p.max[new], extra[new])
            self.insert(pos[new], codes[new], columns, dirty=True)
        return found

    def _extra_of(self, p: Partials) -> Floats:
        if p.extra.shape == (len(p), self.extras.width):
            return p.extra
        return np.zeros((len(p), self.extras.width))

    def put(self, codes: NDArray[np.int64], columns: Columns) -> None:
        """Set windows (unique ``codes``, sorted) to the given values, replacing what
        they held; not marked changed (as a restore does)."""
        pos, found = self.find(codes)
        rows = pos[found]
        count, total, m2, minimum, maximum, extra = columns
        self.count[rows], self.sum[rows], self.m2[rows] = count[found], total[found], m2[found]
        self.min[rows], self.max[rows] = minimum[found], maximum[found]
        self.extra[rows] = extra[found]
        new = ~found
        rest = (count[new], total[new], m2[new], minimum[new], maximum[new], extra[new])
        self.insert(pos[new], codes[new], rest, dirty=False)

    def insert(
        self,
        pos: NDArray[np.intp],
        codes: NDArray[np.int64],
        columns: Columns,
        dirty: bool | NDArray[np.bool_],
    ) -> None:
        """Insert new windows before rows ``pos`` (sorted codes keep the order)."""
        if len(pos) == 0:
            return
        count, total, m2, minimum, maximum, extra = columns
        self.code = np.insert(self.code, pos, codes)
        self.extra = np.insert(self.extra, pos, extra, axis=0)
        self.count = np.insert(self.count, pos, count)
        self.sum = np.insert(self.sum, pos, total)
        self.m2 = np.insert(self.m2, pos, m2)
        self.min = np.insert(self.min, pos, minimum)
        self.max = np.insert(self.max, pos, maximum)
        self.dirty = np.insert(self.dirty, pos, dirty)

    def remove(self, codes: NDArray[np.int64]) -> None:
        """Remove the windows with these (sorted) codes; codes not held are ignored."""
        pos, found = self.find(codes)
        if found.any():
            self.keep(np.setdiff1d(np.arange(len(self.code)), pos[found], assume_unique=True))

    def keep(self, rows: NDArray[np.intp]) -> None:
        """Keep only the windows at ``rows`` (increasing)."""
        self.code, self.count, self.sum = self.code[rows], self.count[rows], self.sum[rows]
        self.m2, self.min, self.max = self.m2[rows], self.min[rows], self.max[rows]
        self.dirty, self.extra = self.dirty[rows], self.extra[rows]

    def recode(self, bits: int, new_bits: int, remap: NDArray[np.int64] | None) -> None:
        """Move the key-id field from ``bits`` to ``new_bits`` wide and/or renumber key
        ids (``remap[old]``, increasing, so the order of the windows stays)."""
        key_id = self.code & ((1 << bits) - 1)
        if remap is not None:
            key_id = remap[key_id]
        self.code = ((self.code >> bits) << new_bits) | key_id


class Tiers:
    """The open windows as two sorted tables: a large one and a small one that new
    windows go into, merged into the large one once it holds an eighth as many. A batch
    opening windows then copies the small table, not every window (np.insert copies
    all): opening a million windows costs a few copies of the state, not one per batch.
    Whatever needs one sorted view (closing windows, snapshots, restores) merges first;
    closing does only when a window is due, about once per window period."""

    def __init__(self, extras: Extras | None = None) -> None:
        self.extras = extras or Extras()
        self.main = WindowTable(self.extras)
        self.fresh = WindowTable(self.extras)

    def __len__(self) -> int:
        return len(self.main) + len(self.fresh)

    @property
    def nbytes(self) -> int:
        return self.main.nbytes + self.fresh.nbytes

    def merge(self, codes: NDArray[np.int64], p: Partials) -> None:
        """Merge partials (unique sorted ``codes``) into the windows; new ones go into
        the small table."""
        new = ~self.main.merge(codes, p, insert=False)
        if new.any():
            self.fresh.merge(codes[new], p.take(np.flatnonzero(new)))
        if len(self.fresh) > max(FRESH_MIN, len(self.main) // 8):
            self.flushed()

    def flushed(self) -> WindowTable:
        """The windows as one sorted table (the small one merged into the large one)."""
        fresh = self.fresh
        if len(fresh):
            pos = np.searchsorted(self.main.code, fresh.code)
            columns = (fresh.count, fresh.sum, fresh.m2, fresh.min, fresh.max, fresh.extra)
            self.main.insert(pos, fresh.code, columns, dirty=fresh.dirty)
            self.fresh = WindowTable(self.extras)
        return self.main

    def put(self, codes: NDArray[np.int64], columns: Columns) -> None:
        """Set windows (unique sorted ``codes``) to these values, as a restore does: in
        place where they are, new ones into the small table (not marked changed)."""
        pos, found = self.main.find(codes)
        rows = pos[found]
        main = self.main
        count, total, m2, minimum, maximum, extra = columns
        main.count[rows], main.sum[rows], main.m2[rows] = count[found], total[found], m2[found]
        main.min[rows], main.max[rows], main.extra[rows] = (
            minimum[found],
            maximum[found],
            extra[found],
        )
        new = ~found
        rest = (count[new], total[new], m2[new], minimum[new], maximum[new], extra[new])
        self.fresh.put(codes[new], rest)
        if len(self.fresh) > max(FRESH_MIN, len(self.main) // 8):
            self.flushed()

    def remove(self, codes: NDArray[np.int64]) -> None:
        """Remove the windows with these (sorted) codes, wherever they are."""
        self.main.remove(codes)
        self.fresh.remove(codes)

    def any_below(self, bound: int) -> bool:
        """Whether a window's code is below ``bound`` (one is due to close)."""
        return any(len(t) and int(t.code[0]) < bound for t in (self.main, self.fresh))

    def dirty_rows(self) -> list[tuple[WindowTable, NDArray[np.intp]]]:
        """Each table with the rows changed since the dirty marks were last cleared."""
        return [(t, np.flatnonzero(t.dirty)) for t in (self.main, self.fresh)]

    def clear_dirty(self) -> None:
        self.main.dirty[:] = False
        self.fresh.dirty[:] = False
