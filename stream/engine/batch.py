"""A batch of one partition's records, and what was decided about where they go.

Plain values, no I/O: the batch carries its plan (what the broker or the database
refused before) and its routing (outputs and dead letters), made once per plan.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from stream.kafka.protocols import OutRecord
from stream.offsets import Ticket
from stream.worker import BatchResult

Error = tuple[int, str, str]  # (index in batch, reason, message)


@dataclass(slots=True)
class Plan:
    """How to send a batch this time, learnt from what was refused before."""

    refused: dict[int, tuple[str, str]] = field(default_factory=dict)  # index -> (reason, message)
    alone: set[int] = field(default_factory=set)  # indices sent in a produce batch of their own
    minimal: set[int] = field(default_factory=set)  # indices whose dead letter is headers only

    def __bool__(self) -> bool:
        return bool(self.refused or self.alone or self.minimal)


@dataclass(frozen=True, slots=True)
class Routed:
    """One batch, routed: ``outputs[i]`` is for record ``output_index[i]`` of the batch,
    ``letters[j]`` for record ``letter_index[j]``."""

    outputs: list[OutRecord] = field(default_factory=list)
    output_index: list[int] = field(default_factory=list)
    letters: list[OutRecord] = field(default_factory=list)
    letter_index: list[int] = field(default_factory=list)
    errors: list[Error] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WindowOut:
    """What a batch did to its partition's windows (a windowed run): the outputs of the
    windows it closed (or changed, with ``--emit update``) and the changelog records of
    the state it left, sent in the same transaction as its offsets."""

    outputs: list[OutRecord]
    changes: list[OutRecord]
    letters: list[OutRecord] = field(default_factory=list)  # outputs too large to send


@dataclass(slots=True, eq=False)
class Batch:
    """Records of one partition, in order, sent to a worker together."""

    ticket: Ticket
    keys: list[bytes | None]
    values: list[bytes | None]
    offsets: list[int]
    timestamps_ms: list[int]
    nbytes: int
    result: asyncio.Future[BatchResult]
    errors: list[Error] = field(default_factory=list)  # what was dead-lettered
    grown: int = 0  # bytes its outputs hold beyond its inputs (counted in flight)
    finished: bool = False
    plan: Plan = field(default_factory=Plan)
    routed: Routed | None = None  # made from ``plan``; None until routed or after it changed
    window_out: WindowOut | None = None  # a windowed run: made once, when it is shipped

    def __len__(self) -> int:
        return len(self.values)

    def refuse(self, index: int, reason: str, message: str) -> None:
        """Record ``index`` becomes a dead letter with this reason (the routing is made
        again)."""
        self.plan.refused[index] = (reason, message)
        self.routed = None
