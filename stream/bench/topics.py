"""Kafka helpers of the benchmark: its topics (named per run, created, filled with demo
events, deleted), end offsets, reading a topic."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from stream.config import BenchSettings, KafkaSettings, ProduceSettings
from stream.kafka import (
    CommittedReader,
    add_topics,
    admin_client,
    delete_topics,
    end_offsets,
    partition_ids,
)
from stream.kafka.admin import _group_offsets
from stream.kafka.protocols import ConsumedRecord
from stream.kafka.send import Partitioner
from stream.produce import Event, demo_encoder, demo_events, produce

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
        await add_topics(self.s, names, self.s.partitions, 1, configs)

    async def cleanup(self) -> None:
        """Delete the run's topics, and those the cases made named after their groups (the
        windows' changelogs: ours and quix-streams')."""
        with contextlib.suppress(Exception):
            async with admin_client(self.s) as admin:
                listed = await admin.list_topics()
            mark = f"bench-{self.run_id}-"
            self.names += [t for t in listed if mark in t and t not in self.names]
        if not self.names:
            return
        with contextlib.suppress(Exception):
            await delete_topics(self.s, self.names)

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
            if payload.event_span and not rate:
                span = payload.event_span
                start = event_start(time.time(), span)
                events = demo_events(settings, encode=spread_event_times(start, span, count))
                closers = closing_events(start + span + 60, payload.values, self.s.partitions)
                sent, _ = await produce(settings, itertools.chain(events, closers))
                return sent
            sent, _ = await produce(settings, demo_events(settings))
            return sent
        schema_encode = await asyncio.to_thread(demo_encoder, settings, topic)
        sent, _ = await produce(settings, demo_events(settings, encode=schema_encode))
        return sent

    async def wait_outputs(self, topic: str, count: int, seconds: float) -> None:
        """Until ``count`` records are in the topic (markers included), or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if sum((await topic_end_offsets(self.s, topic)).values()) >= count:
                return
            await asyncio.sleep(0.2)

    async def wait_committed(
        self, group: str, topic: str, seconds: float, every: float = 0.025
    ) -> Committed:
        """Until ``group``'s committed offsets reach the end of ``topic`` (filled before),
        or ``seconds`` pass: when, by this machine's clock, and how many records they
        cover."""
        ends = await topic_end_offsets(self.s, topic)
        target = sum(ends.values())
        deadline = time.monotonic() + seconds
        async with admin_client(self.s) as admin:
            while True:
                offsets = await _group_offsets(admin, group, self.s.connect_timeout)
                at = time.time()
                done = committed_records(offsets, topic)
                if done >= target or time.monotonic() >= deadline:
                    return Committed(at, done, done >= target)
                await asyncio.sleep(every)

    async def mean_size(self, topic: str) -> float:
        """Mean bytes of a value, over the topic's first 2,000 records."""
        records = await read_all(self.s, topic, limit=2000)
        return float(np.mean([len(r.value or b"") for r in records])) if records else 0.0


@dataclass(frozen=True, slots=True)
class Committed:
    """A consumer group's committed offsets on one input topic, seen at a time."""

    at: float  # time.time() when they were read
    records: int  # the records they cover (the sum of the offsets: the input starts at 0)
    complete: bool  # they reached the input's end offsets


def committed_records(offsets: dict[Any, Any], topic: str) -> int:
    """The records a group's committed offsets (``{TopicPartition: OffsetAndMetadata}``)
    cover on ``topic``: their sum, a partition never committed counting none."""
    return sum(max(0, meta.offset) for tp, meta in offsets.items() if tp.topic == topic)


def event_start(now: float, span: float) -> float:
    """A minute boundary at least ``span`` seconds and a minute before ``now``: where the
    event times of a topic that spans ``span`` seconds start."""
    return (math.floor(now / 60) - math.ceil(span / 60) - 1) * 60.0


def spread_event_times(start: float, span: float, count: int) -> Callable[[Any], bytes]:
    """A demo-event encoder (JSON) that sets the ``ts`` of the n-th of ``count`` events to
    ``start + n * span / count`` cut to the millisecond: the events of a windows case, in
    event-time order, spanning several windows (made as fast as they are sent, their own
    ``ts`` would all fall in one minute). Whole milliseconds, so that no reader's rounding
    (quix truncates, our service rounds) moves an event across a window's edge."""
    numbers = itertools.count()
    start_ms, span_ms = round(start * 1000), round(span * 1000)

    def encode(event: Any) -> bytes:
        event["ts"] = (start_ms + next(numbers) * span_ms // count) / 1000
        return orjson.dumps(event)

    return encode


def closing_events(ts: float, values: int, partitions: int) -> list[Event]:
    """A sensor event at ``ts`` for each of ``partitions`` partitions (keys the producer's
    partitioner sends there): after a windows input, they move every partition's stream
    time past the last window's end, so that every window closes and the last output
    marks the end of the work on the input."""
    partitioner, keys = Partitioner(), dict[int, bytes]()
    for number in itertools.count():
        key = f"closer-{number}".encode()
        keys.setdefault(partitioner(key, partitions), key)
        if len(keys) == partitions:
            break
    return [
        Event(
            key,
            orjson.dumps({"sensor_id": key.decode(), "seq": 0, "ts": ts, "values": [0.0] * values}),
        )
        for _, key in sorted(keys.items())
    ]


async def topic_end_offsets(settings: KafkaSettings, topic: str) -> dict[int, int]:
    return await end_offsets(settings, topic, await partition_ids(settings, topic))


async def read_all(
    settings: KafkaSettings, topic: str, limit: int | None = None
) -> list[ConsumedRecord]:
    """Every committed record of a topic, up to its current end (or ``limit`` records)."""
    partitions = await partition_ids(settings, topic)
    records: list[ConsumedRecord] = []
    async with CommittedReader(settings, topic, partitions) as reader:
        ends = await reader.end_offsets()
        remaining = {p for p in partitions if ends[p] > 0}
        while remaining and (limit is None or len(records) < limit):
            fetched = await reader.fetch(remaining, timeout_ms=1000)
            if not fetched:
                # Only transaction markers or aborted records may be left.
                for p in list(remaining):
                    if await reader.position(p) >= ends[p]:
                        remaining.discard(p)
                continue
            for p, part in fetched.items():
                records.extend(part)
                if part[-1].offset + 1 >= ends[p]:
                    remaining.discard(p)
    return records if limit is None else records[:limit]
