"""Whether the service has stalled: pure, no I/O, times in, a verdict out.

A stall is time without progress *since work was waiting*: on a quiet topic the clock
starts when a record arrives, not at the end of the last batch. Work that is moving
within its documented bounds is progress in hand, never a stall, and the verdict says
which: a batch in the workers within ``--batch-timeout``, a record being isolated after
a worker died or overran, a wait for an unavailable schema registry (retried until it
answers), a delivery to Kafka or PostgreSQL within ``--delivery-timeout`` (past it the
service stops with an error of its own). Anything else waiting for longer than
``--stall-timeout`` while lagging is a stall: a restart may help.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Workers(Protocol):
    """What the pool reports of its work (``stream.pool.PoolActivity``)."""

    @property
    def busy_since(self) -> float | None: ...
    @property
    def last_step(self) -> float: ...
    @property
    def isolating(self) -> int: ...
    @property
    def waiting_for_registry(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Limits:
    stall_timeout: float
    batch_timeout: float
    delivery_timeout: float


@dataclass(frozen=True, slots=True)
class Work:
    """The engine's side, all on one monotonic clock."""

    lag: int
    last_progress: float  # work last finished
    last_fetch: float  # records last fetched
    waiting_since: float | None  # the oldest partition busy since (None: nothing in flight)
    delivering_since: float | None  # the oldest delivery step in progress began


@dataclass(frozen=True, slots=True)
class Verdict:
    alive: bool
    reason: str
    stalled_for: float  # seconds without progress since work was waiting


def judge(now: float, work: Work, workers: Workers, limits: Limits) -> Verdict:
    reference = max(work.last_progress, work.last_fetch, work.waiting_since or 0.0)
    stalled_for = max(0.0, now - reference)
    if work.waiting_since is None and work.lag == 0:
        return Verdict(True, "alive: idle", stalled_for)
    in_hand = _in_hand(now, work, workers, limits)
    if in_hand is not None:
        return Verdict(True, f"alive: {in_hand}", stalled_for)
    if stalled_for > limits.stall_timeout:
        return Verdict(
            False,
            f"no progress for {stalled_for:.0f}s while lagging (--stall-timeout "
            f"{limits.stall_timeout:g}s)",
            stalled_for,
        )
    return Verdict(True, "alive", stalled_for)


def _in_hand(now: float, work: Work, workers: Workers, limits: Limits) -> str | None:
    """What moves within its bounds, if anything, as a phrase for /healthz."""
    if workers.waiting_for_registry:
        return "waiting for the schema registry (batches are retried until it answers)"
    if workers.isolating and now - workers.last_step <= limits.batch_timeout:
        return (
            f"isolating the record that killed or hung a worker ({workers.isolating} "
            "batches run record by record)"
        )
    busy = workers.busy_since
    if busy is not None and now - busy <= limits.batch_timeout:
        return (
            f"a batch in the workers for {now - busy:.0f}s (--batch-timeout "
            f"{limits.batch_timeout:g}s)"
        )
    since = work.delivering_since
    if since is not None and now - since <= limits.delivery_timeout:
        return (
            f"delivering for {now - since:.0f}s (--delivery-timeout {limits.delivery_timeout:g}s)"
        )
    return None
