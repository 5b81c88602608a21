"""The engine's consumer and producers, made over aiokafka (``protocols`` says what
they do). Each method turns aiokafka's errors into ``stream.errors`` types."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

from stream.config import KafkaSettings, RunSettings
from stream.errors import KafkaFailure
from stream.kafka import admin, changelog
from stream.kafka.connect import start_client
from stream.kafka.errors import CAUGHT, translate
from stream.kafka.options import client_options
from stream.kafka.protocols import (
    Change,
    ConsumedRecord,
    OutRecord,
    RebalanceCallback,
    Sent,
    TopicPartition,
)
from stream.kafka.send import Partitioner, send_batched

MAX_BATCH_BYTES = 256 * 1024
BATCH_MARGIN = 1024  # bytes below a topic's limit a record batch stays


def make_consumer(settings: RunSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        max_poll_records=settings.max_inflight_records,
        fetch_max_bytes=settings.fetch_max_bytes,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 10),
        # The loop calls getmany() several times a second even when full, so this
        # only fires if the loop itself is stuck.
        max_poll_interval_ms=max(300_000, int(settings.drain_timeout * 2000)),
        rebalance_timeout_ms=max(60_000, int(settings.drain_timeout * 2000)),
        isolation_level="read_committed",
    )


def make_producer(
    settings: KafkaSettings,
    *,
    linger_ms: int = 5,
    delivery_timeout: float = 120.0,
    max_batch_size: int = MAX_BATCH_BYTES,
    transactional_id: str | None = None,
    transaction_timeout_ms: int = 60_000,
) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_options(settings),
        # aiokafka has no delivery.timeout.ms: a batch expires after request_timeout_ms.
        request_timeout_ms=int(delivery_timeout * 1000),
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=max_batch_size,
        max_request_size=8 * 1024 * 1024,
        compression_type=None,
        transactional_id=transactional_id,
        transaction_timeout_ms=transaction_timeout_ms,
    )


class KafkaConsumer:
    """``protocols.Consumer`` over an ``AIOKafkaConsumer``."""

    def __init__(self, consumer: AIOKafkaConsumer, topic_reset: str) -> None:
        self._consumer = consumer
        self._reset = topic_reset

    def subscribe(
        self, topic: str, on_assigned: RebalanceCallback, on_revoked: RebalanceCallback
    ) -> None:
        class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
                await on_revoked(set(revoked))

            async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
                await on_assigned(set(assigned))

        self._consumer.subscribe([topic], listener=_Listener())

    async def getmany(
        self, timeout_ms: int, max_records: int
    ) -> Mapping[TopicPartition, Sequence[ConsumedRecord]]:
        try:
            fetched: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=max_records
            )
        except CAUGHT as exc:
            raise translate(exc) from exc
        return fetched

    def seek(self, tp: TopicPartition, offset: int) -> None:
        try:
            self._consumer.seek(tp, offset)
        except CAUGHT as exc:  # not assigned any more: its next owner reads it
            raise translate(exc) from exc

    def pause(self, tp: TopicPartition) -> None:
        with contextlib.suppress(*CAUGHT):  # not assigned any more: nothing to pause
            self._consumer.pause(tp)

    def resume(self, tp: TopicPartition) -> None:
        with contextlib.suppress(*CAUGHT):
            self._consumer.resume(tp)

    async def seek_to_reset(self, tp: TopicPartition) -> None:
        try:
            if self._reset == "earliest":
                await self._consumer.seek_to_beginning(tp)
            else:
                await self._consumer.seek_to_end(tp)
        except CAUGHT as exc:
            raise translate(exc) from exc

    async def position(self, tp: TopicPartition) -> int:
        try:
            position: int = await self._consumer.position(tp)
        except CAUGHT as exc:
            raise translate(exc) from exc
        return position

    async def committed(self, tp: TopicPartition) -> int | None:
        try:
            offset: int | None = await self._consumer.committed(tp)
        except CAUGHT as exc:
            raise translate(exc) from exc
        return offset

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit(dict(offsets))
        except CAUGHT as exc:
            raise translate(exc) from exc

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        try:
            ends: dict[TopicPartition, int] = await self._consumer.end_offsets(list(tps))
        except CAUGHT as exc:
            raise translate(exc) from exc
        return ends

    async def topics(self) -> set[str]:
        try:
            names: set[str] = await self._consumer.topics()
        except CAUGHT as exc:
            raise translate(exc) from exc
        return names

    async def stop(self) -> None:
        with contextlib.suppress(*CAUGHT, OSError):
            await self._consumer.stop()


class KafkaProducer:
    """``protocols.Producer`` (and ``TransactionalProducer``) over an ``AIOKafkaProducer``."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        delivery_timeout: float,
        partitioner: Partitioner,
        *,
        linger: bool = False,
    ) -> None:
        self._producer = producer
        self._linger = linger
        self._delivery_timeout = delivery_timeout
        self._partitioner = partitioner
        self._open = False  # a transaction is open

    async def send(self, topic: str, records: Sequence[OutRecord]) -> list[Sent]:
        return await send_batched(
            self._producer,
            topic,
            records,
            self._partitioner,
            self._delivery_timeout,
            linger=self._linger,
        )

    async def begin(self) -> None:
        try:
            await self._producer.begin_transaction()
        except CAUGHT as exc:
            raise translate(exc) from exc
        self._open = True

    async def send_offsets(self, offsets: Mapping[TopicPartition, int], group_id: str) -> None:
        try:
            await self._producer.send_offsets_to_transaction(dict(offsets), group_id)
        except CAUGHT as exc:
            raise translate(exc) from exc

    async def commit(self) -> None:
        self._open = False
        try:
            await self._producer.commit_transaction()
        except CAUGHT as exc:
            raise translate(exc) from exc

    async def abort(self) -> None:
        """Abort the open transaction, if there is one."""
        if not self._open:
            return
        self._open = False
        try:
            await self._producer.abort_transaction()
        except CAUGHT as exc:
            raise translate(exc) from exc

    async def stop(self) -> None:
        with contextlib.suppress(*CAUGHT, OSError):
            await self._producer.stop()


