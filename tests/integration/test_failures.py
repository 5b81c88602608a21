"""Failures users meet in production, on the real broker at Kafka's default limits:
records the broker refuses, a fenced producer, a record that hangs its transform,
and a shutdown that must end whatever is stuck."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.chaos.checker import check
from tests.helpers import (
    MISBEHAVE,
    Service,
    Topics,
    committed_offsets,
    feed_demo,
    get,
    metrics_url,
    read_topic,
    send,
    start_service,
    wait_caught_up,
    worker_pids,
)

pytestmark = pytest.mark.broker

OUTPUT_LIMIT = 200_000


def still_running(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


async def set_record_limit(bootstrap: str, topic: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(limit)}
        )
        await admin.alter_configs([resource])
    finally:
        await admin.close()


def event(seq: int, pad: int = 0) -> bytes:
    return orjson.dumps({"sensor_id": "k", "seq": seq, "pad": "x" * pad})


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
async def test_an_output_the_broker_refuses_is_a_dead_letter_and_nothing_else_is_lost(
    topics: Topics, services: list[Service], guarantee: str
) -> None:
    """The output topic takes 200 kB; one output is 300 kB. It becomes a dead letter
    (output_refused, with the broker's error), every other record flows, the offsets
    reach the end, and the service keeps running (no crash loop)."""
    await set_record_limit(topics.bootstrap, topics.output, OUTPUT_LIMIT)
    records = [event(i, 300_000 if i == 10 else 10) for i in range(21)]
    await send(topics.bootstrap, topics.input, [(b"k", v) for v in records])
    service = start_service(topics, "--transform", "identity", "--guarantee", guarantee)
    services.append(service)
    assert await wait_caught_up(topics, wait=60), service.log()
    outputs = await read_topic(topics.bootstrap, topics.output, 20, wait=30)
    assert [orjson.loads(r.value)["seq"] for r in outputs] == [i for i in range(21) if i != 10]
    (letter,) = await read_topic(topics.bootstrap, topics.dlq, 1, wait=30)
    headers = dict(letter.headers)
    assert headers["stream.error.reason"] == b"output_refused"
    assert b"MessageSizeTooLargeError" in headers["stream.error.message"]
    assert headers["stream.source.offset"] == b"10"
    assert service.process.poll() is None, service.log()
    assert service.terminate() == 0, service.log()


async def test_a_fenced_producer_is_replaced_and_every_record_is_written_once(
    topics: Topics, services: list[Service]
) -> None:
    """A second client initialises the service's transactional ids while it runs: the
    service drops the fenced producers (no abort), starts new ones, re-reads the
    committed offsets and goes on; read_committed sees every input exactly once."""
    count = 6_000
    options = ("--guarantee", "exactly-once", "--workers", "1", "--batch-max-records", "50")
    service = start_service(topics, *options)
    services.append(service)
    service.wait_for("assigned partitions")
    await feed_demo(topics, count // 2, seed=31)
    for partition in range(topics.partitions):
        intruder = AIOKafkaProducer(
            bootstrap_servers=topics.bootstrap,
            transactional_id=f"{topics.group}-{topics.input}-{partition}",
        )
        await intruder.start()  # fences the service's producer for this partition
        await intruder.stop()
    await feed_demo(topics, count // 2, seed=31, first_seq_from=count // 2)
    report = await check(topics, count)
    assert report.lost == [], report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.out_of_order == {}, report.summary()
    assert "lost its transactional id" in service.log(), service.log()
    assert service.process.poll() is None, service.log()
    assert service.terminate() == 0, service.log()


async def test_a_hanging_record_is_dead_lettered_within_three_batch_timeouts(
    topics: Topics, services: list[Service]
) -> None:
    """Default batch size, --batch-timeout 5: the hanging record is a dead letter within
    20 s, every other record is out, and /healthz answers 200 on every probe."""
    count = 3_000
    await feed_demo(topics, count, seed=32)
    hang = orjson.dumps({"sensor_id": "hang", "seq": 0, "hang": True})
    await send(topics.bootstrap, topics.input, [(b"hang", hang)])
    service = start_service(topics, "--transform", MISBEHAVE, "--batch-timeout", "5")
    services.append(service)
    health = metrics_url(service).replace("/metrics", "/healthz")
    statuses: list[int] = []

    async def probe() -> None:
        while True:
            statuses.append((await asyncio.to_thread(get, health))[0])
            await asyncio.sleep(0.5)

    prober = asyncio.create_task(probe())
    try:
        service.wait_for("assigned partitions")
        started = time.monotonic()
        (letter,) = await read_topic(topics.bootstrap, topics.dlq, 1, wait=30)
        elapsed = time.monotonic() - started
        outputs = await read_topic(topics.bootstrap, topics.output, count, wait=30)
    finally:
        prober.cancel()
    assert dict(letter.headers)["stream.error.reason"] == b"worker_timeout"
    assert letter.key == b"hang"
    assert elapsed <= 20, elapsed
    assert len(outputs) == count
    assert statuses, "no probe answered"
    assert set(statuses) == {200}, statuses
    assert service.terminate() == 0, service.log()


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
async def test_sigterm_ends_the_process_while_a_worker_hangs(
    topics: Topics, services: list[Service], guarantee: str
) -> None:
    """SIGTERM with a hung worker: the process ends within --drain-timeout + 15 s, no
    worker outlives it, and nothing past the hung record is committed."""
    await send(topics.bootstrap, topics.input, [(b"k", event(i)) for i in range(5)])
    hang = orjson.dumps({"sensor_id": "k", "seq": 5, "hang": True})
    await send(topics.bootstrap, topics.input, [(b"k", hang)])
    service = start_service(
        topics,
        "--transform",
        MISBEHAVE,
        "--guarantee",
        guarantee,
        "--drain-timeout",
        "3",
        "--batch-timeout",
        "60",
        "--batch-max-records",
        "1",
    )
    services.append(service)
    service.wait_for("assigned partitions")
    await read_topic(topics.bootstrap, topics.output, 5, wait=30)
    pids = worker_pids(service)
    await asyncio.sleep(1.0)
    started = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(service.process.wait, 30)
    assert time.monotonic() - started <= 3 + 15, service.log()
    service.close()
    await asyncio.sleep(0.5)
    assert still_running(pids) == []
    committed = await committed_offsets(topics.bootstrap, topics.group)
    assert max(committed.values(), default=0) <= 5, committed  # not past the hung record
