"""The windows' changelog topic on the broker: made compacted, with as many partitions as
the input (partition ``p`` holds input partition ``p``'s state), checked when it exists,
and read back, committed records only, to restore a partition's state."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from stream.config import KafkaSettings
from stream.errors import FatalError, MissingTopics
from stream.kafka.admin import admin_client
from stream.kafka.connect import start_client
from stream.kafka.errors import CAUGHT, translate
from stream.kafka.options import client_options
from stream.kafka.protocols import Change, TopicPartition

FETCH_BYTES = 32 << 20  # a restore reads in large fetches: it is throughput, not latency
# Compacted; segments of 64 MiB (not the broker's 1 GiB) so that the log cleaner can
# compact all but a small active segment and a restore reads little beyond the state.
RESTORE_CHUNK = 10_000  # records applied at once: the event loop answers between chunks
COMPACT = {"cleanup.policy": "compact", "segment.bytes": str(64 << 20)}


async def ensure_changelog(
    settings: KafkaSettings, topic: str, like: str, replication_factor: int = 1
) -> bool:
    """Create ``topic`` compacted with as many partitions as ``like``, unless it exists;
    an existing one must have that many partitions and be compacted. True if made."""
    async with admin_client(settings) as admin:
        described = await admin.describe_topics([like, topic])
        counts = {
            entry.get("topic"): len(entry.get("partitions") or [])
            for entry in described
            if entry.get("error_code", 0) == 0
        }
        wanted = counts.get(like, 0)
        if not wanted:
            raise MissingTopics(f"topic {like} does not exist")
        if counts.get(topic):
            if counts[topic] != wanted:
                raise FatalError(
                    f"the changelog topic {topic} has {counts[topic]} partitions and {like} "
                    f"has {wanted}: its state belongs to other input partitions; delete it "
                    "(the windows start afresh) or give the input its partition count back"
                )
            await _require_compaction(admin, topic)
            return False
        answer = await admin.create_topics(
            [NewTopic(topic, wanted, replication_factor, topic_configs=COMPACT)]
        )
    for _name, code, *_ in answer.topic_errors:
        error = for_code(code) if code else None
        if error is not None and error is not TopicAlreadyExistsError:
            raise MissingTopics(
                f"the changelog topic {topic} does not exist and could not be made: "
                f"{error.__name__} (create it compacted, with {wanted} partitions)"
            )
    return True


async def _require_compaction(admin: object, topic: str) -> None:
    answers = await admin.describe_configs(  # type: ignore[attr-defined]
        [ConfigResource(ConfigResourceType.TOPIC, topic)]
    )
    for answer in answers:
        for error_code, _message, _type, name, entries in answer.resources:
            if name != topic or error_code:
                continue
            for entry in entries:
                if entry[0] == "cleanup.policy" and str(entry[1]).strip() != "compact":
                    raise FatalError(
                        f"the changelog topic {topic} has cleanup.policy={entry[1]}: its "
                        "records would be deleted by time and the windows lost; set it to "
                        "compact (only)"
                    )


async def read_changelog(
    settings: KafkaSettings, topic: str, partition: int
) -> AsyncGenerator[list[Change], None]:
    """Committed records of one partition, from its start up to its last stable offset
    as it was when reading began (positions skip transaction markers and aborted
    records, so the end is reached whatever gaps they leave)."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_bytes=FETCH_BYTES,
        fetch_max_wait_ms=100,
    )
    await start_client(consumer, settings)
    try:
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                fetched = await consumer.getmany(tp, timeout_ms=500, max_records=RESTORE_CHUNK)
                records = fetched.get(tp, [])
                if records:
                    yield [(r.key, r.value) for r in records if r.key is not None]
        except CAUGHT as exc:
            raise translate(exc) from exc
    finally:
        await consumer.stop()
