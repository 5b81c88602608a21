"""A partition's position in the database: what an owner's claim returns and what each
write stores, under the owner's generation (a newer claim fences every older owner)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Claim:
    """A partition's stored next offset (None: none yet) and the owner's generation."""

    next_offset: int | None
    generation: int


@dataclass(frozen=True, slots=True)
class Position:
    """Where a write moves a partition's stored offset, under which claim."""

    group: str
    next_offset: int
    generation: int
