"""Topics and groups: create, describe, check, limits and lag (the admin side)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)
from aiokafka.structs import TopicPartition

from stream.config import KafkaSettings
from stream.errors import MissingTopics, NotAuthorized
from stream.kafka.connect import start_client
from stream.kafka.errors import translate
from stream.kafka.options import client_options

DEFAULT_RECORD_LIMIT = 1_048_588  # Kafka's default message.max.bytes


@asynccontextmanager
async def admin_client(settings: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_options(settings))
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
    consumer = AIOKafkaConsumer(**client_options(settings))
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
        offsets = await _group_offsets(admin, group_id, settings.connect_timeout)
    entry = described[0] if described else {}
    if entry.get("error_code", 0) != 0 or not entry.get("partitions"):
        raise MissingTopics(f"topic {topic} does not exist")
    tps = [TopicPartition(topic, p["partition"]) for p in entry["partitions"]]
    consumer = AIOKafkaConsumer(**client_options(settings))
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


async def _group_offsets(
    admin: AIOKafkaAdminClient, group_id: str, wait: float
) -> dict[TopicPartition, Any]:
    """The group's committed offsets. A fresh broker has no group coordinator until it has
    made its offsets topic: retriable errors are retried for up to ``wait`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            offsets: dict[TopicPartition, Any] = await admin.list_consumer_group_offsets(group_id)
            return offsets
        except KafkaError as exc:
            if not exc.retriable or loop.time() >= deadline:
                raise translate(exc) from None
            await asyncio.sleep(0.25)


async def require_topics(client: Any, topics: list[str]) -> None:
    existing = await client.topics()
    missing = [t for t in topics if t not in existing]
    if missing:
        raise MissingTopics(
            f"topic(s) {', '.join(missing)} do not exist; create them with "
            "`stream topics create` (same --input-topic/--output-topic/--dlq-topic)"
        )


async def record_limit(settings: KafkaSettings, topic: str) -> int:
    """The topic's ``max.message.bytes``: the largest record batch it accepts."""
    async with admin_client(settings) as admin:
        answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    for answer in answers:
        for error_code, _message, _type, name, entries in answer.resources:
            if name != topic or error_code:
                continue
            for entry in entries:
                if entry[0] == "max.message.bytes" and entry[1]:
                    return int(entry[1])
    return DEFAULT_RECORD_LIMIT


async def ensure_topic(
    settings: KafkaSettings, topic: str, like: str, replication_factor: int = 1
) -> bool:
    """Create ``topic`` with as many partitions as ``like`` has, unless it exists.
    True if it was created here."""
    async with admin_client(settings) as admin:
        if topic in set(await admin.list_topics()):
            return False
        described = await admin.describe_topics([like])
        entry = described[0] if described else {}
        if entry.get("error_code", 0) != 0 or not entry.get("partitions"):
            raise MissingTopics(f"topic {like} does not exist")
        partitions = len(entry["partitions"])
        answer = await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor)]
        )
        for _name, code, *_ in answer.topic_errors:
            error = for_code(code) if code else None
            if error is None or error is TopicAlreadyExistsError:
                continue
            if error in (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
                raise NotAuthorized(
                    f"topic {topic} does not exist and this user may not create it (it needs "
                    "the CREATE ACL on the topic or the cluster): create it, or ask for the ACL"
                )
            raise MissingTopics(
                f"topic {topic} does not exist and could not be made: {error.__name__}"
            )
        if any(code == TopicAlreadyExistsError.errno for _n, code, *_ in answer.topic_errors):
            return False
    return True


async def add_topics(
    settings: KafkaSettings,
    names: Sequence[str],
    partitions: int,
    replication_factor: int = 1,
    configs: Mapping[str, str] | None = None,
) -> None:
    """Create topics of ``partitions`` partitions each, with ``configs`` (topic settings)."""
    async with admin_client(settings) as admin:
        await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    topic_configs=dict(configs or {}),
                )
                for name in names
            ]
        )


async def delete_topics(settings: KafkaSettings, names: Sequence[str]) -> None:
    """Delete topics (an error, such as one already gone, is the broker's answer)."""
    async with admin_client(settings) as admin:
        await admin.delete_topics(list(names))


async def partition_ids(settings: KafkaSettings, topic: str) -> list[int]:
    """The topic's partition numbers, sorted (empty when the broker lists none)."""
    async with admin_client(settings) as admin:
        described = await admin.describe_topics([topic])
    entries = described[0].get("partitions", []) if described else []
    return sorted(int(entry["partition"]) for entry in entries)
