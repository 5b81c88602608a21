"""Reading a topic from outside any consumer group: its end offsets, and a reader
assigned every given partition from its start (``read_committed`` unless told
otherwise): the bench reads its outputs and follows their arrival with these, and
``stream read`` prints a topic's records with ``records``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Collection, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from types import TracebackType
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer

from stream.config import KafkaSettings
from stream.errors import MissingTopics
from stream.kafka.admin import admin_client
from stream.kafka.connect import start_client
from stream.kafka.options import client_options
from stream.kafka.protocols import ConsumedRecord, TopicPartition

Isolation = Literal["read_committed", "read_uncommitted"]


async def end_offsets(
    settings: KafkaSettings, topic: str, partitions: Sequence[int]
) -> dict[int, int]:
    """Each partition's end offset (transaction markers included)."""
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(**client_options(settings))
    await start_client(consumer, settings)
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


class CommittedReader:
    """``async with CommittedReader(settings, topic, [0, 1]) as reader:`` a
    ``read_committed`` consumer (or ``isolation``'s) without a group, at the start of
    each partition (positions resolved before the block runs). End offsets are the last
    stable offsets under ``read_committed``, the high watermarks otherwise."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        partitions: Sequence[int],
        *,
        fetch_max_wait_ms: int = 500,
        isolation: Isolation = "read_committed",
    ) -> None:
        self._settings = settings
        self._tps = [TopicPartition(topic, p) for p in partitions]
        self._consumer = AIOKafkaConsumer(
            **client_options(settings),
            isolation_level=isolation,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_max_wait_ms,
        )

    async def __aenter__(self) -> CommittedReader:
        await start_client(self._consumer, self._settings)
        try:
            self._consumer.assign(self._tps)
            if self._tps:
                await self._consumer.seek_to_beginning(*self._tps)
            for tp in self._tps:
                await self._consumer.position(tp)
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self._consumer.stop()

    async def end_offsets(self) -> dict[int, int]:
        """Each partition's end offset (transaction markers included)."""
        ends = await self._consumer.end_offsets(self._tps) if self._tps else {}
        return {tp.partition: offset for tp, offset in ends.items()}

    async def fetch(
        self, partitions: Collection[int] | None = None, timeout_ms: int = 1000
    ) -> dict[int, list[ConsumedRecord]]:
        """The records fetched within ``timeout_ms`` (of ``partitions``, or of all), by
        partition; empty when none came."""
        tps = [tp for tp in self._tps if partitions is None or tp.partition in partitions]
        if not tps:
            return {}
        fetched = await self._consumer.getmany(*tps, timeout_ms=timeout_ms)
        return {tp.partition: list(records) for tp, records in fetched.items()}

    async def position(self, partition: int) -> int:
        """The offset the next fetch of ``partition`` starts at."""
        tp = next(tp for tp in self._tps if tp.partition == partition)
        offset: int = await self._consumer.position(tp)
        return offset


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One record as ``stream read`` shows it."""

    partition: int
    offset: int
    timestamp: int  # ms since the epoch
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


async def topic_partitions(settings: KafkaSettings, topic: str) -> list[int]:
    """The topic's partition numbers; MissingTopics, naming the closest topic there is,
    when it does not exist."""
    async with admin_client(settings) as admin:
        names = set(await admin.list_topics())
        described = await admin.describe_topics([topic]) if topic in names else []
    entries = described[0].get("partitions", []) if described else []
    if not entries:
        close = get_close_matches(topic, sorted(n for n in names if not n.startswith("__")), 1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise MissingTopics(f"topic {topic} does not exist{hint}")
    return sorted(int(entry["partition"]) for entry in entries)


async def records(
    settings: KafkaSettings,
    topic: str,
    *,
    isolation: Isolation = "read_committed",
    follow: bool = False,
) -> AsyncGenerator[list[TopicRecord], None]:
    """The topic's records from the start of each partition, a fetch at a time: up to
    the end offsets as they were when reading began, or, with ``follow``, for as long
    as the caller reads on. Close it (``aclosing``) when stopping early."""
    partitions = await topic_partitions(settings, topic)
    async with CommittedReader(
        settings, topic, partitions, fetch_max_wait_ms=200, isolation=isolation
    ) as reader:
        ends = await reader.end_offsets()
        remaining = {p for p in partitions if await reader.position(p) < ends[p]}
        while follow or remaining:
            fetched = await reader.fetch(None if follow else remaining, timeout_ms=500)
            batch: list[TopicRecord] = []
            for p, part in sorted(fetched.items()):
                batch += [_record(p, r) for r in part]
            if batch:
                yield batch
            for p in list(remaining):
                # Past the end, or up to it but for markers and aborted records.
                if await reader.position(p) >= ends[p]:
                    remaining.discard(p)


def _record(partition: int, record: Any) -> TopicRecord:
    return TopicRecord(
        partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        tuple((str(name), bytes(value or b"")) for name, value in record.headers or ()),
    )
