"""Reading a topic from outside any consumer group: its end offsets, and a
``read_committed`` reader assigned every given partition from its start (the bench
reads its outputs and follows their arrival with these).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from types import TracebackType

from aiokafka import AIOKafkaConsumer

from stream.config import KafkaSettings
from stream.kafka.connect import start_client
from stream.kafka.options import client_options
from stream.kafka.protocols import ConsumedRecord, TopicPartition


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
    ``read_committed`` consumer without a group, at the start of each partition
    (positions resolved before the block runs)."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        partitions: Sequence[int],
        *,
        fetch_max_wait_ms: int = 500,
    ) -> None:
        self._settings = settings
        self._tps = [TopicPartition(topic, p) for p in partitions]
        self._consumer = AIOKafkaConsumer(
            **client_options(settings),
            isolation_level="read_committed",
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
