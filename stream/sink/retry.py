"""When to try a failed database write again: exponential backoff up to a deadline.

Pure: the caller passes the time; no sleeping here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays of ``initial * factor**attempt`` seconds, at most ``maximum``; no retry once
    ``deadline`` seconds have passed since the first failure."""

    deadline: float
    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 5.0

    def delay(self, attempt: int, first_failure: float, now: float) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` (attempt counts from 0), or None
        when the deadline is reached; the delay never goes past the deadline."""
        left = first_failure + self.deadline - now
        if left <= 0:
            return None
        wanted = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return min(wanted, left)
