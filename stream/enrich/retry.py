"""When to try a lookup again, and how long to wait first: pure, injected random and clock.

Exponential backoff with "equal jitter": attempt n waits between half and all of
``min(cap, base * 2**(n-1))``, so retries of many records spread out but never
come back at once. A server's ``Retry-After`` (seconds or an HTTP date) is a floor
on the wait, itself capped by ``max_retry_after`` so one header cannot park the
pipeline.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum


class Verdict(StrEnum):
    """What an HTTP status means for a lookup."""

    OK = "ok"
    MISSING = "missing"  # 404: the thing looked up does not exist
    RETRY = "retry"  # 429 and 5xx: try again later
    FAIL = "fail"  # any other status: trying again will not help


def classify_status(status: int) -> Verdict:
    if 200 <= status < 300:
        return Verdict.OK
    if status == 404:
        return Verdict.MISSING
    if status == 429 or status >= 500:
        return Verdict.RETRY
    return Verdict.FAIL


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date, RFC 9110);
    None when absent or unreadable; never negative."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; a bare one from a sloppy server too
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 3
    base: float = 0.1  # seconds before the first retry (before jitter)
    cap: float = 5.0  # longest backoff (before Retry-After)
    max_retry_after: float = 30.0  # longest wait a Retry-After header may ask for
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def should_retry(self, attempt: int) -> bool:
        """After failed attempt number ``attempt`` (1-based), is there another try?"""
        return attempt <= self.retries

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        backoff: float = ceiling / 2 + self.rand() * ceiling / 2
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, self.max_retry_after))
        return backoff
