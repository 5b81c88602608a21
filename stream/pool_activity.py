"""What the pool's workers are doing now, for health: a snapshot and its bookkeeping.

The slots (threads) and the pool (on the event loop) note each step here; ``/healthz``
reads :meth:`ActivityLog.snapshot` from the loop. One lock guards the counters, held
only for a few assignments, so a read never waits on a worker. No I/O; the clock is
injected.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolActivity:
    """What the workers are doing now, for health: a batch within its time, a record being
    isolated, or a wait for the schema registry is progress in hand, not a stall."""

    busy_since: float | None  # time.monotonic() the oldest attempt now running started (None: none)
    last_step: float  # time.monotonic() an attempt last started or ended (pool start before any)
    isolating: int  # batches being run record by record after a worker died or overran
    waiting_for_registry: int  # batches waiting for an unavailable schema registry
    respawn_failures: int  # worker starts that failed and are being retried now


class ActivityLog:
    """Counters behind :class:`PoolActivity`, safe to update from any thread.

    ``respawn_failures`` counts slots whose worker failed to start and that are trying
    again (one per slot, however many tries it has made)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._running: dict[int, float] = {}  # slot index -> when its attempt started
        self._last_step = clock()
        self._isolating = 0
        self._waiting = 0
        self._failing: set[int] = set()  # slot indices retrying a failed start

    def snapshot(self) -> PoolActivity:
        """The counters now, as one consistent value."""
        with self._lock:
            return PoolActivity(
                busy_since=min(self._running.values(), default=None),
                last_step=self._last_step,
                isolating=self._isolating,
                waiting_for_registry=self._waiting,
                respawn_failures=len(self._failing),
            )

    def step(self) -> None:
        """Something moved (the pool started): ``last_step`` is now."""
        with self._lock:
            self._last_step = self._clock()

    def attempt_started(self, slot: int) -> None:
        """Slot ``slot`` sent a batch (or a probe) to its worker."""
        with self._lock:
            now = self._clock()
            self._running[slot] = now
            self._last_step = now

    def attempt_ended(self, slot: int) -> None:
        """Slot ``slot`` has its worker's answer, or lost the worker."""
        with self._lock:
            self._running.pop(slot, None)
            self._last_step = self._clock()

    def start_failed(self, slot: int) -> None:
        """Slot ``slot``'s worker failed to start; the slot will try again."""
        with self._lock:
            self._failing.add(slot)

    def start_settled(self, slot: int) -> None:
        """Slot ``slot`` started its worker, or gave up (the pool closes)."""
        with self._lock:
            self._failing.discard(slot)

    @contextlib.contextmanager
    def isolating(self) -> Iterator[None]:
        """While a batch runs record by record after a worker died or overran."""
        with self._lock:
            self._isolating += 1
        try:
            yield
        finally:
            with self._lock:
                self._isolating -= 1

    @contextlib.contextmanager
    def waiting_for_registry(self) -> Iterator[None]:
        """While a batch waits for (and retries against) an unavailable schema registry."""
        with self._lock:
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1
