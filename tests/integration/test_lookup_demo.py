"""`stream lookup-demo` as the README's enrichment section uses it: the command started
as a user starts it, asked directly, then asked by `stream run --enrich-url` on the real
broker, whose outputs show its answers under ``meta``."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator

import orjson
import pytest

from stream.enrich.demo import lookup
from tests.helpers import (
    ROOT,
    STREAM,
    Service,
    Topics,
    feed_demo,
    get,
    read_topic,
    start_service,
)

pytestmark = pytest.mark.broker


@pytest.fixture
def demo() -> Iterator[str]:
    """`stream lookup-demo --port 0`: its base URL, read from its start line."""
    process = subprocess.Popen(
        [STREAM, "lookup-demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    line = process.stdout.readline()
    try:
        assert "lookup-demo: serving http://127.0.0.1:" in line, line + process.stderr.read()
        address = line.split("serving ", 1)[1].split("/sensors/", 1)[0]
        yield address
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        code = process.wait(10)
        process.stdout.close()
        errors = process.stderr.read()
        process.stderr.close()
    assert code == 0, errors  # Ctrl-C is the way to stop it: a clean exit, no traceback
    assert errors == ""


async def test_the_demo_answers_its_ids_and_a_run_shows_the_answers_under_meta(
    demo: str, topics: Topics, services: list[Service]
) -> None:
    status, body = await asyncio.to_thread(get, f"{demo}/sensors/sensor-0007")
    assert status == 200
    expected = {"sensor_id": "sensor-0007", "site": "east-yard", "owner": "team-b"}
    assert orjson.loads(body) == expected
    assert orjson.loads(body) == lookup("sensor-0007")  # deterministic: the id decides
    for unknown in ("sensor-x", "pump-0001", "sensor-0007x"):
        status, _ = await asyncio.to_thread(get, f"{demo}/sensors/{unknown}")
        assert status == 404, unknown

    service = start_service(
        topics,
        "--transform",
        "identity",
        "--enrich-url",
        demo + "/sensors/{sensor_id}",
    )
    services.append(service)
    await asyncio.to_thread(service.wait_for, "assigned partitions")
    count = 40
    await feed_demo(topics, count, keys=8)
    outputs = await read_topic(topics.bootstrap, topics.output, count)
    assert len(outputs) == count
    for record in outputs:
        value = orjson.loads(record.value)
        assert value["meta"] == lookup(value["sensor_id"]), value
        assert record.key == value["sensor_id"].encode()
    assert await read_topic(topics.bootstrap, topics.dlq, 0, wait=2) == []
    assert await asyncio.to_thread(service.terminate) == 0, service.log()
