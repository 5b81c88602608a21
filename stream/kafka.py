"""The one module that speaks to Kafka (aiokafka): clients, topics, errors.

Everything else in the service sees plain callables and these few types.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from stream.config import KafkaSettings, RunSettings

__all__ = [
    "BrokerUnavailable",
    "KafkaError",
    "MissingTopics",
    "TopicPartition",
    "admin_client",
    "create_topics",
    "describe_topics",
    "make_consumer",
    "make_producer",
    "require_topics",
    "start_client",
]

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """No broker answered at the bootstrap address within the connect timeout."""


class MissingTopics(RuntimeError):
    """Topics the service needs do not exist."""


@contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """While we retry the first connection, aiokafka's per-attempt errors are noise: the
    caller reports the outcome in one line."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def start_client(client: Any, settings: KafkaSettings) -> None:
    """Start an aiokafka client, retrying until the connect timeout; one clear error."""
    with _quiet_aiokafka():
        await _start_client(client, settings)


async def _start_client(client: Any, settings: KafkaSettings) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.connect_timeout
    while True:
        try:
            await asyncio.wait_for(client.start(), max(0.1, deadline - loop.time()))
            return
        except (KafkaConnectionError, TimeoutError) as exc:
            if loop.time() >= deadline:
                await _quiet_close(client)
                raise BrokerUnavailable(
                    f"no Kafka broker answered at {settings.bootstrap_servers} within "
                    f"{settings.connect_timeout:g}s ({type(exc).__name__})"
                ) from None
            await asyncio.sleep(0.5)


async def _quiet_close(client: Any) -> None:
    closer = getattr(client, "close", None) or client.stop
    try:
        await closer()
    except (KafkaError, OSError) as exc:
        log.debug("closing a client that never started: %s", exc)


def make_consumer(settings: RunSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        max_poll_records=settings.max_inflight_records,
        fetch_max_bytes=settings.fetch_max_bytes,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 10),
        # The loop calls getmany() several times a second even when paused, so this
        # only fires if the loop itself is stuck.
        max_poll_interval_ms=max(300_000, int(settings.drain_timeout * 2000)),
        rebalance_timeout_ms=max(60_000, int(settings.drain_timeout * 2000)),
        isolation_level="read_committed",
    )


def make_producer(
    settings: KafkaSettings, *, linger_ms: int = 5, delivery_timeout: float = 120.0
) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        # aiokafka has no delivery.timeout.ms: a batch expires after request_timeout_ms.
        request_timeout_ms=int(delivery_timeout * 1000),
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
        compression_type=None,
    )


Record = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]  # key, value, headers


@lru_cache(maxsize=1 << 16)
def _partition_for(key: bytes, partitions: int) -> int:
    """The Java client's default partitioner (murmur2), so keys land where any client puts them."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


async def send_records(
    producer: AIOKafkaProducer, topic: str, records: Sequence[Record]
) -> list[Any]:
    """Produce records in order, batched per partition; returns one future per batch.

    One ``BatchBuilder`` per partition instead of one ``send()`` per record: the
    records of a key keep their order (one partition, appended in order), and the
    caller waits on a few batch futures rather than a future per record.
    """
    if not records:
        return []
    partitions = sorted(await producer.partitions_for(topic))
    count = len(partitions)
    grouped: dict[int, list[Record]] = {}
    for record in records:
        key = record[0]
        index = _partition_for(key, count) if key is not None else random.randrange(count)
        grouped.setdefault(partitions[index], []).append(record)
    futures = []
    for partition, items in grouped.items():
        batch = producer.create_batch()
        for key, value, headers in items:
            if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                futures.append(await _enqueue(producer, batch, topic, partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers or [])
        futures.append(await _enqueue(producer, batch, topic, partition))
    return futures


async def _enqueue(producer: AIOKafkaProducer, batch: Any, topic: str, partition: int) -> Any:
    """Queue a batch, waiting for room while the broker is away (up to the delivery
    timeout). A batch that was not queued was not sent, so trying again duplicates
    nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + producer._request_timeout_ms / 1000
    while True:
        try:
            return await producer.send_batch(batch, topic, partition=partition)
        except KafkaTimeoutError:
            if loop.time() >= deadline:
                raise
            log.warning("the producer cannot queue a batch for %s[%d]; waiting", topic, partition)
            await asyncio.sleep(1.0)


def make_transactional_producer(settings: RunSettings, transactional_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        acks="all",
        enable_idempotence=True,
        transactional_id=transactional_id,
        request_timeout_ms=int(settings.delivery_timeout * 1000),
        transaction_timeout_ms=max(60_000, int(settings.drain_timeout * 2000)),
        linger_ms=settings.linger_ms,
        max_batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
    )


def subscribe(
    consumer: AIOKafkaConsumer,
    topic: str,
    on_assigned: Callable[[set[TopicPartition]], Awaitable[None]],
    on_revoked: Callable[[set[TopicPartition]], Awaitable[None]],
) -> None:
    class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            await on_revoked(set(revoked))

        async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            await on_assigned(set(assigned))

    consumer.subscribe([topic], listener=_Listener())


