"""What differs between the guarantees, and only that: how a partition's finished
batches are shipped and how what was shipped is committed.

A ``Guarantee`` opens one ``Delivery`` per opening of a partition (exactly-once: a
transactional producer, whose start fences the previous owner). The partition's
lifecycle (``lifecycle``) hands the delivery its finished batches in input order, asks
what it holds uncommitted, and tells it when to commit on the one ``CommitPolicy``.
"""

from __future__ import annotations

from typing import Protocol

from stream.engine.assignment import Partition
from stream.engine.batch import Batch
from stream.engine.policy import Pending


class Delivery(Protocol):
    async def ship(self, batches: list[Batch]) -> None:
        """Send finished batches (in input order); raises ``KafkaFailure`` when the
        partition must be rewound."""

    def pending(self) -> Pending:
        """What is shipped and not yet committed, for the commit policy."""

    async def commit(self, *, final: bool) -> None:
        """Commit what was shipped (``final``: everything, the partition is closing),
        or, with nothing shipped, the partition's position if it moved."""

    async def close(self, *, lost: bool) -> None:
        """Drop what is uncommitted (``lost``: the producer lost its id, so it cannot
        abort)."""


class Guarantee(Protocol):
    async def open(self, part: Partition) -> Delivery:
        """Before the partition's committed offset is read."""

    async def close(self) -> None:
        """The engine is closing: whatever producers are left."""
