"""The enrichment stage end to end: `stream run --enrich-url/--enrich` on the real broker,
against a real aiohttp server that this test process runs (tests/enrich/server.py) with
the latencies, statuses and stalls each test gives it."""

from __future__ import annotations

import asyncio
import gzip
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos.checker import compare, read_run
from tests.enrich.server import MetaServer, answer
from tests.helpers import (
    Service,
    Topics,
    end_offsets,
    feed_demo,
    get,
    metrics_url,
    read_topic,
    send,
    start_service,
)
from tests.integration.enrich_functions import NO_OWNER

pytestmark = pytest.mark.broker

KEEP_META = "tests.integration.enrich_functions:keep_meta"
OWNER = "tests.integration.enrich_functions:owner"


@pytest.fixture
async def meta() -> AsyncIterator[MetaServer]:
    server = MetaServer()
    await server.start()
    yield server
    await server.stop()


def values(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in sorted(records, key=lambda r: (r.partition, r.offset))]


def scrape(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the service's /metrics: (name, sorted labels) -> value."""
    status, body = get(metrics_url(service))
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def metric(service: Service, name: str, **labels: str) -> float:
    return scrape(service)[(name, tuple(sorted(labels.items())))]


async def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """The consumer group's state and its number of members, as the broker sees them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    entries = [g for response in responses for g in response.groups]
    (entry,) = entries  # (error_code, group_id, state, protocol_type, protocol, members, ...)
    return str(entry[2]), len(entry[5])


async def test_every_output_carries_its_sensors_answer_in_key_order(
    topics: Topics, services: list[Service], meta: MetaServer
) -> None:
    """No cache, answers after a random 0-50 ms each, input arriving in chunks while the
    service runs: every output has the server's answer for its own sensor under ``meta``,
    nothing is lost or duplicated, and per key the outputs keep the input order although
    the answers come back shuffled."""
    rng = random.Random(12)

    async def shuffled(sensor_id: str, n: int) -> web.StreamResponse:
        await asyncio.sleep(rng.uniform(0, 0.05))
        return await answer(sensor_id, n)

    meta.respond = shuffled
    chunk, chunks = 500, 6
    count = chunk * chunks
    service = start_service(
        topics,
        "--transform",
        KEEP_META,
        "--enrich-url",
        meta.url("/sensors/{sensor_id}"),
        "--enrich-cache-size",
        "0",
        "--batch-max-records",
        "100",
    )
    services.append(service)
    await asyncio.to_thread(service.wait_for, "assigned partitions")
    for number in range(chunks):  # in chunks, so that the sensors are asked again and again
        await feed_demo(topics, chunk, seed=41, first_seq_from=number * chunk)
        await asyncio.sleep(0.3)
    inputs, outputs = await read_run(topics, count)
    report = compare(inputs, outputs)
    assert report.lost == [], report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.out_of_order == {}, report.summary()
    assert report.outputs == count, report.summary()
    for value in values(outputs):
        sensor_id = value["sensor_id"]
        assert value["meta"]["id"] == sensor_id, value
        # one of the answers the server gave for this sensor (n counts its requests)
        assert 1 <= value["meta"]["n"] <= meta.requests[sensor_id], value
    # No cache: the 32 sensors were asked again for later chunks, many requests at once.
    assert meta.total > 32 * 2, meta.requests
    assert meta.max_active > 1
    enriched = await asyncio.to_thread(
        metric, service, "stream_enrich_records_total", result="enriched"
    )
    assert enriched == count
    assert await read_topic(topics.bootstrap, topics.dlq, 0, wait=2) == []
    assert await asyncio.to_thread(service.terminate) == 0, service.log()


BROKEN = "sensor-0003"  # the server answers 500, always
GONE = "sensor-0005"  # the server answers 404


@pytest.mark.parametrize("missing", ["fail", "pass"])
async def test_a_lookup_that_fails_for_good_is_a_dead_letter_and_a_404_follows_the_option(
    topics: Topics, services: list[Service], meta: MetaServer, missing: str
) -> None:
    """One sensor's lookups always get a 500 (one retry allowed): its records are dead
    letters with reason enrich_failed and the status in the message. Another's get a 404:
    with ``--enrich-missing pass`` they go out without the field, with ``fail`` they are
    dead letters too. Every other record is enriched, and everything is committed."""

    async def respond(sensor_id: str, n: int) -> web.StreamResponse:
        if sensor_id == BROKEN:
            return web.Response(status=500, text="the sensor database is down")
        if sensor_id == GONE:
            return web.Response(status=404, text="no such sensor")
        return await answer(sensor_id, n)

    meta.respond = respond
    count = 800
    events = await feed_demo(topics, count, seed=42, keys=8)
    service = start_service(
        topics,
        "--transform",
        KEEP_META,
        "--enrich-url",
        meta.url("/sensors/{sensor_id}"),
        "--enrich-retries",
        "1",
        "--enrich-missing",
        missing,
    )
    services.append(service)
    await asyncio.to_thread(service.wait_for, "assigned partitions")
    dead_ids = {BROKEN} if missing == "pass" else {BROKEN, GONE}
    want_dead = [e for e in events if e["sensor_id"] in dead_ids]
    inputs, outputs = await read_run(topics, count, count - len(want_dead))
    dead = await read_topic(topics.bootstrap, topics.dlq, len(want_dead), wait=30)

    kept = [r for r in inputs if orjson.loads(r.value)["sensor_id"] not in dead_ids]
    report = compare(kept, outputs)
    assert report.lost == [], report.summary()
    assert report.unexpected == [], report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.out_of_order == {}, report.summary()
    for value in values(outputs):
        if value["sensor_id"] == GONE:
            assert "meta" not in value, value  # passed without the field
        else:
            assert value["meta"]["id"] == value["sensor_id"], value

    assert sorted((v["sensor_id"], v["seq"]) for v in values(dead)) == sorted(
        (e["sensor_id"], e["seq"]) for e in want_dead
    )
    for letter in dead:
        headers = {name: value.decode() for name, value in letter.headers}
        sensor_id = orjson.loads(letter.value)["sensor_id"]
        assert letter.key == sensor_id.encode()
        assert headers["stream.error.reason"] == "enrich_failed", headers
        status = "HTTP 500" if sensor_id == BROKEN else "HTTP 404"
        assert status in headers["stream.error.message"], headers
        assert headers["stream.source.topic"] == topics.input
    # One retry: the broken sensor was asked at least twice, and never given up on early.
    assert meta.requests[BROKEN] >= 2, meta.requests
    failed = await asyncio.to_thread(
        metric, service, "stream_enrich_records_total", result="failed"
    )
    assert failed == len(want_dead)
    assert service.process.poll() is None, service.log()
    assert await asyncio.to_thread(service.terminate) == 0, service.log()


async def test_a_stalled_server_holds_records_in_flight_within_the_cap_then_all_flow(
    topics: Topics, services: list[Service], meta: MetaServer
) -> None:
    """The server hangs every request for 35 s (past the fetcher's 30 s guard, when it
    pauses every partition and keeps polling). Meanwhile nothing comes out, the records in
    flight (``stream_inflight_messages``) stay within ``--max-inflight-records``, at most
    ``--enrich-concurrency`` requests reach the server, /healthz answers 200 and the
    service stays the group's one member. Once the server answers, every record flows:
    none lost, none duplicated, each key in order."""
    gate = asyncio.Event()

    async def stalled(sensor_id: str, n: int) -> web.StreamResponse:
        await gate.wait()
        return await answer(sensor_id, n)

    meta.respond = stalled
    count, cap, concurrency = 3_000, 300, 10
    await feed_demo(topics, count, seed=43)
    service = start_service(
        topics,
        "--transform",
        KEEP_META,
        "--enrich-url",
        meta.url("/sensors/{sensor_id}"),
        "--enrich-timeout",
        "120",
        "--enrich-concurrency",
        str(concurrency),
        "--max-inflight-records",
        str(cap),
        "--batch-max-records",
        "50",
    )
    services.append(service)
    health = (await asyncio.to_thread(metrics_url, service)).replace("/metrics", "/healthz")
    await asyncio.to_thread(service.wait_for, "assigned partitions")

    inflight: list[float] = []
    statuses: list[int] = []
    started = time.monotonic()
    while time.monotonic() - started < 35:
        inflight.append(await asyncio.to_thread(metric, service, "stream_inflight_messages"))
        statuses.append((await asyncio.to_thread(get, health))[0])
        await asyncio.sleep(0.5)
    produced = await end_offsets(topics.bootstrap, topics.output, topics.partitions)
    state, members = await group_state(topics.bootstrap, topics.group)

    assert sum(produced.values()) == 0, "outputs came out while every lookup hung"
    assert max(inflight) <= cap, inflight
    assert max(inflight) >= 50, inflight  # records really were held, not just never read
    assert 0 < meta.max_active <= concurrency, meta.max_active
    assert set(statuses) == {200}, statuses
    assert (state, members) == ("Stable", 1), (state, members)
    assert service.process.poll() is None, service.log()

    gate.set()  # the server recovers
    inputs, outputs = await read_run(topics, count)
    report = compare(inputs, outputs)
    assert report.lost == [], report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.out_of_order == {}, report.summary()
    assert all(v["meta"]["id"] == v["sensor_id"] for v in values(outputs))
    assert await read_topic(topics.bootstrap, topics.dlq, 0, wait=2) == []
    assert await asyncio.to_thread(service.terminate) == 0, service.log()


async def test_a_user_lookup_coroutine_end_to_end(topics: Topics, services: list[Service]) -> None:
    """``--enrich module:function``: the coroutine's answer (after shuffled 0-30 ms sleeps)
    is under ``meta`` of every output, in key order; the sensor it returns None for is
    dead-lettered (reason enrich_failed) under the default ``--enrich-missing fail``."""
    count = 1_600
    events = await feed_demo(topics, count, seed=44, keys=16)
    service = start_service(
        topics, "--transform", KEEP_META, "--enrich", OWNER, "--batch-max-records", "100"
    )
    services.append(service)
    await asyncio.to_thread(service.wait_for, "assigned partitions")
    want_dead = [e for e in events if e["sensor_id"] == NO_OWNER]
    inputs, outputs = await read_run(topics, count, count - len(want_dead))
    assert want_dead
    dead = await read_topic(topics.bootstrap, topics.dlq, len(want_dead), wait=30)

    kept = [r for r in inputs if orjson.loads(r.value)["sensor_id"] != NO_OWNER]
    report = compare(kept, outputs)
    assert report.lost == [], report.summary()
    assert report.unexpected == [], report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.out_of_order == {}, report.summary()
    for value in values(outputs):
        sensor_id = value["sensor_id"]
        assert value["meta"] == {"owner": sensor_id.upper(), "key": sensor_id}, value
    assert sorted(v["seq"] for v in values(dead)) == sorted(e["seq"] for e in want_dead)
    for letter in dead:
        headers = {name: value.decode() for name, value in letter.headers}
        assert letter.key == NO_OWNER.encode()
        assert headers["stream.error.reason"] == "enrich_failed", headers
        assert "returned None" in headers["stream.error.message"], headers
    enriched = await asyncio.to_thread(
        metric, service, "stream_enrich_records_total", result="enriched"
    )
    assert enriched == len(outputs)
    assert await asyncio.to_thread(service.terminate) == 0, service.log()


async def test_records_cannot_steer_lookups_and_credentials_stay_secret(
    topics: Topics, services: list[Service], meta: MetaServer
) -> None:
    """Issue 20, item 4, end to end. The template ``/tenants/{tenant}/sensors/{sensor_id}``
    carries credentials (user information and ``?token=``). Records whose tenant is
    ``..``, ``.`` or empty would reach another tenant's path: they are dead letters with
    reason ``enrich_refused`` and no request leaves for them. One sensor's lookups get a
    403, another's a gzip bomb (20 MB in ~20 KB): dead letters with reason
    ``enrich_failed``, whose messages, like the service's log, never show the
    credentials. Every other record is enriched, and the service keeps running."""
    bomb = gzip.compress(b'{"blob": "' + b"x" * 20_000_000 + b'"}')

    async def respond(sensor_id: str, n: int) -> web.StreamResponse:
        if sensor_id == "denied":
            return web.Response(status=403, text="forbidden")
        if sensor_id == "bomb":
            headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
            return web.Response(body=bomb, headers=headers)
        return await answer(sensor_id, n)

    meta.respond = respond
    tenants = ["t1", "..", "t1", ".", "t1", "", "t1", "t1"]
    sensors = ["s-1", "s-2", "denied", "s-3", "bomb", "s-4", "s-5", "s-6"]
    rows: list[dict[str, Any]] = [
        {"tenant": t, "sensor_id": s, "seq": n}
        for n, (t, s) in enumerate(zip(tenants * 25, sensors * 25, strict=True))
    ]
    await send(
        topics.bootstrap,
        topics.input,
        [(r["sensor_id"].encode(), orjson.dumps(r)) for r in rows],
    )
    url = meta.url("/tenants/{tenant}/sensors/{sensor_id}?token=t0ken")
    url = url.replace("http://", "http://reader:s3cret@")
    service = start_service(topics, "--transform", KEEP_META, "--enrich-url", url)
    services.append(service)
    refused = [r for r in rows if r["tenant"] != "t1"]
    failed = [r for r in rows if r["sensor_id"] in ("denied", "bomb")]
    kept = [r for r in rows if r not in refused and r not in failed]
    outputs = await read_topic(topics.bootstrap, topics.output, len(kept), wait=60)
    dead = await read_topic(topics.bootstrap, topics.dlq, len(refused) + len(failed), wait=30)

    assert sorted(v["seq"] for v in values(outputs)) == sorted(r["seq"] for r in kept)
    assert all(v["meta"]["id"] == v["sensor_id"] for v in values(outputs))
    reasons: dict[int, str] = {}
    for letter in dead:
        headers = {name: value.decode() for name, value in letter.headers}
        reasons[orjson.loads(letter.value)["seq"]] = headers["stream.error.reason"]
        message = headers["stream.error.message"]
        assert "s3cret" not in message, headers
        assert "t0ken" not in message, headers
        if headers["stream.error.reason"] == "enrich_refused":
            assert "changes the path's shape" in message, headers
    assert reasons == {
        **{r["seq"]: "enrich_refused" for r in refused},
        **{r["seq"]: "enrich_failed" for r in failed},
    }
    # every request the server saw has the template's shape, under the one tenant
    assert meta.paths
    assert all(p.startswith("/tenants/t1/sensors/") for p in meta.paths), set(meta.paths)
    count = await asyncio.to_thread(
        metric, service, "stream_enrich_records_total", result="refused"
    )
    assert count == len(refused)
    assert service.process.poll() is None, service.log()
    assert await asyncio.to_thread(service.terminate) == 0, service.log()
    assert "s3cret" not in service.log()
    assert "t0ken" not in service.log()
