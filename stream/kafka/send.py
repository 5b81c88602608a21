"""Batched sending: records in order, one aiokafka ``BatchBuilder`` per partition.

One batch per partition instead of one ``send()`` per record: a key's records keep
their order (one partition, appended in order), and the caller waits on a few batch
futures rather than one per record. Keys land where the Java client's default
partitioner (murmur2) puts them, so any client finds them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import murmur2

from stream.errors import RecordRefused
from stream.kafka.errors import CAUGHT, translate
from stream.kafka.protocols import OutRecord, Sent

log = logging.getLogger(__name__)

PARTITIONER_CACHE_BYTES = 4 << 20  # most key bytes the partitioner remembers


class Partitioner:
    """murmur2 of a key, remembered for keys seen again; the memory is bounded by the
    key bytes it holds, not a count of keys (a key may be large)."""

    def __init__(self, max_bytes: int = PARTITIONER_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes, partitions: int) -> int:
        hashed = self._hashes.get(key)
        if hashed is None:
            hashed = murmur2(key) & 0x7FFFFFFF
            if self.nbytes + len(key) > self.max_bytes:
                self._hashes.clear()
                self.nbytes = 0
            if len(key) <= self.max_bytes:
                self._hashes[key] = hashed
                self.nbytes += len(key)
        return hashed % partitions


def group_by_partition(
    records: Sequence[OutRecord], partitions: list[int], partitioner: Partitioner
) -> dict[int, list[int]]:
    """Record indices per partition, in order: to the partition number a record asks for
    (a changelog record: its input's; a null key: its input's) when the topic has it, by
    key otherwise, or any partition for a null key that asks for none."""
    count = len(partitions)
    grouped: dict[int, list[int]] = {}
    for index, (key, _value, _headers, wanted) in enumerate(records):
        if wanted is not None:
            slot = wanted % count
        elif key is not None:
            slot = partitioner(key, count)
        else:
            slot = random.randrange(count)
        grouped.setdefault(partitions[slot], []).append(index)
    return grouped


async def send_batched(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[OutRecord],
    partitioner: Partitioner,
    delivery_timeout: float,
    *,
    linger: bool = False,
) -> list[Sent]:
    """Queue ``records`` in per-partition batches. Each batch leaves as soon as the
    connection to its broker is free (aiokafka sends one request per broker at a time,
    so batches queued meanwhile, one per partition, share the next one); with
    ``linger``, it first waits the producer's ``linger_ms`` for others to share its
    request. If this raises, the batches it queued before are still sent; their
    outcome is marked as seen (nobody will await it)."""
    if not records:
        return []
    try:
        partitions = sorted(await producer.partitions_for(topic))
    except CAUGHT as exc:
        raise translate(exc) from exc
    sent: list[Sent] = []
    try:
        await _queue_all(
            producer,
            topic,
            records,
            sent,
            partitioner=partitioner,
            partitions=partitions,
            linger=linger,
            delivery_timeout=delivery_timeout,
        )
    except BaseException:
        for queued in sent:
            retrieve_later(queued.future)
        raise
    return sent


def retrieve_later(future: asyncio.Future[Any]) -> None:
    """Mark a future's outcome as seen once it settles: nobody will await it, and asyncio
    would otherwise print "exception was never retrieved" for a failed one."""
    future.add_done_callback(lambda done: done.cancelled() or done.exception())


async def _queue_all(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[OutRecord],
    sent: list[Sent],
    *,
    partitioner: Partitioner,
    partitions: list[int],
    linger: bool,
    delivery_timeout: float,
) -> None:
    """Cut ``records`` into batches per partition and queue them, appending to ``sent``."""

    async def queue(batch: Any, partition: int, held: list[int]) -> None:
        sent.append(
            await _enqueue(
                producer,
                batch,
                topic,
                partition,
                held,
                delivery_timeout=delivery_timeout,
                linger=linger,
            )
        )

    for partition, indices in group_by_partition(records, partitions, partitioner).items():
        batch = producer.create_batch()
        held: list[int] = []
        for index in indices:
            key, value, headers, _ = records[index]
            if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                if held:
                    await queue(batch, partition, held)
                    batch, held = producer.create_batch(), []
                if (
                    batch.append(key=key, value=value, timestamp=None, headers=headers or [])
                    is None
                ):
                    # Larger than a whole batch: the broker would refuse it anyway.
                    sent.append(_refused(index, len(value or b"")))
                    continue
            held.append(index)
        if held:
            await queue(batch, partition, held)


def _refused(index: int, size: int) -> Sent:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    name = "RecordTooLargeError"
    future.set_exception(RecordRefused(name, f"{name}: {size} bytes are more than a batch holds"))
    future.exception()  # marked as seen: whoever awaits it still gets the error
    return Sent(future, [index])


async def _enqueue(
    producer: AIOKafkaProducer,
    batch: Any,
    topic: str,
    partition: int,
    indices: list[int],
    *,
    delivery_timeout: float,
    linger: bool,
) -> Sent:
    """Queue a batch, waiting for room while the broker is away (up to the delivery
    timeout). A batch that was not queued was not sent, so trying again duplicates
    nothing."""
    if not linger:
        batch.close()  # aiokafka holds an open batch for linger_ms, closed ones not
    loop = asyncio.get_running_loop()
    deadline = loop.time() + delivery_timeout
    while True:
        try:
            queued = await producer.send_batch(batch, topic, partition=partition)
            break
        except KafkaTimeoutError:
            if loop.time() >= deadline:
                raise translate(KafkaTimeoutError("no room to queue a batch")) from None
            log.warning("the producer cannot queue a batch for %s[%d]; waiting", topic, partition)
            await asyncio.sleep(1.0)
        except CAUGHT as exc:
            raise translate(exc) from exc
    return Sent(_translated(queued), indices)


def _translated(source: asyncio.Future[Any]) -> asyncio.Future[None]:
    """A future that settles with ``source``, its error turned into the engine's."""
    target: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(done: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif (error := done.exception()) is not None:
            target.set_exception(translate(error))
        else:
            target.set_result(None)

    source.add_done_callback(settle)
    return target
