"""The Kafka edge as the engine sees it: a consumer and producers, typed.

The engine imports only these protocols; ``stream.kafka.clients`` implements them
over aiokafka, and the tests' in-memory fakes implement them too. Every method
raises only ``stream.errors`` types (``KafkaFailure`` and its branches), never
aiokafka's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka.structs import TopicPartition

__all__ = [
    "Change",
    "Clients",
    "ConsumedRecord",
    "Consumer",
    "OutRecord",
    "Producer",
    "RebalanceCallback",
    "Sent",
    "TopicPartition",
    "TransactionalProducer",
]

# key, value (None: a tombstone), headers, partition (None: by key, or any partition for a
# null key)
OutRecord = tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None, int | None]
Change = tuple[bytes, bytes | None]  # a changelog record: key, value (None: removed)
RebalanceCallback = Callable[[set[TopicPartition]], Awaitable[None]]


class ConsumedRecord(Protocol):
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Sent:
    """One produce batch queued: ``indices`` are the positions, in the records given to
    ``send``, of the records it holds; ``future`` resolves when the broker took them, or
    fails with a ``KafkaFailure`` (``RecordRefused`` when they were refused for good)."""

    future: asyncio.Future[None]
    indices: list[int]


class Consumer(Protocol):
    def subscribe(
        self, topic: str, on_assigned: RebalanceCallback, on_revoked: RebalanceCallback
    ) -> None: ...
    async def getmany(
        self, timeout_ms: int, max_records: int
    ) -> Mapping[TopicPartition, Sequence[ConsumedRecord]]: ...
    def seek(self, tp: TopicPartition, offset: int) -> None: ...
    def pause(self, tp: TopicPartition) -> None:
        """Fetch nothing more for it (what was fetched and not returned is dropped)."""

    def resume(self, tp: TopicPartition) -> None: ...
    async def seek_to_reset(self, tp: TopicPartition) -> None:
        """Where a partition without a committed offset starts (auto.offset.reset)."""

    async def position(self, tp: TopicPartition) -> int: ...
    async def committed(self, tp: TopicPartition) -> int | None: ...
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...
    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...
    async def topics(self) -> set[str]: ...
    async def stop(self) -> None: ...


class Producer(Protocol):
    async def send(self, topic: str, records: Sequence[OutRecord]) -> list[Sent]:
        """Queue records, in order, batched per partition (waiting for room while the
        broker is away, up to the delivery timeout)."""

    async def stop(self) -> None: ...


class TransactionalProducer(Producer, Protocol):
    async def begin(self) -> None: ...
    async def send_offsets(self, offsets: Mapping[TopicPartition, int], group_id: str) -> None: ...
    async def commit(self) -> None: ...
    async def abort(self) -> None: ...


class Clients(Protocol):
    """What the engine asks the edge to make; each comes back started."""

    async def consumer(self) -> Consumer: ...
    async def producer(self) -> Producer: ...
    async def transactional_producer(self, transactional_id: str) -> TransactionalProducer: ...
    async def record_limit(self, topic: str) -> int:
        """The largest record batch the topic accepts (``max.message.bytes``)."""

    def fit_batches(self, limit: int) -> None:
        """Producers made from now on build record batches of at most ``limit`` bytes
        (a batch over a topic's max.message.bytes is refused whole)."""

    async def ensure_topic(self, topic: str, like: str) -> bool:
        """Create ``topic`` with as many partitions as ``like`` if missing; True if made."""

    async def ensure_changelog(self, topic: str, like: str) -> bool:
        """Create the compacted changelog ``topic`` with as many partitions as ``like`` if
        missing (True if made); ``FatalError`` in one line if it exists with another
        number of partitions or without compaction."""

    def read_changelog(self, topic: str, partition: int) -> AsyncGenerator[list[Change], None]:
        """The committed records of one changelog partition, from its start to its end
        offset as it was when reading began, a fetch at a time."""
