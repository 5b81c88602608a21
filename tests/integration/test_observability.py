"""Metrics, health and lag as an on-call engineer sees them, on a real broker and a
real Prometheus server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from stream.config import RunSettings
from stream.engine import Engine as InProcessService
from stream.pool import WorkerPool
from tests.helpers import (
    STREAM,
    Service,
    Topics,
    feed_demo,
    get,
    make_topics,
    metrics_url,
    read_topic,
    scrape_until,
    send,
    start_service,
)
from tests.prometheus import binary, free_port, running_prometheus

pytestmark = pytest.mark.broker


async def wait_until(predicate: Any, seconds: float = 30.0, step: float = 0.2) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


async def test_prometheus_scrapes_the_counts_and_lag_reaches_zero(
    topics: Topics, services: list[Service]
) -> None:
    count = 3_000
    port = free_port()
    service = start_service(
        topics, "--workers", "1", "--metrics-port", str(port), "--lag-interval", "1"
    )
    services.append(service)
    service.wait_for("assigned partitions")
    with running_prometheus([f"127.0.0.1:{port}"]) as prometheus:
        await feed_demo(topics, count)
        consumed = f'sum(stream_messages_consumed_total{{topic="{topics.input}"}})'
        produced = f'sum(stream_messages_produced_total{{topic="{topics.output}"}})'
        got_in = await asyncio.to_thread(prometheus.wait_for, consumed, count)
        got_out = await asyncio.to_thread(prometheus.wait_for, produced, count)
        assert got_in == count
        assert got_out == count
        lag = await asyncio.to_thread(prometheus.wait_for, "sum(stream_consumer_lag)", 0)
        assert lag == 0
        # Every partition has its lag series, and the target is up.
        assert len(prometheus.query("stream_consumer_lag")) == topics.partitions
        assert prometheus.value('up{job="stream"}') == 1
        dead = prometheus.value(f'sum(stream_messages_produced_total{{topic="{topics.dlq}"}})')
        assert dead == 0
    assert service.terminate() == 0, service.log()


EVERY_SERIES = (
    "stream_messages_consumed_total",
    "stream_messages_produced_total",
    "stream_messages_failed_total",
    "stream_messages_dead_lettered_total",
    "stream_consumer_lag",
    "stream_consumer_lag_seconds",
    "stream_end_to_end_latency_seconds_bucket",
    "stream_transform_duration_seconds_bucket",
    "stream_batch_size_bucket",
    "stream_inflight_messages",
    "stream_inflight_bytes",
    "stream_pool_workers",
    "stream_worker_restarts_total",
    "stream_rebalances_total",
    "stream_commit_duration_seconds_bucket",
    "stream_event_loop_lag_seconds",
    "stream_last_processed_timestamp_seconds",
    "stream_build_info",
)


async def test_exposition_passes_promtool_and_has_every_series(
    topics: Topics, services: list[Service]
) -> None:
    await send(topics.bootstrap, topics.input, [(b"k", b"{bad json")])
    service = start_service(topics, "--workers", "1", "--lag-interval", "1")
    services.append(service)
    url = metrics_url(service)
    await read_topic(topics.bootstrap, topics.dlq, 1, wait=30)
    # Until a lag refresh and a commit made every series (the lag's come per partition).
    text = await scrape_until(url, lambda text: all(f"\n{n}" in text for n in EVERY_SERIES))
    checked = await asyncio.to_thread(
        subprocess.run,
        [binary("promtool"), "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == b"", checked.stdout
    for name in EVERY_SERIES:
        assert f"\n{name}" in text, name
    # Label sets exist from the start, at zero, for reasons that never happened.
    assert 'stream_messages_dead_lettered_total{reason="singular_matrix"} 0.0' in text
    assert 'stream_messages_dead_lettered_total{reason="invalid_json"} 1.0' in text
    assert "stream_pool_workers 1.0" in text
    assert service.terminate() == 0


async def test_readyz_needs_partitions_and_a_standby_takes_over(
    bootstrap: str, services: list[Service]
) -> None:
    topics = await make_topics(bootstrap, partitions=1)
    first = start_service(topics, "--workers", "1", "--lag-interval", "1")
    services.append(first)
    first.wait_for("assigned partitions")
    base_first = metrics_url(first).removesuffix("/metrics")
    status, body = await asyncio.to_thread(get, base_first + "/readyz")
    for _ in range(20):  # the broker check needs one end-offsets answer
        if status == 200:
            break
        await asyncio.sleep(0.5)
        status, body = await asyncio.to_thread(get, base_first + "/readyz")
    assert status == 200, body
    assert json.loads(body)["ok"] is True

    # One partition, two instances: after the rebalance one holds it and is ready, the
    # other has nothing and is not ready (but alive).
    second = start_service(topics, "--workers", "1", "--lag-interval", "1")
    services.append(second)
    base_second = metrics_url(second).removesuffix("/metrics")
    pair = [(first, base_first), (second, base_second)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        answers = [await asyncio.to_thread(get, base + "/readyz") for _, base in pair]
        codes = [code for code, _ in answers]
        reasons = [json.loads(body)["reason"] for _, body in answers]
        settled = sorted(codes) == [200, 503] and "no partitions assigned" in reasons
        if settled or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert sorted(codes) == [200, 503], answers
    held = codes.index(200)
    holder, standby, standby_base = pair[held][0], pair[1 - held][0], pair[1 - held][1]
    body = answers[1 - held][1]
    assert json.loads(body) == {"ok": False, "reason": "no partitions assigned", "partitions": 0}
    status, body = await asyncio.to_thread(get, standby_base + "/healthz")
    assert status == 200, body  # alive all the same

    # The holder leaves: the standby takes its partition over and becomes ready.
    assert holder.terminate() == 0
    deadline = loop.time() + 60
    while True:
        status, body = await asyncio.to_thread(get, standby_base + "/readyz")
        if status == 200 or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert status == 200, body
    assert json.loads(body)["partitions"] == 1
    assert standby.terminate() == 0


@contextlib.asynccontextmanager
async def in_process(settings: RunSettings) -> AsyncIterator[InProcessService]:
    service = InProcessService(settings)
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.assigned.wait(), 60)
        yield service
    finally:
        service.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)


def two_workers(topics: Topics) -> RunSettings:
    return RunSettings(
        bootstrap_servers=topics.bootstrap,
        input_topic=topics.input,
        output_topic=topics.output,
        dlq_topic=topics.dlq,
        group_id=topics.group,
        workers=2,
        metrics_port=0,
        stats_interval=0,
    )


async def test_healthz_fails_when_the_pool_is_dead(topics: Topics) -> None:
    async with in_process(two_workers(topics)) as service:
        base = f"http://127.0.0.1:{service.metrics_port}"
        status, body = await asyncio.to_thread(get, base + "/healthz")
        assert status == 200, body
        assert json.loads(body)["workers_alive"] == 2

        pool = service.pool
        assert isinstance(pool, WorkerPool)
        pool.restart = False  # what a pool that cannot come back looks like
        for pid in pool.pids():
            os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: pool.alive == 0)
        status, body = await asyncio.to_thread(get, base + "/healthz")
        assert status == 503
        answer = json.loads(body)
        assert answer["ok"] is False
        assert "no worker process is alive" in answer["reason"]


async def test_healthz_restarts_killed_workers(topics: Topics) -> None:
    async with in_process(two_workers(topics)) as service:
        pool = service.pool
        assert isinstance(pool, WorkerPool)
        os.kill(pool.pids()[0], signal.SIGKILL)
        await wait_until(lambda: pool.restarts >= 1 and pool.alive == 2)
        base = f"http://127.0.0.1:{service.metrics_port}"
        status, body = await asyncio.to_thread(get, base + "/healthz")
        assert status == 200, body
        _, metrics = await asyncio.to_thread(get, base + "/metrics")
        assert b"stream_worker_restarts_total 1.0" in metrics


def lag_json(topics: Topics) -> dict[str, Any]:
    done = subprocess.run(
        [STREAM, "lag", *topics.input_options(), "--group-id", topics.group, "--json"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    data: dict[str, Any] = orjson.loads(done.stdout)
    return data


async def test_stream_lag_shows_a_known_backlog(topics: Topics, services: list[Service]) -> None:
    await feed_demo(topics, 1_000, seed=3)
    before = await asyncio.to_thread(lag_json, topics)
    assert before["total_lag"] == 1_000
    assert all(p["committed"] is None for p in before["partitions"])
    assert sum(p["end"] for p in before["partitions"]) == 1_000

    service = start_service(topics, "--workers", "1")
    services.append(service)
    await read_topic(topics.bootstrap, topics.output, 1_000, wait=60)
    assert service.terminate() == 0
    await feed_demo(topics, 250, seed=4)  # a backlog of exactly 250 behind the group

    after = await asyncio.to_thread(lag_json, topics)
    assert after["total_lag"] == 250
    assert sum(p["end"] - p["committed"] for p in after["partitions"]) == 250
    table = await asyncio.to_thread(
        subprocess.run,
        [STREAM, "lag", *topics.input_options(), "--group-id", topics.group],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    total = [line for line in table.stdout.splitlines() if line.startswith("total")]
    assert total
    assert total[0].split()[-1] == "250"


async def test_json_logs_are_one_object_per_line(topics: Topics, services: list[Service]) -> None:
    service = start_service(topics, "--workers", "1", "--log-format", "json")
    services.append(service)
    service.wait_for("assigned partitions")
    assert service.terminate() == 0
    lines = [line for line in service.lines if line.strip()]
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= entry.keys()
    assert any("started" in json.loads(line)["msg"] for line in lines)
