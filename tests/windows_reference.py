"""A plain reference computation of windowed aggregates, for the broker tests of
``--window``: written from the rules users are told, sharing no code with the service.

The rules: windows are aligned to the epoch and half-open, ``[start, end)``; a tumbling
window of size S starts at every multiple of S, a hopping one of size S and advance A at
every multiple of A. Per input partition, stream time is the largest event time read so
far in offset order (the record itself included). A window closes once stream time
reaches ``end + grace``; a record adds its readings to each of its windows still open at
its own stream time, and a record none of whose windows is open is late. A closed window
is one output: ``count``, ``sum``, ``mean``, ``std`` (population), ``min``, ``max``.

Everything here is one record and one window at a time, in plain Python: slow, and
obviously right. Sums use ``math.fsum`` (exact rounding) and the standard deviation the
two-pass formula, so they are a different computation from the service's.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

MS = 1000  # milliseconds a second
AGGREGATES = ("count", "sum", "mean", "std", "min", "max")
RELATIVE = 1e-9  # the tolerance for sum, mean and std


@dataclass(frozen=True)
class Shape:
    """Window size, advance (the size for tumbling windows) and grace, in milliseconds."""

    size: int
    advance: int
    grace: int = 0

    @classmethod
    def tumbling(cls, size: int, grace: int = 0) -> Shape:
        return cls(size, size, grace)

    def starts(self, time: int) -> list[int]:
        """Every window start whose window holds ``time``, oldest first."""
        latest = time - time % self.advance  # Python's % floors: right before 1970 too
        out = []
        start = latest
        while start > time - self.size:
            out.append(start)
            start -= self.advance
        return out[::-1]

    def closes(self, start: int) -> int:
        """The stream time at which the window starting at ``start`` closes."""
        return start + self.size + self.grace


@dataclass(frozen=True)
class Window:
    """One closed (or still open) window of one key, with every aggregate."""

    key: bytes | None
    start: int
    end: int
    count: int
    sum: float
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, key: bytes | None, start: int, end: int, readings: Sequence[float]) -> Window:
        n = len(readings)
        total = math.fsum(readings)
        mean = total / n
        spread = math.fsum((x - mean) ** 2 for x in readings)
        return cls(
            key, start, end, n, total, mean, math.sqrt(spread / n), min(readings), max(readings)
        )

    @property
    def ident(self) -> tuple[bytes | None, int]:
        return self.key, self.start


@dataclass(frozen=True)
class Event:
    """One input record as the reference reads it."""

    partition: int
    offset: int
    key: bytes | None
    time: int | None  # epoch ms; None: the record has no usable event time (not windowed)
    readings: tuple[float, ...]


@dataclass
class Outcome:
    """What the reference says a run gives."""

    closed: list[Window] = field(default_factory=list)  # in the order they close
    open: list[Window] = field(default_factory=list)  # still open at the end
    late: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)
    stream_time: dict[int, int] = field(default_factory=dict)  # per partition


def event_of(
    record: Any, value_field: str = "values", time_field: str | None = "ts"
) -> Event | None:
    """The event in a consumer record (``time_field`` None: the Kafka timestamp), or None
    for a record the windows do not take (not JSON, no numbers, no event time)."""
    try:
        body = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or value_field not in body:
        return None
    raw = body[value_field]
    numbers = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in numbers):
        return None
    if time_field is None:
        time = int(record.timestamp)
    else:
        seconds = body.get(time_field)
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            return None
        time = round(seconds * 1_000_000) // MS  # the millisecond it falls in
    return Event(record.partition, record.offset, record.key, time, tuple(map(float, numbers)))


def run(events: Iterable[Event], shape: Shape, idle_until: dict[int, int] | None = None) -> Outcome:
    """The windows of ``events`` (any order across partitions; each partition is read in
    offset order). ``idle_until``: per partition, a stream time it reaches at the end
    without records (quiet input closing windows on the wall clock)."""
    by_partition: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        by_partition[event.partition].append(event)
    outcome = Outcome()
    for partition in sorted(by_partition | dict.fromkeys(idle_until or {})):
        todo = sorted(by_partition.get(partition, []), key=lambda e: e.offset)
        _partition(partition, todo, shape, outcome, (idle_until or {}).get(partition))
    return outcome


def _partition(
    partition: int, events: list[Event], shape: Shape, outcome: Outcome, idle: int | None
) -> None:
    stream_time: int | None = None
    windows: dict[int, dict[bytes | None, list[float]]] = {}  # start -> key -> readings
    starts: list[int] = []  # a heap of the open windows' starts: the first to close on top

    def close() -> None:
        assert stream_time is not None
        while starts and shape.closes(starts[0]) <= stream_time:
            start = heapq.heappop(starts)
            due = windows.pop(start)
            for key in sorted(due, key=lambda k: (k is not None, k or b"")):
                outcome.closed.append(Window.of(key, start, start + shape.size, due[key]))

    for event in events:
        assert event.time is not None
        stream_time = event.time if stream_time is None else max(stream_time, event.time)
        still_open = [s for s in shape.starts(event.time) if shape.closes(s) > stream_time]
        if not still_open:
            outcome.late.append((partition, event.offset))
            continue
        if event.readings:
            for start in still_open:
                if start not in windows:
                    windows[start] = {}
                    heapq.heappush(starts, start)
                windows[start].setdefault(event.key, []).extend(event.readings)
        close()
    if idle is not None and stream_time is not None and idle > stream_time:
        stream_time = idle
        close()
    if stream_time is not None:
        outcome.stream_time[partition] = stream_time
    outcome.open += [
        Window.of(key, start, start + shape.size, readings)
        for start in sorted(windows)
        for key, readings in windows[start].items()
    ]


# --- comparing the service's outputs with the reference ------------------------------------


def close_enough(have: float | None, want: float, relative: float = RELATIVE) -> bool:
    """``have`` within ``relative`` of ``want`` (or, for values near zero, of the scale
    the value came from: a tiny absolute floor)."""
    if have is None:
        return False
    return abs(have - want) <= relative * max(abs(want), 1e-6)


def differences(
    expected: Iterable[Window], outputs: Iterable[Any], aggregates: Sequence[str] = AGGREGATES
) -> list[str]:
    """Every way the output records differ from the expected windows: missing, extra or
    repeated windows, wrong fields, wrong values. Empty when they agree."""
    want = {w.ident: w for w in expected}
    problems: list[str] = []
    seen: Counter[tuple[bytes | None, int]] = Counter()
    for record in outputs:
        body = orjson.loads(record.value)
        ident = (record.key, int(body["window_start"]))
        seen[ident] += 1
        if seen[ident] > 1:
            problems.append(f"window {ident} output {seen[ident]} times")
            continue
        window = want.get(ident)
        if window is None:
            problems.append(f"window {ident} output but not expected: {body}")
            continue
        fields = {"window_start", "window_end", *aggregates}
        if set(body) != fields:
            problems.append(f"window {ident}: fields {sorted(body)}, expected {sorted(fields)}")
        if body.get("window_end") != window.end:
            problems.append(f"window {ident}: window_end {body.get('window_end')} != {window.end}")
        for name in aggregates:
            have, exact = body.get(name), getattr(window, name)
            exactly = name in ("count", "min", "max")
            if not (have == exact if exactly else close_enough(have, exact)):
                problems.append(f"window {ident}: {name} {have!r}, expected {exact!r}")
    missing = sorted(set(want) - set(seen), key=lambda i: (i[1], i[0] or b""))
    problems += [f"window {ident} expected but not output" for ident in missing]
    return problems
