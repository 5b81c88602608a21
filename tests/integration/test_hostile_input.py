"""Hostile input: every kind goes to the dead-letter topic with its reason, the good
records around it flow, and the service's memory stays bounded."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.helpers import Service, Topics, read_topic, rss_of_group, send, start_service

pytestmark = pytest.mark.broker


def sensor(i: int, **override: object) -> bytes:
    body: dict[str, object] = {"sensor_id": f"s{i}", "seq": i, "ts": 1.0, "values": [1.0, 2.0]}
    body.update(override)
    return orjson.dumps(body)


HOSTILE: list[tuple[str, bytes | None, bytes | None, str]] = [
    # (name, key, value, reason)
    ("invalid utf-8", b"h1", b'{"sensor_id": "\xc3\x28"}', "invalid_utf8"),
    ("invalid json", b"h2", b'{"sensor_id": "x", "ts": 1,', "invalid_json"),
    ("nested 10,000 deep", b"h3", b"[" * 10_000 + b"]" * 10_000, "invalid_json"),
    ("NaN", b"h4", b'{"sensor_id": "x", "ts": 1.0, "values": [NaN]}', "invalid_json"),
    ("Infinity", b"h5", b'{"sensor_id": "x", "ts": 1.0, "values": [Infinity]}', "invalid_json"),
    (
        "overflowing number",
        b"h6",
        b'{"sensor_id": "x", "ts": 1.0, "values": [1e999]}',
        "invalid_json",
    ),
    ("wrong types", b"h7", sensor(7, values=["a", "b"]), "schema"),
    ("wrong type of id", b"h8", sensor(8, sensor_id=17), "schema"),
    ("missing fields", b"h9", orjson.dumps({"sensor_id": "x"}), "schema"),
    ("empty array", b"h10", sensor(10, values=[]), "schema"),
    ("not an object", b"h11", b"[1, 2, 3]", "schema"),
    ("array over the limit", b"h12", sensor(12, values=[0.5] * 100_001), "limit"),
    ("empty value", b"h13", b"", "empty"),
    ("null value", b"h14", None, "empty"),
    ("null key", None, sensor(15), "null_key"),
]


async def test_hostile_records_are_dead_lettered_with_reasons(
    topics: Topics, services: list[Service]
) -> None:
    good = [(f"s{i}".encode(), sensor(i)) for i in range(40)]
    records = good[:20] + [(key, value) for _, key, value, _ in HOSTILE] + good[20:]
    await send(topics.bootstrap, topics.input, records)
    # --require-key: a record without a key is a dead letter (null_key) only when asked;
    # by default it is processed.
    service = start_service(topics, "--workers", "2", "--require-key")
    services.append(service)

    outputs = await read_topic(topics.bootstrap, topics.output, len(good), wait=60)
    dead = await read_topic(topics.bootstrap, topics.dlq, len(HOSTILE), wait=60)
    assert sorted(r.key for r in outputs) == sorted(k for k, _ in good)
    assert len(dead) == len(HOSTILE)
    by_value = {(r.key, r.value): dict(r.headers) for r in dead}
    for name, key, value, reason in HOSTILE:
        headers = by_value.get((key, value or b""))
        assert headers is not None, f"{name}: not in the dead-letter topic"
        assert headers["stream.error.reason"].decode() == reason, name
        assert headers["stream.error.message"], name
    assert service.terminate(timeout=30) == 0, service.log()


async def test_huge_records_are_dead_lettered_truncated_with_bounded_memory(
    topics: Topics, services: list[Service], tmp_path: Path
) -> None:
    """A record near the broker's size limit, and an array of 10 million numbers (which
    only reaches the topic compressed): both over --max-record-bytes."""
    near_limit = b'{"sensor_id": "big", "values": [' + b"1," * 1_900_000 + b"1]}"  # ~3.8 MB
    ten_million = b'{"sensor_id": "huge", "values": [' + b"0," * 9_999_999 + b"0]}"  # 20 MB
    producer = AIOKafkaProducer(
        bootstrap_servers=topics.bootstrap,
        compression_type="gzip",
        max_request_size=32 * 1024 * 1024,  # checked before compression, by the client
        max_batch_size=32 * 1024 * 1024,
    )
    await producer.start()
    try:
        await producer.send_and_wait(topics.input, near_limit, key=b"big")
        await producer.send_and_wait(topics.input, ten_million, key=b"huge")
    finally:
        await producer.stop()
    await send(topics.bootstrap, topics.input, [(b"s1", sensor(1))])

    service = start_service(
        topics,
        "--workers",
        "1",
        "--max-record-bytes",
        "1MiB",
        "--max-partition-fetch-bytes",
        "8MiB",
    )
    services.append(service)
    dead = await read_topic(topics.bootstrap, topics.dlq, 2, wait=60)
    outputs = await read_topic(topics.bootstrap, topics.output, 1, wait=30)
    assert [r.key for r in outputs] == [b"s1"]
    sizes = {r.key: dict(r.headers) for r in dead}
    assert set(sizes) == {b"big", b"huge"}
    for key, original in ((b"big", near_limit), (b"huge", ten_million)):
        headers = sizes[key]
        assert headers["stream.error.reason"] == b"too_large"
        assert int(headers["stream.error.original-size"]) == len(original)
    for record in dead:
        # Cut so that the whole dead letter, key and headers too, fits the dead-letter
        # topic at Kafka's default limit (1,048,588 bytes), keeping nearly all of it.
        size = len(record.value) + len(record.key or b"")
        size += sum(len(name) + len(data) for name, data in record.headers)
        assert size <= 1_048_588
        assert len(record.value) > 1_040_000
    assert rss_of_group(service.process.pid) < 700 * 1024 * 1024
    assert service.terminate(timeout=30) == 0, service.log()
