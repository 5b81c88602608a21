"""The enrichment cache and single-flight: pure logic, an injected clock, no I/O.

``TtlCache`` keeps at most ``size`` answers, each for ``ttl`` seconds, dropping the
least recently used first. ``SingleFlight`` remembers the one lookup in flight per
URL, so however many records (in however many batches) wait for an answer, one
request asks for it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A size-bounded LRU cache whose entries expire ``ttl`` seconds after they are put."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float]) -> None:
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.size > 0 and self.ttl > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> tuple[bool, V | None]:
        """(True, value) for a live entry; (False, None) when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def put(self, key: K, value: V) -> None:
        if not self.enabled:
            return
        self._entries[key] = (self._clock() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def expire(self) -> int:
        """Drop every expired entry; returns how many went. (``get`` drops them lazily.)"""
        now = self._clock()
        dead = [k for k, (expires, _) in self._entries.items() if now >= expires]
        for k in dead:
            del self._entries[k]
        return len(dead)


class SingleFlight(Generic[K, V]):
    """One future per key while its lookup is in flight; later askers share it."""

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: K) -> asyncio.Future[V] | None:
        return self._flights.get(key)

    def begin(self, key: K, future: asyncio.Future[V]) -> None:
        """Register the lookup of ``key``; it leaves when the future is done."""
        if key in self._flights:
            raise ValueError(f"a lookup of {key!r} is already in flight")
        self._flights[key] = future
        future.add_done_callback(lambda _: self._end(key, future))

    def _end(self, key: K, future: asyncio.Future[V]) -> None:
        if self._flights.get(key) is future:
            del self._flights[key]
