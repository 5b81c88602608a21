"""Kafka helpers of the benchmark: its topics (named per run, created, filled with demo
events, deleted), end offsets, reading a topic."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic
from aiokafka.structs import TopicPartition

from stream.config import BenchSettings, KafkaSettings, ProduceSettings
from stream.kafka import admin_client, client_options, start_client
from stream.produce import demo_events, produce

if TYPE_CHECKING:
    from stream.bench.cases import Payload


class BenchTopics:
    """The topics of one run, all named ``bench-<run_id>-...`` and deleted at its end."""

    def __init__(self, settings: BenchSettings, run_id: str, matrix_size: int) -> None:
        self.s = settings
        self.run_id = run_id
        self.matrix_size = matrix_size
        self.names: list[str] = []

    def name(self, name: str) -> str:
        full = f"bench-{self.run_id}-{name}"
        self.names.append(full)
        return full

    async def create(self, *names: str, log_append_time: bool = False) -> None:
        configs = {"message.timestamp.type": "LogAppendTime"} if log_append_time else {}
        self.names += [name for name in names if name not in self.names]
        async with admin_client(self.s) as admin:
            await admin.create_topics(
                [new_topic(name, self.s.partitions, 1, configs) for name in names]
            )

    async def cleanup(self) -> None:
        if not self.names:
            return
        async with admin_client(self.s) as admin:
            with contextlib.suppress(Exception):
                await admin.delete_topics(self.names)

    async def fill(self, topic: str, payload: Payload, count: int, rate: float = 0.0) -> int:
        """``count`` demo events of a payload into ``topic``; in a schema format, their
        schema registered under ``<topic>-value``."""
        settings = ProduceSettings(
            bootstrap_servers=self.s.bootstrap_servers,
            input_topic=topic,
            kind=payload.kind,
            count=count,
            rate=rate,
            seed=self.s.seed,
            values=max(1, payload.values),
            matrix_size=self.matrix_size,
            keys=payload.keys(count),
            quiet=True,
            format=payload.format,  # type: ignore[arg-type]
            schema_registry_url=self.s.schema_registry_url if payload.format != "json" else "",
        )
        if payload.format == "json":
            sent, _ = await produce(settings, demo_events(settings))
            return sent
        from stream.formats.setup import demo_encoder  # noqa: PLC0415 - formats only when used

        encode = await asyncio.to_thread(demo_encoder, settings, topic)
        sent, _ = await produce(settings, demo_events(settings, encode=encode))
        return sent

    async def wait_outputs(self, topic: str, count: int, seconds: float) -> None:
        """Until ``count`` records are in the topic (markers included), or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if sum((await topic_end_offsets(self.s, topic)).values()) >= count:
                return
            await asyncio.sleep(0.2)

    async def mean_size(self, topic: str) -> float:
        """Mean bytes of a value, over the topic's first 2,000 records."""
        records = await read_all(self.s, topic, limit=2000)
        return float(np.mean([len(r.value) for r in records])) if records else 0.0


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


class Arrivals:
    """When each output became visible to a ``read_committed`` consumer: a consumer that
    follows the topic from its start and notes this machine's clock (ms) as records
    arrive. Exactly-once outputs are written when they are sent but readable only once
    their transaction commits, so the broker's LogAppendTime would leave the commit out
    of their latency; the time a consumer can read them counts it, for both guarantees."""

    def __init__(self, settings: KafkaSettings, topic: str, partitions: int) -> None:
        self.s = settings
        self.topic = topic
        self.partitions = partitions  # as created (just now: metadata may not show them yet)
        self.seen: dict[bytes | None, list[float]] = {}
        self.count = 0
        self._wanted = 0
        self._enough = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        consumer = self._consumer = AIOKafkaConsumer(
            **client_options(self.s),
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
        )
        await start_client(consumer, self.s)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._follow(consumer))

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            fetched = await consumer.getmany(timeout_ms=100)
            now = time.time() * 1000
            for part in fetched.values():
                for record in part:
                    self.seen.setdefault(record.key, []).append(now)
                self.count += len(part)
            if self._wanted and self.count >= self._wanted:
                self._enough.set()

    async def wait(self, count: int, seconds: float) -> None:
        """Until ``count`` outputs arrived, or ``seconds`` pass."""
        self._wanted = count
        if self.count >= count:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._enough.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
