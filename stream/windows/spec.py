"""What windows to compute: the window shape, the grace period and the aggregates.

Plain parsing, no I/O. Times are epoch milliseconds (int64). Windows are aligned to the
epoch and half-open, ``[start, end)``: a tumbling window of size S starts at every
multiple of S; a hopping window of size S and advance A starts at every multiple of A,
so one event time falls in up to ``ceil(S / A)`` windows. Bad input raises
``ValueError`` with one line that names the text and what is wrong with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

AGGREGATES = ("count", "sum", "mean", "std", "min", "max")
UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")

Kind = Literal["tumbling", "hopping"]


def parse_duration(text: str, *, what: str = "duration", allow_zero: bool = False) -> int:
    """Milliseconds in ``text``: a whole number and a unit (``500ms``, ``60s``, ``5m``,
    ``1h``, ``1d``). Zero only when ``allow_zero`` (a grace period may be ``0s``)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{what} {text!r}: expected a whole number and a unit (ms, s, m, h, d), as 60s or 500ms"
        )
    ms = int(match.group(1)) * UNITS_MS[match.group(2)]
    if ms == 0 and not allow_zero:
        raise ValueError(f"{what} {text!r}: must be more than zero")
    return ms


def parse_aggregates(text: str) -> tuple[str, ...]:
    """The aggregate names in ``text`` (comma-separated, in the order given, each once)."""
    names = tuple(part.strip() for part in text.split(","))
    if not text.strip() or any(not name for name in names):
        raise ValueError(f"aggregates {text!r}: expected a comma-separated list of {AGGREGATES}")
    unknown = [name for name in names if name not in AGGREGATES and ":" not in name]
    if unknown:
        raise ValueError(
            f"aggregates {text!r}: unknown {', '.join(unknown)}"
            f" (choose from {', '.join(AGGREGATES)}, or give package.module:name of one of"
            " your own)"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"aggregates {text!r}: {', '.join(repeated)} given more than once")
    return names


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Window shape and closing rule: ``size_ms``, ``advance_ms`` (equal to the size for
    tumbling windows) and ``grace_ms``. A window ``[start, end)`` closes once stream time
    reaches ``end + grace`` (Kafka Streams' rule)."""

    kind: Kind
    size_ms: int
    advance_ms: int
    grace_ms: int = 0

    def __post_init__(self) -> None:
        if self.size_ms <= 0 or self.advance_ms <= 0 or self.grace_ms < 0:
            raise ValueError(f"window {self.describe()}: sizes must be positive, grace >= 0")
        if self.advance_ms > self.size_ms:
            raise ValueError(f"window {self.describe()}: the advance must not exceed the size")
        if self.kind == "tumbling" and self.advance_ms != self.size_ms:
            raise ValueError(f"window {self.describe()}: a tumbling window advances by its size")

    @classmethod
    def parse(cls, window: str, grace: str = "0s") -> WindowSpec:
        """``tumbling:SIZE`` or ``hopping:SIZE/ADVANCE``, and a grace period (``5s``)."""
        kind, sep, rest = window.strip().partition(":")
        grace_ms = parse_duration(grace, what="grace", allow_zero=True)
        if not sep or kind not in ("tumbling", "hopping"):
            raise ValueError(
                f"window {window!r}: expected tumbling:SIZE or hopping:SIZE/ADVANCE,"
                " as tumbling:60s"
            )
        if kind == "tumbling":
            if "/" in rest:
                raise ValueError(f"window {window!r}: a tumbling window takes no advance")
            size = parse_duration(rest, what=f"window {window!r}: size")
            return cls("tumbling", size, size, grace_ms)
        size_text, slash, advance_text = rest.partition("/")
        if not slash:
            raise ValueError(f"window {window!r}: a hopping window needs SIZE/ADVANCE, as 5m/1m")
        size = parse_duration(size_text, what=f"window {window!r}: size")
        advance = parse_duration(advance_text, what=f"window {window!r}: advance")
        if advance > size:
            raise ValueError(f"window {window!r}: the advance must not exceed the size")
        return cls("hopping", size, advance, grace_ms)

    def describe(self) -> str:
        """The spec as the user writes it (``hopping:300000ms/60000ms``, grace in ms)."""
        shape = f"{self.size_ms}ms" + ("" if self.kind == "tumbling" else f"/{self.advance_ms}ms")
        return f"{self.kind}:{shape} grace {self.grace_ms}ms"

    @property
    def max_windows(self) -> int:
        """The most windows one event time falls in: ``ceil(size / advance)``."""
        return -(-self.size_ms // self.advance_ms)

    def windows(self, times: NDArray[np.int64]) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
        """The windows of each event time, vectorised: ``(which, starts)`` with one entry per
        (time, window it falls in), ``which`` the index into ``times``; per time, newest
        window first."""
        times = np.asarray(times, dtype=np.int64)
        last = (times // self.advance_ms) * self.advance_ms  # floor, also before the epoch
        n = self.max_windows
        if n == 1:
            return np.arange(len(times), dtype=np.intp), last
        back = np.arange(n, dtype=np.int64) * self.advance_ms
        starts = last[:, None] - back[None, :]
        inside = starts > (times - self.size_ms)[:, None]
        which = np.broadcast_to(np.arange(len(times), dtype=np.intp)[:, None], starts.shape)
        return which[inside], starts[inside]

    def closes_at(self, starts: NDArray[np.int64]) -> NDArray[np.int64]:
        """The stream time at which each window closes: ``start + size + grace``."""
        return np.asarray(starts, dtype=np.int64) + (self.size_ms + self.grace_ms)
