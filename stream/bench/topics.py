"""Kafka helpers of the benchmark: topics with configs, end offsets, reading a topic."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic
from aiokafka.structs import TopicPartition

from stream.config import KafkaSettings
from stream.kafka import admin_client, client_options, start_client


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
    consumer = AIOKafkaConsumer(**client_options(settings))
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
        **client_options(settings),
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