@asynccontextmanager
async def admin_client(settings: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id=settings.client_id
    )
    await start_client(admin, settings)
    try:
        yield admin
    finally:
        await admin.close()


def all_topics(settings: KafkaSettings) -> list[str]:
    return [settings.input_topic, settings.output_topic, settings.dead_letter_topic]


async def create_topics(
    settings: KafkaSettings, partitions: int, replication_factor: int
) -> dict[str, str]:
    """Create the input, output and dead-letter topics; returns topic -> 'created'|'exists'."""
    result: dict[str, str] = {}
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        for topic in all_topics(settings):
            if topic in existing:
                result[topic] = "exists"
                continue
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            topic, num_partitions=partitions, replication_factor=replication_factor
                        )
                    ]
                )
                result[topic] = "created"
            except TopicAlreadyExistsError:
                result[topic] = "exists"
    return result


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    end_offsets: dict[int, int]


async def describe_topics(settings: KafkaSettings) -> list[TopicInfo | str]:
    """Partitions and end offsets of our topics; a str for a topic that does not exist."""
    topics = all_topics(settings)
    async with admin_client(settings) as admin:
        described = await admin.describe_topics(topics)
    partitions: dict[str, list[int]] = {}
    for entry in described:
        if entry.get("error_code", 0) == 0:
            partitions[entry["topic"]] = sorted(p["partition"] for p in entry["partitions"])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, client_id=settings.client_id
    )
    await start_client(consumer, settings)
    try:
        tps = [TopicPartition(t, p) for t, parts in partitions.items() for p in parts]
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    out: list[TopicInfo | str] = []
    for topic in topics:
        if topic not in partitions:
            out.append(topic)
            continue
        offsets = {tp.partition: o for tp, o in ends.items() if tp.topic == topic}
        out.append(TopicInfo(topic, len(partitions[topic]), offsets))
    return out


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed this partition
    end: int
    lag: int  # end - committed (or end - log start when nothing is committed)


async def group_lag(settings: KafkaSettings, group_id: str) -> list[PartitionLag]:
    """A consumer group's committed offset, end offset and lag per input partition."""
    topic = settings.input_topic
    async with admin_client(settings) as admin:
        described = await admin.describe_topics([topic])
        offsets = await admin.list_consumer_group_offsets(group_id)
    entry = described[0] if described else {}
    if entry.get("error_code", 0) != 0 or not entry.get("partitions"):
        raise MissingTopics(f"topic {topic} does not exist")
    tps = [TopicPartition(topic, p["partition"]) for p in entry["partitions"]]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, client_id=settings.client_id
    )
    await start_client(consumer, settings)
    try:
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    rows = []
    for tp in sorted(tps):
        meta = offsets.get(tp)
        committed = meta.offset if meta is not None and meta.offset >= 0 else None
        base = committed if committed is not None else starts[tp]
        rows.append(PartitionLag(topic, tp.partition, committed, ends[tp], max(0, ends[tp] - base)))
    return rows


async def require_topics(client: AIOKafkaConsumer, topics: list[str]) -> None:
    existing = await client.topics()
    missing = [t for t in topics if t not in existing]
    if missing:
        raise MissingTopics(
            f"topic(s) {', '.join(missing)} do not exist; create them with "
            "`stream topics create` (same --input-topic/--output-topic/--dlq-topic)"
        )


# ---- used by the benchmark --------------------------------------------------------------------


def new_topic(name: str, partitions: int, replication: int, configs: dict[str, str]) -> NewTopic:
    return NewTopic(
        name, num_partitions=partitions, replication_factor=replication, topic_configs=configs
    )


async def partitions_of(settings: KafkaSettings, topic: str) -> list[TopicPartition]:
    async with admin_client(settings) as admin:
        described = await admin.describe_topics([topic])
    parts = described[0].get("partitions", []) if described else []
    return [TopicPartition(topic, p["partition"]) for p in sorted(parts, key=_partition_id)]


def _partition_id(entry: dict[str, Any]) -> int:
    number: int = entry["partition"]
    return number


async def topic_end_offsets(settings: KafkaSettings, topic: str) -> dict[int, int]:
    tps = await partitions_of(settings, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, client_id=settings.client_id
    )
    await start_client(consumer, settings)
    try:
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def read_all(settings: KafkaSettings, topic: str, limit: int | None = None) -> list[Any]:
    """Every committed record of a topic, up to its current end (or ``limit`` records)."""
    tps = await partitions_of(settings, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await start_client(consumer, settings)
    records: list[Any] = []
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining and (limit is None or len(records) < limit):
            fetched = await consumer.getmany(*remaining, timeout_ms=1000)
            if not fetched:
                # Only transaction markers or aborted records may be left.
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
                continue
            for tp, part in fetched.items():
                records.extend(part)
                if part[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return records if limit is None else records[:limit]
