"""Batched sending (``stream.kafka.send``) over aiokafka's real batch builders: records
grouped by partition in order, and batches closed unless the producer lingers."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnknownTopicOrPartitionError

from stream.errors import KafkaFailure, UnknownTopic
from stream.kafka.errors import translate
from stream.kafka.protocols import OutRecord
from stream.kafka.send import Partitioner, send_batched


class Queueing:
    """The two calls ``send_batched`` makes of a started producer; batches come from a
    real (unstarted) ``AIOKafkaProducer``."""

    def __init__(self) -> None:
        self.real = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")
        self.queued: list[tuple[Any, int]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> Any:
        return self.real.create_batch()

    async def send_batch(self, batch: Any, topic: str, partition: int) -> asyncio.Future[None]:
        self.queued.append((batch, partition))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


RECORDS: list[OutRecord] = [(f"k{i % 5}".encode(), b"v%d" % i, None, None) for i in range(40)]


async def _send(linger: bool) -> tuple[Queueing, list[Any]]:
    producer = Queueing()
    try:
        sent = await send_batched(producer, "out", RECORDS, Partitioner(), 1.0, linger=linger)
    finally:
        await producer.real.stop()
    return producer, sent


async def test_batches_leave_closed_so_aiokafka_does_not_hold_them_for_linger_ms() -> None:
    producer, sent = await _send(linger=False)
    assert producer.queued
    assert all(batch.closed() for batch, _ in producer.queued)
    # Every record once, each partition's in input order, a key always on one partition.
    indices = sorted(i for s in sent for i in s.indices)
    assert indices == list(range(len(RECORDS)))
    for s in sent:
        assert s.indices == sorted(s.indices)
    where: dict[bytes | None, set[int]] = {}
    for s, (_, partition) in zip(sent, producer.queued, strict=True):
        for i in s.indices:
            where.setdefault(RECORDS[i][0], set()).add(partition)
    assert all(len(parts) == 1 for parts in where.values())


async def test_with_linger_batches_stay_open_for_the_producer_to_hold() -> None:
    producer, _ = await _send(linger=True)
    assert producer.queued
    assert not any(batch.closed() for batch, _ in producer.queued)


def test_a_topic_missing_from_the_metadata_is_its_own_failure() -> None:
    """``stream produce`` turns it into one line naming the topic (``MissingTopics``);
    to the engine it stays a retriable ``KafkaFailure``."""
    failure = translate(UnknownTopicOrPartitionError())
    assert isinstance(failure, UnknownTopic)
    assert isinstance(failure, KafkaFailure)
    assert failure.retriable