class KafkaClients:
    """``protocols.Clients``: makes and starts the engine's clients from the settings."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.max_batch_size = MAX_BATCH_BYTES
        self._partitioner = Partitioner()

    async def consumer(self) -> KafkaConsumer:
        consumer = make_consumer(self.settings)
        await start_client(consumer, self.settings)
        return KafkaConsumer(consumer, self.settings.auto_offset_reset)

    async def producer(self) -> KafkaProducer:
        s = self.settings
        producer = make_producer(
            s,
            linger_ms=s.linger_ms,
            delivery_timeout=s.delivery_timeout,
            max_batch_size=self.max_batch_size,
        )
        await start_client(producer, s)
        return KafkaProducer(
            producer, s.delivery_timeout, self._partitioner, linger=s.linger_ms > 0
        )

    async def transactional_producer(self, transactional_id: str) -> KafkaProducer:
        """Started, which initialises the id: any older producer with it is fenced and
        its open transaction completed or aborted before this returns."""
        s = self.settings
        producer = make_producer(
            s,
            linger_ms=s.linger_ms,
            delivery_timeout=s.delivery_timeout,
            max_batch_size=self.max_batch_size,
            transactional_id=transactional_id,
            transaction_timeout_ms=int(s.transaction_timeout * 1000),
        )
        try:
            await start_client(producer, s)
        except CAUGHT as exc:
            raise translate(exc) from exc
        return KafkaProducer(
            producer, s.delivery_timeout, self._partitioner, linger=s.linger_ms > 0
        )

    async def record_limit(self, topic: str) -> int:
        return await admin.record_limit(self.settings, topic)

    def fit_batches(self, limit: int) -> None:
        self.max_batch_size = max(1024, min(MAX_BATCH_BYTES, limit - BATCH_MARGIN))

    async def ensure_topic(self, topic: str, like: str) -> bool:
        return await admin.ensure_topic(
            self.settings, topic, like, self.settings.dlq_replication_factor
        )

    async def ensure_changelog(self, topic: str, like: str) -> bool:
        return await changelog.ensure_changelog(
            self.settings, topic, like, self.settings.dlq_replication_factor
        )

    def read_changelog(self, topic: str, partition: int) -> AsyncGenerator[list[Change], None]:
        return changelog.read_changelog(self.settings, topic, partition)


__all__ = ["KafkaClients", "KafkaConsumer", "KafkaFailure", "KafkaProducer", "make_producer"]
