"""When a partition commits: one pure policy for both guarantees, no I/O.

Time and sizes in, a decision out (arroyo's ``CommitPolicyState`` is the model). A
partition commits what it holds uncommitted once that is ``interval`` seconds old, or
holds a share of the in-flight caps (so that uncommitted work never stalls fetching),
or at once when something must be settled now (a refused send) or the partition is
ending (revoked, rewound or shutting down, with nothing more queued). With nothing
uncommitted, a partition looks at its position every ``idle_interval`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

CAPS_SHARE = 4  # work holding 1/CAPS_SHARE of the in-flight caps is committed early


@dataclass(frozen=True, slots=True)
class Pending:
    """What a partition holds uncommitted, as its delivery reports it."""

    since: float | None = None  # clock time the oldest of it was ready (None: nothing)
    records: int = 0
    nbytes: int = 0
    urgent: bool = False  # something must be settled now (a refused send)


NOTHING = Pending()


@dataclass(frozen=True, slots=True)
class CommitPolicy:
    interval: float  # seconds uncommitted work may wait
    idle_interval: float  # seconds between looks at an idle partition's position
    max_records: int  # the in-flight caps
    max_bytes: int

    def due(self, now: float, pending: Pending, *, ending: bool = False) -> bool:
        if pending.since is None:
            return False
        return (
            ending
            or pending.urgent
            or now >= pending.since + self.interval  # as wait() computes it: no rounding gap
            or pending.records * CAPS_SHARE >= self.max_records
            or pending.nbytes * CAPS_SHARE >= self.max_bytes
        )

    def wait(self, now: float, pending: Pending) -> float:
        """Seconds until a commit is due (0: now); with nothing pending, until the next
        look at the partition's position."""
        if pending.since is None:
            return self.idle_interval
        if self.due(now, pending):
            return 0.0
        remaining = max(0.0, pending.since + self.interval - now)
        # (since + interval) - now may round above the interval when now >= since
        return min(remaining, self.interval) if now >= pending.since else remaining
