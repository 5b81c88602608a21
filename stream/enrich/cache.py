"""The enrichment cache and single-flight: pure logic, an injected clock, no I/O.

``TtlCache`` keeps at most ``size`` answers and ``max_bytes`` bytes of them (keys
included), each for ``ttl`` seconds, dropping the least recently used first.
``SingleFlight`` remembers the one lookup in flight per URL, so however many records
(in however many batches) wait for an answer, one request asks for it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """An LRU cache bounded in entries (``size``) and in bytes (``max_bytes``, each entry
    weighed by ``weigh(key, value)``: key and value both); entries expire ``ttl``
    seconds after they are put. An entry heavier than the whole bound is not kept."""

    def __init__(
        self,
        size: int,
        ttl: float,
        clock: Callable[[], float],
        *,
        max_bytes: int | None = None,
        weigh: Callable[[K, V], int] = lambda key, value: 0,
    ) -> None:
        self.size = size
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.bytes = 0  # the weight of the entries held now
        self._weigh = weigh
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, int, V]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.size > 0 and self.ttl > 0 and self.max_bytes != 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> tuple[bool, V | None]:
        """(True, value) for a live entry; (False, None) when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, _, value = entry
        if self._clock() >= expires:
            self._drop(key)
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def put(self, key: K, value: V) -> None:
        if not self.enabled:
            return
        self._drop(key)
        weight = self._weigh(key, value)
        if self.max_bytes is not None and weight > self.max_bytes:
            return
        self._entries[key] = (self._clock() + self.ttl, weight, value)
        self.bytes += weight
        while len(self._entries) > self.size or (
            self.max_bytes is not None and self.bytes > self.max_bytes
        ):
            _, (_, dropped, _) = self._entries.popitem(last=False)
            self.bytes -= dropped

    def expire(self) -> int:
        """Drop every expired entry; returns how many went. (``get`` drops them lazily.)"""
        now = self._clock()
        dead = [k for k, (expires, _, _) in self._entries.items() if now >= expires]
        for k in dead:
            self._drop(k)
        return len(dead)

    def _drop(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[1]


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
