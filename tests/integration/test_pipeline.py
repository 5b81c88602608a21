"""The service end to end on a real broker, run as users run it: the `stream` command."""

from __future__ import annotations

import asyncio
import subprocess
from collections import defaultdict
from typing import Any

import numpy as np
import orjson
import pytest

from tests.helpers import (
    STREAM,
    Service,
    Topics,
    committed_offsets,
    end_offsets,
    feed_demo,
    read_topic,
    send,
    start_service,
)
from transforms import resolve

pytestmark = pytest.mark.broker


def by_key(records: list[Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        value = orjson.loads(record.value)
        assert record.key.decode() == value["sensor_id"], "output must keep the input key"
        out[value["sensor_id"]].append(value)
    return out


async def test_10k_events_in_10k_out_keys_order_and_values(
    topics: Topics, services: list[Service]
) -> None:
    events = await feed_demo(topics, 10_000)
    service = start_service(topics, "--workers", "2", "--transform", "sensor-features")
    services.append(service)

    records = await read_topic(topics.bootstrap, topics.output, 10_000, wait=120)
    assert len(records) == 10_000

    outputs = by_key(records)
    inputs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        inputs[event["sensor_id"]].append(event)
    assert outputs.keys() == inputs.keys()
    for key, outs in outputs.items():
        # Per key, outputs in input order, each exactly once.
        assert [o["seq"] for o in outs] == list(range(len(inputs[key]))), key
    # Values: the service's results equal the transform run directly, and a numpy reference.
    expected = resolve("sensor-features").fn([e for k in sorted(inputs) for e in inputs[k]])
    got = [o for k in sorted(outputs) for o in outputs[k]]
    for want, have in zip(expected, got, strict=True):
        assert have["mean"] == pytest.approx(want["mean"])
        assert have["std"] == pytest.approx(want["std"])
        assert have["peak_bins"] == want["peak_bins"]
        assert have["anomaly"] == want["anomaly"]
    sample = inputs["sensor-0000"][0]
    out = outputs["sensor-0000"][0]
    assert out["mean"] == pytest.approx(float(np.mean(sample["values"])))
    assert out["std"] == pytest.approx(float(np.std(sample["values"])))

    assert service.terminate() == 0, service.log()
    # Everything read was committed: a restart would replay nothing.
    ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
    assert await committed_offsets(topics.bootstrap, topics.group) == ends
    dead = await read_topic(topics.bootstrap, topics.dlq, 0, wait=2)
    assert dead == []


async def test_bad_records_go_to_the_dead_letter_topic_and_the_rest_flows(
    topics: Topics, services: list[Service]
) -> None:
    good = [
        (f"s{i}".encode(), orjson.dumps({"sensor_id": f"s{i}", "ts": 1.0, "values": [1.0, 2.0]}))
        for i in range(50)
    ]
    bad: list[tuple[bytes | None, bytes | None, str]] = [
        (b"k-json", b"{not json", "invalid_json"),
        (b"k-utf8", b'{"sensor_id": "\xff\xfe"}', "invalid_utf8"),
        (b"k-shape", orjson.dumps({"sensor_id": "x", "ts": 1.0, "values": "nope"}), "schema"),
        (b"k-missing", orjson.dumps({"values": [1.0]}), "schema"),
        (b"k-empty", b"", "empty"),
        (None, orjson.dumps([1, 2, 3]), "schema"),
    ]
    mixed = good[:25] + [(k, v) for k, v, _ in bad] + good[25:]
    await send(topics.bootstrap, topics.input, mixed)
    service = start_service(topics, "--workers", "1")
    services.append(service)

    outputs = await read_topic(topics.bootstrap, topics.output, len(good), wait=60)
    dead = await read_topic(topics.bootstrap, topics.dlq, len(bad), wait=30)
    assert sorted(r.key for r in outputs) == sorted(k for k, _ in good)
    assert len(dead) == len(bad)
    want = {(k, v): reason for k, v, reason in bad}
    for record in dead:
        headers = {name: value.decode() for name, value in record.headers}
        assert (record.key, record.value) in want, "the dead letter keeps key and value"
        assert headers["stream.error.reason"] == want[(record.key, record.value)]
        assert headers["stream.error.message"]
        assert headers["stream.source.topic"] == topics.input
        source = int(headers["stream.source.partition"]), int(headers["stream.source.offset"])
        assert source[0] in range(topics.partitions)
        assert source[1] >= 0
    assert service.terminate() == 0, service.log()
    # Dead-lettered records count as done: everything is committed.
    ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
    assert await committed_offsets(topics.bootstrap, topics.group) == ends


async def test_sigterm_mid_stream_then_restart_loses_nothing(
    topics: Topics, services: list[Service]
) -> None:
    count = 30_000
    await feed_demo(topics, count, seed=7)
    options = ("--workers", "2", "--batch-max-records", "100", "--drain-timeout", "20")
    first = start_service(topics, *options)
    services.append(first)
    # Stop it while it is busy: once some output exists, but well before the end.
    partial = await read_topic(topics.bootstrap, topics.output, 2_000, wait=60)
    assert len(partial) >= 2_000
    assert first.terminate(timeout=30) == 0, first.log()
    assert "stopped:" in first.log()

    second = start_service(topics, *options)
    services.append(second)
    records = await read_topic(topics.bootstrap, topics.output, count, wait=120)
    assert second.terminate(timeout=30) == 0, second.log()

    seen: dict[str, set[int]] = defaultdict(set)
    for record in records:
        value = orjson.loads(record.value)
        seen[value["sensor_id"]].add(value["seq"])
    assert sum(len(s) for s in seen.values()) == count, "every input has an output"
    for key, seqs in seen.items():
        assert seqs == set(range(len(seqs))), key
    # At-least-once: a graceful stop commits what it finished, so the restart replays
    # nothing that was acknowledged before it.
    assert len(records) == count


async def test_unknown_transform_is_one_clear_line(topics: Topics) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [STREAM, "run", *topics.options(), "--transform", "no-such-transform"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no-such-transform" in lines[0]
    assert "Traceback" not in done.stderr


async def test_missing_topics_is_one_clear_line(topics: Topics) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [
            STREAM,
            "run",
            "--bootstrap-servers",
            topics.bootstrap,
            "--input-topic",
            topics.input + "-absent",
            "--metrics-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, done.stderr
    assert "do not exist" in errors[0]
    assert "stream topics create" in errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
async def test_transactional_input_commits_past_the_markers(
    topics: Topics, services: list[Service], guarantee: str
) -> None:
    """Transaction markers take offsets of their own: once every record is done the
    group's committed offset must reach the end, or lag would read 1 forever."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=topics.bootstrap, transactional_id=f"{topics.group}-writer"
    )
    await producer.start()
    try:
        for chunk in range(3):
            async with producer.transaction():
                for i in range(20):
                    body = {"sensor_id": f"s{i % 4}", "ts": 1.0, "values": [float(chunk), 1.0]}
                    await producer.send(topics.input, orjson.dumps(body), key=f"s{i % 4}".encode())
    finally:
        await producer.stop()
    service = start_service(
        topics, "--workers", "1", "--commit-interval", "0.2", "--guarantee", guarantee
    )
    services.append(service)
    await read_topic(topics.bootstrap, topics.output, 60, wait=60)
    all_ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
    ends = {p: o for p, o in all_ends.items() if o}  # empty partitions have nothing to commit
    assert sum(ends.values()) > 60, "markers occupy offsets"
    for _ in range(50):
        if await committed_offsets(topics.bootstrap, topics.group) == ends:
            break
        await asyncio.sleep(0.2)
    assert await committed_offsets(topics.bootstrap, topics.group) == ends
    assert service.terminate() == 0
