"""The enrichment stage against a real aiohttp web server on 127.0.0.1 (a free port,
started and stopped by each test), and a user's own lookup coroutine."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from stream.config import RunSettings, load
from stream.enrich.outcome import ENRICH_FAILED, EnrichResult
from stream.enrich.retry import RetryPolicy
from stream.enrich.stage import Enricher, enrich_then_process
from stream.enrich.user import LookupLoadError, UserLookup, load_function
from stream.metrics import EnrichMetrics
from stream.pool import WorkerPool
from stream.url_template import UrlTemplate
from tests.enrich import lookups
from tests.enrich.server import MetaServer, answer, delayed

FAST = RetryPolicy(retries=3, base=0.01, cap=0.05)


@pytest.fixture
async def meta() -> AsyncIterator[MetaServer]:
    server = MetaServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Enricher]]:
    made: list[Enricher] = []

    def build(url: str | None = None, **options: object) -> Enricher:
        options.setdefault("policy", FAST)
        enricher = Enricher(
            metrics=EnrichMetrics(CollectorRegistry()),
            url=UrlTemplate.parse(url) if url else None,
            **options,  # type: ignore[arg-type]
        )
        made.append(enricher)
        return enricher

    yield build
    for enricher in made:
        await enricher.close()


def sensors(*ids: str) -> tuple[list[bytes | None], list[bytes | None]]:
    keys: list[bytes | None] = [i.encode() for i in ids]
    values: list[bytes | None] = [
        orjson.dumps({"sensor_id": i, "seq": n}) for n, i in enumerate(ids)
    ]
    return keys, values


def answers(result: EnrichResult) -> list[object]:
    return [None if e is None else orjson.loads(e) for e in result.enrichment]


def count(enricher: Enricher, metric: str, **labels: str) -> float:
    """A counter's value: ``count(e, "requests", outcome="ok")`` is
    ``stream_enrich_requests_total{outcome="ok"}``."""
    value = enricher.metrics.registry.get_sample_value(f"stream_enrich_{metric}_total", labels)
    assert value is not None, (metric, labels)
    return value


# ---- latency, order, concurrency -------------------------------------------------------------


async def test_lookups_run_concurrently_under_added_latency(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    meta.respond = delayed(0.05)
    enricher = make(meta.url(), concurrency=100)
    await enricher.start()
    ids = [f"s-{i}" for i in range(200)]
    started = time.monotonic()
    result = await enricher.enrich(*sensors(*ids))
    elapsed = time.monotonic() - started
    assert result.errors == []
    assert answers(result) == [{"id": i, "n": 1} for i in ids]
    assert meta.total == 200
    # 200 lookups of 50 ms, 100 at a time: two rounds, not 10 s in a row
    assert elapsed < 1.0, elapsed


async def test_results_keep_input_order_under_shuffled_latencies(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    rng = random.Random(7)
    latency = {f"s-{i}": rng.uniform(0, 0.05) for i in range(100)}

    async def shuffled(sensor_id: str, n: int) -> web.StreamResponse:
        await asyncio.sleep(latency[sensor_id])
        return await answer(sensor_id, n)

    meta.respond = shuffled
    enricher = make(meta.url(), concurrency=50)
    await enricher.start()
    ids = [f"s-{rng.randrange(100)}" for _ in range(300)]
    result = await enricher.enrich(*sensors(*ids))
    assert [a["id"] for a in answers(result)] == ids  # type: ignore[index]


async def test_requests_in_flight_never_exceed_the_cap(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    meta.respond = delayed(0.02)
    enricher = make(meta.url(), concurrency=10)
    await enricher.start()
    batches = [sensors(*(f"b{b}-s{i}" for i in range(50))) for b in range(4)]
    results = await asyncio.gather(*(enricher.enrich(*batch) for batch in batches))
    assert all(r.errors == [] for r in results)
    assert meta.total == 200
    assert meta.max_active == 10  # the cap, reached and never passed, over all batches


async def test_a_stalled_server_makes_enrich_wait_not_pile_up_tasks(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    release = asyncio.Event()

    async def stall(sensor_id: str, n: int) -> web.StreamResponse:
        await release.wait()
        return await answer(sensor_id, n)

    meta.respond = stall
    enricher = make(meta.url(), concurrency=5, timeout=30.0)
    await enricher.start()
    batches = [sensors(*(f"b{b}-s{i}" for i in range(20))) for b in range(10)]
    calls = [asyncio.create_task(enricher.enrich(*batch)) for batch in batches]
    await asyncio.sleep(0.3)
    assert meta.active == 5
    assert enricher.inflight == 5
    assert enricher.requests_in_flight == 5
    gauge = enricher.metrics.registry.get_sample_value("stream_enrich_inflight_requests")
    assert gauge == 5
    assert enricher.running == 5  # 200 records waiting: 5 tasks, not 200
    assert not any(c.done() for c in calls)
    release.set()
    results = await asyncio.gather(*calls)
    assert all(r.errors == [] for r in results)
    assert meta.max_active == 5
    assert meta.total == 200
    assert enricher.running == 0
    assert enricher.inflight == 0
    assert enricher.metrics.registry.get_sample_value("stream_enrich_inflight_requests") == 0
    assert enricher.metrics.registry.get_sample_value("stream_enrich_cache_entries") == 200


# ---- retries ---------------------------------------------------------------------------------


async def test_5xx_then_success(meta: MetaServer, make: Callable[..., Enricher]) -> None:
    async def flaky(sensor_id: str, n: int) -> web.StreamResponse:
        if n <= 2:
            return web.json_response({"error": "busy"}, status=503)
        return await answer(sensor_id, n)

    meta.respond = flaky
    enricher = make(meta.url())
    await enricher.start()
    result = await enricher.enrich(*sensors("a"))
    assert answers(result) == [{"id": "a", "n": 3}]
    assert meta.requests["a"] == 3
    assert count(enricher, "requests", outcome="server_error") == 2
    assert count(enricher, "requests", outcome="ok") == 1
    assert count(enricher, "retries") == 2


async def test_5xx_past_the_retry_budget_is_a_dead_letter_with_the_status(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    async def down(sensor_id: str, n: int) -> web.StreamResponse:
        return web.Response(status=502, text="bad gateway")

    meta.respond = down
    enricher = make(meta.url(), policy=RetryPolicy(retries=2, base=0.01))
    await enricher.start()
    result = await enricher.enrich(*sensors("a", "b"))
    assert result.enrichment == [None, None]
    assert [(i, r) for i, r, _ in result.errors] == [(0, ENRICH_FAILED), (1, ENRICH_FAILED)]
    assert "HTTP 502" in result.errors[0][2]
    assert "bad gateway" in result.errors[0][2]
    assert "(3 attempts)" in result.errors[0][2]
    assert meta.requests == {"a": 3, "b": 3}
    assert count(enricher, "records", result="failed") == 2


async def test_429_waits_as_long_as_retry_after_says(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    async def throttle(sensor_id: str, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return await answer(sensor_id, n)

    meta.respond = throttle
    enricher = make(meta.url(), policy=RetryPolicy(retries=2, base=0.001, cap=0.01))
    await enricher.start()
    result = await enricher.enrich(*sensors("a"))
    assert answers(result) == [{"id": "a", "n": 2}]
    first, second = meta.times["a"]
    assert second - first >= 0.95  # the backoff alone would be ~1 ms
    assert count(enricher, "requests", outcome="throttled") == 1


async def test_a_4xx_is_not_retried(meta: MetaServer, make: Callable[..., Enricher]) -> None:
    async def refuse(sensor_id: str, n: int) -> web.StreamResponse:
        return web.Response(status=403, text="no")

    meta.respond = refuse
    enricher = make(meta.url())
    await enricher.start()
    result = await enricher.enrich(*sensors("a"))
    assert result.errors == [(0, ENRICH_FAILED, f"HTTP 403 from {meta.url('/sensors/a')}: no")]
    assert meta.requests["a"] == 1


async def test_timeouts_are_retried(meta: MetaServer, make: Callable[..., Enricher]) -> None:
    async def slow_first(sensor_id: str, n: int) -> web.StreamResponse:
        if n == 1 or sensor_id == "never":
            await asyncio.sleep(2)
        return await answer(sensor_id, n)

    meta.respond = slow_first
    enricher = make(meta.url(), timeout=0.2, policy=RetryPolicy(retries=1, base=0.01))
    await enricher.start()
    started = time.monotonic()
    result = await enricher.enrich(*sensors("a", "never"))
    assert time.monotonic() - started < 1.5
    assert answers(result)[0] == {"id": "a", "n": 2}
    assert result.errors == [(1, ENRICH_FAILED, "no answer within 0.2s (2 attempts)")]
    assert count(enricher, "requests", outcome="timeout") == 3


async def test_a_server_that_goes_away_and_comes_back(make: Callable[..., Enricher]) -> None:
    server = MetaServer()
    await server.start()
    try:
        policy = RetryPolicy(retries=20, base=0.05, cap=0.2)
        enricher = make(server.url(), policy=policy, timeout=1.0)
        await enricher.start()
        assert (await enricher.enrich(*sensors("before"))).errors == []
        await server.stop()
        call = asyncio.create_task(enricher.enrich(*sensors("during-1", "during-2")))
        await asyncio.sleep(0.6)
        assert not call.done()
        assert count(enricher, "requests", outcome="connection_error") >= 2
        await server.start()  # the same port
        result = await asyncio.wait_for(call, 5)
        assert result.errors == []
        assert [a["id"] for a in answers(result)] == ["during-1", "during-2"]  # type: ignore[index]
    finally:
        await server.stop()


async def test_a_server_that_never_comes_back_fails_the_records(
    make: Callable[..., Enricher],
) -> None:
    server = MetaServer()  # never started: connections are refused
    enricher = make(server.url(), policy=RetryPolicy(retries=2, base=0.01))
    await enricher.start()
    result = await enricher.enrich(*sensors("a"))
    (index, reason, message), *_ = result.errors
    assert (index, reason) == (0, ENRICH_FAILED)
    assert "(3 attempts)" in message
    assert "ClientConnectorError" in message


# ---- 404, answers that are not JSON, records without the field ------------------------------


async def test_404_fails_or_passes_as_enrich_missing_says(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    async def unknown(sensor_id: str, n: int) -> web.StreamResponse:
        if sensor_id.startswith("u"):
            return web.Response(status=404)
        return await answer(sensor_id, n)

    meta.respond = unknown
    failing = make(meta.url())
    passing = make(meta.url(), missing_pass=True)
    for enricher in (failing, passing):
        await enricher.start()
    keys, values = sensors("a", "u1")
    failed = await failing.enrich(keys, values)
    assert failed.errors == [(1, ENRICH_FAILED, f"HTTP 404 from {meta.url('/sensors/u1')}")]
    passed = await passing.enrich(keys, values)
    assert passed.errors == []
    assert answers(passed) == [{"id": "a", "n": 2}, None]  # n: each stage asked once
    assert count(passing, "records", result="passed") == 1
    # a 404 is cached like an answer
    await passing.enrich(keys, values)
    assert meta.requests["u1"] == 2


async def test_an_answer_that_is_not_json_fails_without_retry(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    async def html(sensor_id: str, n: int) -> web.StreamResponse:
        return web.Response(text="<html>", content_type="text/html")

    meta.respond = html
    enricher = make(meta.url())
    await enricher.start()
    result = await enricher.enrich(*sensors("a"))
    assert "the answer is not JSON" in result.errors[0][2]
    assert meta.requests["a"] == 1


async def test_records_that_cannot_fill_the_url(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    enricher = make(meta.url(), max_record_bytes=1000)
    await enricher.start()
    keys: list[bytes | None] = [b"k"] * 5
    values: list[bytes | None] = [
        b'{"seq": 1}',  # no sensor_id: a dead letter that says so
        b"[1, 2]",  # not an object
        b"not json",  # the worker names it invalid_json: not looked up
        None,  # the worker names it empty
        b'{"sensor_id": "' + b"x" * 2000 + b'"}',  # too large for the worker
    ]
    result = await enricher.enrich(keys, values)
    assert result.errors == [
        (0, ENRICH_FAILED, "the record has no field 'sensor_id' for the enrichment URL"),
        (1, ENRICH_FAILED, "the record is not a JSON object, so it has no 'sensor_id'"),
    ]
    assert meta.total == 0
    assert count(enricher, "records", result="skipped") == 3


async def test_key_only_url_reads_no_record(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    enricher = make(meta.url("/sensors/{key}"))
    await enricher.start()
    result = await enricher.enrich([b"a/b", b"c"], [b"not even json", None])
    assert answers(result) == [{"id": "a/b", "n": 1}, {"id": "c", "n": 1}]


# ---- cache and single-flight -----------------------------------------------------------------


async def test_a_99_percent_hit_rate_sends_1_percent_of_requests(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    enricher = make(meta.url(), cache_size=100, cache_ttl=60.0)
    await enricher.start()
    ids = [f"s-{i % 10}" for i in range(1000)]
    for start in range(0, 1000, 10):  # each batch of 10 holds the 10 sensors once
        result = await enricher.enrich(*sensors(*ids[start : start + 10]))
        assert [a["id"] for a in answers(result)] == ids[start : start + 10]  # type: ignore[index]
    assert count(enricher, "cache_hits") == 990  # a 99% hit rate...
    assert count(enricher, "cache_misses") == 10
    assert meta.total == 10  # ...sends 1% of the records' lookups


async def test_the_cache_expires_answers(meta: MetaServer, make: Callable[..., Enricher]) -> None:
    now = [0.0]
    enricher = make(meta.url(), cache_ttl=10.0, clock=lambda: now[0])
    await enricher.start()
    assert answers(await enricher.enrich(*sensors("a"))) == [{"id": "a", "n": 1}]
    now[0] = 9.9
    assert answers(await enricher.enrich(*sensors("a"))) == [{"id": "a", "n": 1}]
    now[0] = 10.0
    assert answers(await enricher.enrich(*sensors("a"))) == [{"id": "a", "n": 2}]


async def test_single_flight_100_records_of_one_sensor_make_one_request(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    meta.respond = delayed(0.05)
    enricher = make(meta.url(), cache_size=0)  # no cache: single-flight alone
    await enricher.start()
    result = await enricher.enrich(*sensors(*["same"] * 100))
    assert meta.requests["same"] == 1
    assert answers(result) == [{"id": "same", "n": 1}] * 100


async def test_single_flight_across_concurrent_batches(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    meta.respond = delayed(0.1)
    enricher = make(meta.url(), concurrency=2)
    await enricher.start()
    results = await asyncio.gather(
        *(enricher.enrich(*sensors("same", f"own-{b}")) for b in range(5))
    )
    assert meta.requests["same"] == 1
    assert all(answers(r)[0] == {"id": "same", "n": 1} for r in results)
    assert meta.max_active <= 2


# ---- a user's own coroutine ------------------------------------------------------------------


async def test_a_user_coroutine_with_the_same_rules(make: Callable[..., Enricher]) -> None:
    lookups.calls.clear()
    lookups.running[:] = [0, 0]
    fn = load_function("tests.enrich.lookups:owner")
    enricher = make(user=UserLookup(fn), timeout=0.3, concurrency=3)
    await enricher.start()
    ids = ["a-1", "n-1", "x-1", "r-1", "slow-1", "a-2", *(f"a-{i}" for i in range(3, 30))]
    result = await enricher.enrich(*sensors(*ids))
    assert answers(result) == [
        {"owner": "A-1", "key": "a-1"},
        None,
        None,
        {"owner": "R-1", "key": "r-1"},
        None,
        {"owner": "A-2", "key": "a-2"},
        *({"owner": f"A-{i}", "key": f"a-{i}"} for i in range(3, 30)),
    ]
    assert result.errors == [
        (1, ENRICH_FAILED, "the lookup returned None"),
        (2, ENRICH_FAILED, "KeyError: 'x-1'"),
        (4, ENRICH_FAILED, "no answer within 0.3s (4 attempts)"),
    ]
    assert lookups.calls["r-1"] == 2  # RetryLater, then the answer
    assert lookups.calls["slow-1"] == 4  # 1 try + 3 retries, each cancelled at the timeout
    assert lookups.running == [0, 3]  # never more than --enrich-concurrency at once


async def test_a_lookup_that_raises_fails_its_records_not_the_batch(
    make: Callable[..., Enricher],
) -> None:
    enricher = make(user=UserLookup(load_function("tests.enrich.lookups:broken")))
    await enricher.start()
    result = await enricher.enrich(*sensors("a", "b"))
    assert result.errors == [
        (0, ENRICH_FAILED, "ZeroDivisionError: a bug in the lookup"),
        (1, ENRICH_FAILED, "ZeroDivisionError: a bug in the lookup"),
    ]


def test_loading_a_user_coroutine_fails_clearly() -> None:
    with pytest.raises(LookupLoadError, match=r"package\.module:function"):
        load_function("tests.enrich.lookups")
    with pytest.raises(LookupLoadError, match="cannot import"):
        load_function("tests.enrich.nowhere:owner")
    with pytest.raises(LookupLoadError, match="has no 'missing'"):
        load_function("tests.enrich.lookups:missing")
    with pytest.raises(LookupLoadError, match="not an async def"):
        load_function("tests.enrich.lookups:not_async")


# ---- from the settings, through the worker pool ----------------------------------------------


async def test_enriched_records_through_the_worker_pool(meta: MetaServer) -> None:
    settings = load(
        RunSettings,
        {"enrich_url": meta.url(), "enrich_missing": "pass", "enrich_field": "site"},
        environ={},
    )
    assert (
        Enricher.from_settings(
            load(RunSettings, {}, environ={}), EnrichMetrics(CollectorRegistry())
        )
        is None
    )
    enricher = Enricher.from_settings(settings, EnrichMetrics(CollectorRegistry()))
    assert enricher is not None
    pool = WorkerPool("identity", 1, 1 << 20)
    await enricher.start()
    await pool.start()
    try:
        keys, values = sensors("a", "b")
        values.append(b'{"no_sensor": 1}')
        keys.append(b"c")
        result = await enrich_then_process(enricher, pool.run, keys, values)
    finally:
        await pool.close()
        await enricher.close()
    assert result.outputs is not None
    assert orjson.loads(result.outputs[0] or b"") == {
        "sensor_id": "a",
        "seq": 0,
        "site": {"id": "a", "n": 1},
    }
    assert orjson.loads(result.outputs[1] or b"") == {
        "sensor_id": "b",
        "seq": 1,
        "site": {"id": "b", "n": 1},
    }
    assert result.outputs[2] is None
    assert [(i, r) for i, r, _ in result.errors] == [(2, ENRICH_FAILED)]


async def test_close_cancels_lookups_still_running(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    meta.respond = delayed(30)
    enricher = make(meta.url(), timeout=60.0)
    await enricher.start()
    call = asyncio.create_task(enricher.enrich(*sensors("a", "b")))
    await asyncio.sleep(0.2)
    call.cancel()  # the batch is abandoned (a rebalance): its lookups stay owned by the stage
    await asyncio.sleep(0.05)
    assert enricher.running == 2
    await asyncio.wait_for(enricher.close(), 2)
    assert enricher.running == 0


async def test_answers_over_the_size_limit_fail(
    meta: MetaServer, make: Callable[..., Enricher]
) -> None:
    body = orjson.dumps({"blob": "x" * 5000})

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    async def huge(sensor_id: str, n: int) -> web.StreamResponse:
        if sensor_id == "chunked":  # no Content-Length: counted while read
            return web.Response(body=pieces(), content_type="application/json")
        return web.Response(body=body, content_type="application/json")

    meta.respond = huge
    enricher = make(meta.url())
    assert enricher.http is not None
    enricher.http.max_body = 1000
    await enricher.start()
    result = await enricher.enrich(*sensors("sized", "chunked"))
    assert result.errors == [
        (0, ENRICH_FAILED, f"the answer from {meta.url('/sensors/sized')} is over 1000 bytes"),
        (1, ENRICH_FAILED, f"the answer from {meta.url('/sensors/chunked')} is over 1000 bytes"),
    ]
    enricher.http.max_body = 10_000
    result = await enricher.enrich(*sensors("sized", "chunked"))
    assert answers(result) == [{"blob": "x" * 5000}] * 2
