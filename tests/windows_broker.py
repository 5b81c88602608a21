"""What the windows' broker tests share: timestamped events, feeding them, closing every
window with one far-future record per partition, and the reference's answer for what
the input topic holds (:mod:`tests.windows_reference`, which shares no code with the
service)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stream.config import ProduceSettings
from stream.produce import Event, produce
from tests.helpers import Service, Topics, get, metrics_url, read_topic, scrape_until
from tests.windows_reference import Outcome, Shape, Window, differences, event_of, run

T0 = 1_700_000_000_000  # epoch ms: 2023-11-14, a whole second
CLOSER = b"~closer"  # the key of the far-future records that close every window before them


def changelog_topic(topics: Topics) -> str:
    """The changelog the service makes for the group's windows over the input."""
    return f"{topics.group}-{topics.input}-windows-changelog"


async def changelog_shape(topics: Topics) -> tuple[int, str]:
    """The changelog's partition count and cleanup.policy."""
    name = changelog_topic(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([name])
        answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    policies = [
        str(entry[1])
        for answer in answers
        for _code, _message, _type, resource, entries in answer.resources
        if resource == name
        for entry in entries
        if entry[0] == "cleanup.policy"
    ]
    assert len(policies) == 1, answers
    return len(described["partitions"]), policies[0]


async def drop_changelog(topics: Topics) -> None:
    """Delete the changelog, if the service made one (the topics' own fixture drops the
    rest)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
    await admin.start()
    try:
        if changelog_topic(topics) in await admin.list_topics():
            await admin.delete_topics([changelog_topic(topics)])
    finally:
        await admin.close()


def windowed(window: str, *extra: str) -> tuple[str, ...]:
    """`stream run` options for windows over the events these tests make."""
    return (
        "--guarantee",
        "exactly-once",
        "--window",
        window,
        "--event-time",
        "ts",
        "--value-field",
        "values",
        *extra,
    )


def event(key: str | bytes | None, ms: int, values: float | list[float]) -> Event:
    """One event at epoch ``ms`` (sent as seconds, ``ts``) with its readings."""
    raw = key.encode() if isinstance(key, str) else key
    return Event(raw, orjson.dumps({"ts": ms / 1000, "values": values}))


def spread(
    rng: random.Random, keys: int, count: int, start: int, span: int, *, jitter: int = 0
) -> list[Event]:
    """``count`` events over ``keys`` keys, event times rising evenly from ``start`` over
    ``span`` ms, each moved by up to ``jitter`` ms either way (out of order: some late).
    Readings: one to four floats, or a bare number."""
    events = []
    for i in range(count):
        ms = start + i * span // count + rng.randint(-jitter, jitter)
        readings = [round(rng.uniform(1.0, 100.0), 6) for _ in range(rng.randint(1, 4))]
        value: float | list[float] = readings[0] if rng.random() < 0.2 else readings
        events.append(event(f"k{rng.randrange(keys):03d}", ms, value))
    return events


async def feed(topics: Topics, events: Iterable[Event]) -> int:
    """Produce ``events`` with `stream produce`'s code; how many were sent."""
    todo = list(events)
    settings = ProduceSettings(
        bootstrap_servers=topics.bootstrap,
        input_topic=topics.input,
        count=len(todo),
        quiet=True,
    )
    sent, _ = await produce(settings, iter(todo))
    assert sent == len(todo)
    return sent


async def close_all(topics: Topics, ms: int) -> None:
    """One record at ``ms`` on every input partition: its stream time moves there, so
    every window ending (with its grace) before it closes. The records' own windows stay
    open, in the service as in the reference."""
    producer = AIOKafkaProducer(bootstrap_servers=topics.bootstrap, acks="all")
    await producer.start()
    try:
        body = orjson.dumps({"ts": ms / 1000, "values": 0.0})
        sent = [
            await producer.send(topics.input, body, key=CLOSER, partition=p)
            for p in range(topics.partitions)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def input_records(topics: Topics, count: int) -> list[Any]:
    records = await read_topic(topics.bootstrap, topics.input, count, wait=60)
    assert len(records) == count, f"{len(records)} of {count} input records read back"
    return records


async def reference(
    topics: Topics, count: int, shape: Shape, idle_until: dict[int, int] | None = None
) -> Outcome:
    """The reference's answer for the ``count`` records of the input topic."""
    events = [e for e in map(event_of, await input_records(topics, count)) if e is not None]
    return run(events, shape, idle_until)


async def assert_outputs(
    topics: Topics, expected: list[Window], aggregates: Iterable[str], wait: float = 60
) -> list[Any]:
    """The output topic (read_committed) holds exactly ``expected``: no window missing,
    none extra, none twice, every aggregate right. The output records."""
    outputs = await read_topic(topics.bootstrap, topics.output, len(expected), wait=wait)
    problems = differences(expected, outputs, tuple(aggregates))
    shown = "\n".join(problems[:20])
    assert not problems, f"{len(problems)} differences from the reference:\n{shown}"
    assert len(outputs) == len(expected)
    return outputs


async def dead_letters(topics: Topics, count: int, wait: float = 30) -> list[Any]:
    return await read_topic(topics.bootstrap, topics.dlq, count, wait=wait)


def source(record: Any) -> tuple[int, int]:
    """(partition, offset) of a dead letter's input record, from its headers."""
    headers = {name: value for name, value in record.headers}
    return int(headers["stream.source.partition"]), int(headers["stream.source.offset"])


def reason(record: Any) -> str:
    return str(dict(record.headers)["stream.error.reason"].decode())


def base_url(service: Service) -> str:
    return metrics_url(service).removesuffix("/metrics")


async def kill_mid_transaction(topics: Topics, service: Service, wait: float = 60) -> None:
    """SIGKILL the service (its process group) while one of its transactions has written
    to the changelog and not committed yet."""
    await mid_transaction(topics, service, signal.SIGKILL, wait=wait)


async def mid_transaction(
    topics: Topics,
    service: Service,
    sig: signal.Signals,
    partitions: Iterable[int] | None = None,
    wait: float = 60,
) -> None:
    """Send ``sig`` to the service's process group while a transaction has written to
    the changelog and not committed yet (the changelog's high watermark ahead of its last
    stable offset) on one of ``partitions`` (default: any)."""
    wanted = range(topics.partitions) if partitions is None else partitions
    parts = [TopicPartition(changelog_topic(topics), p) for p in wanted]
    uncommitted = AIOKafkaConsumer(bootstrap_servers=topics.bootstrap)
    committed = AIOKafkaConsumer(
        bootstrap_servers=topics.bootstrap, isolation_level="read_committed"
    )
    await uncommitted.start()
    await committed.start()
    try:
        deadline = time.monotonic() + wait
        while True:
            stable = await committed.end_offsets(parts)
            high = await uncommitted.end_offsets(parts)
            if any(high[tp] > stable[tp] for tp in parts):
                if sig == signal.SIGKILL:
                    service.kill()
                else:
                    os.killpg(service.process.pid, sig)
                return
            assert service.process.poll() is None, service.log()
            assert time.monotonic() < deadline, "no open transaction seen:\n" + service.log()
            await asyncio.sleep(0.002)
    finally:
        await uncommitted.stop()
        await committed.stop()


def owned(service: Service, topics: Topics) -> list[int]:
    """The input partitions of the service's latest assignment, from its log."""
    line = [x for x in service.lines if "assigned partitions" in x][-1]
    return [p for p in range(topics.partitions) if f"{topics.input}[{p}]" in line]


async def aborted_changelog_records(topics: Topics) -> int:
    """How many records of the changelog a read_uncommitted reader sees and a
    read_committed one does not: those of aborted transactions."""
    seen = {}
    for isolation in ("read_uncommitted", "read_committed"):
        consumer = AIOKafkaConsumer(
            bootstrap_servers=topics.bootstrap,
            isolation_level=isolation,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            parts = [TopicPartition(changelog_topic(topics), p) for p in range(topics.partitions)]
            consumer.assign(parts)
            ends = await consumer.end_offsets(parts)
            count = 0
            while any([await consumer.position(tp) < ends[tp] for tp in parts]):
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    count += len(batch)
            seen[isolation] = count
        finally:
            await consumer.stop()
    return seen["read_uncommitted"] - seen["read_committed"]


def gauge(text: str, name: str) -> float | None:
    """The value of an unlabelled metric in an exposition, or None."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def kill_while_restoring(service: Service, wait: float = 60) -> str:
    """Poll /metrics and /readyz together until the service says it restores window
    state (stream_window_restoring_partitions above 0), then SIGKILL it (its process
    group): what /readyz answered at that moment."""
    base = base_url(service)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        (_, ready), (_, exposition) = await asyncio.gather(
            asyncio.to_thread(get, base + "/readyz"), asyncio.to_thread(get, base + "/metrics")
        )
        if (gauge(exposition.decode(), "stream_window_restoring_partitions") or 0) > 0:
            service.kill()
            return ready.decode()
        await asyncio.sleep(0.005)
    raise AssertionError("the service never said it was restoring:\n" + service.log())


async def metric(service: Service, name: str, at_least: float = 0.0) -> float:
    """The value of an unlabelled metric once it reaches ``at_least`` (or after 30 s)."""
    text = await scrape_until(metrics_url(service), lambda t: (gauge(t, name) or -1) >= at_least)
    found = gauge(text, name)
    assert found is not None, f"no {name} in the metrics"
    return found
