"""I/O baselines for ``stream bench`` (group ``io``), and the event loop's cost of the
enrichment stage per record.

``io_bench()`` starts a :class:`~stream.bench.slow_server.SlowServer` (a local aiohttp
server in a process of its own) whose every answer takes ``delay`` seconds, and sends it
``requests`` GETs of distinct URLs four ways: a thread pool of 10 and of 100 threads
(stdlib urllib, one blocking request per thread at a time), a process pool (urllib in
each process), and asyncio (one aiohttp session, 100 in flight), raw and through the
``Enricher``. ``loop_cost()`` times what the stage does
on the event loop per record (read the URL's fields, render it, answer from the
cache) and what the merge adds in the worker. Both return numbers; ``python -m
stream.bench.enrich_io`` (``make bench-io``) prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import aiohttp
import orjson
from prometheus_client import CollectorRegistry

from stream.bench.slow_server import SlowServer
from stream.config import ProduceSettings
from stream.enrich.outcome import Found
from stream.enrich.retry import RetryPolicy
from stream.enrich.stage import Enricher
from stream.metrics import EnrichMetrics
from stream.produce import demo_events
from stream.url_template import UrlTemplate
from stream.worker import process_batch


@dataclass(frozen=True, slots=True)
class IoResult:
    case: str
    requests: int
    concurrency: int
    seconds: float
    errors: int
    cpu_seconds: float  # CPU of the client: this process and its reaped children (not the server)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# ---- the clients -----------------------------------------------------------------------------


def fetch(url: str) -> bytes:
    """One blocking GET (a module-level function: process pools pickle it by name)."""
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our own server
        body: bytes = response.read()
        return body


def _through(executor: Executor, urls: list[str]) -> int:
    errors = 0
    for future in [executor.submit(fetch, url) for url in urls]:
        try:
            future.result()
        except OSError:
            errors += 1
    return errors


def threads(urls: list[str], workers: int) -> IoResult:
    started, cpu = time.perf_counter(), _cpu()
    with ThreadPoolExecutor(workers) as pool:
        errors = _through(pool, urls)
    return IoResult(
        f"threads({workers})", len(urls), workers, _since(started), errors, _cpu() - cpu
    )


def processes(urls: list[str], workers: int) -> IoResult:
    """Process start-up included (fork, the cheapest start: no thread runs here now)."""
    started, cpu = time.perf_counter(), _cpu()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        errors = _through(pool, urls)
    return IoResult(
        f"processes({workers})", len(urls), workers, _since(started), errors, _cpu() - cpu
    )


async def _aiohttp(urls: list[str], concurrency: int) -> int:
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str) -> bool:
            async with slots, session.get(url) as response:
                await response.read()
                return response.status == 200

        results = await asyncio.gather(*(one(u) for u in urls), return_exceptions=True)
    return sum(1 for r in results if r is not True)


def asyncio_aiohttp(urls: list[str], concurrency: int = 100) -> IoResult:
    started, cpu = time.perf_counter(), _cpu()
    errors = asyncio.run(_aiohttp(urls, concurrency))
    return IoResult(
        f"asyncio+aiohttp({concurrency})",
        len(urls),
        concurrency,
        _since(started),
        errors,
        _cpu() - cpu,
    )


async def _stage(base: str, count: int, concurrency: int) -> int:
    enricher = Enricher(
        metrics=EnrichMetrics(CollectorRegistry()),
        url=UrlTemplate.parse(base + "/sensors/{key}"),
        concurrency=concurrency,
        timeout=30.0,
        policy=RetryPolicy(retries=0),
        cache_size=0,
    )
    await enricher.start()
    try:
        keys: list[bytes | None] = [str(i).encode() for i in range(count)]
        values: list[bytes | None] = [None] * count
        batches = [
            enricher.enrich(keys[i : i + 500], values[i : i + 500]) for i in range(0, count, 500)
        ]
        results = await asyncio.gather(*batches)
    finally:
        await enricher.close()
    return sum(len(r.errors) for r in results)


def enricher_stage(base: str, count: int, concurrency: int = 100) -> IoResult:
    """The stage itself (no cache, distinct keys, batches of 500): what ``stream run`` does."""
    started, cpu = time.perf_counter(), _cpu()
    errors = asyncio.run(_stage(base, count, concurrency))
    return IoResult(
        f"enricher({concurrency})", count, concurrency, _since(started), errors, _cpu() - cpu
    )


def io_bench(
    requests: int = 1000, delay: float = 0.05, process_workers: int = 10
) -> list[IoResult]:
    """The ``io`` group: every client against one server, ``requests`` distinct URLs each."""
    with SlowServer(delay) as base:
        fetch(f"{base}/sensors/warm-up")

        def urls(case: str) -> list[str]:
            return [f"{base}/sensors/{case}-{i}" for i in range(requests)]

        return [
            threads(urls("t10"), 10),
            threads(urls("t100"), 100),
            processes(urls("p"), process_workers),
            asyncio_aiohttp(urls("a"), 100),
            enricher_stage(base, requests, 100),
        ]


# ---- the event loop's cost per record --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoopCost:
    """Microseconds per record."""

    field_url: float  # enrich() of cached answers, URL from a record field (one decode each)
    key_url: float  # the same with a {key} URL (nothing decoded)
    worker_plain: float  # worker: a sensor-features batch without enrichment
    worker_merge: float  # worker: the same batch with every record enriched (merge included)


def _per_record(fn: Callable[[], object], records: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best / records * 1e6


async def _cached_enrich(
    url: str, events: Iterable[tuple[bytes | None, bytes | None]]
) -> tuple[float, list[bytes | None]]:
    pairs = list(events)
    keys = [k for k, _ in pairs]
    values = [v for _, v in pairs]
    enricher = Enricher(
        metrics=EnrichMetrics(CollectorRegistry()),
        url=UrlTemplate.parse(url),
        cache_size=len(pairs),
    )
    meta = orjson.dumps({"site": "north", "floor": 3})
    for key in {k for k in keys if k is not None}:
        text = key.decode()
        enricher.cache.put(url.replace("{sensor_id}", text).replace("{key}", text), Found(meta))
    started = time.perf_counter()
    result = await enricher.enrich(keys, values)
    elapsed = time.perf_counter() - started
    assert result.errors == [], result.errors[:1]
    return elapsed, result.enrichment


def loop_cost(records: int = 500, rounds: int = 200) -> LoopCost:
    """Per-record cost on the loop (enrich() answered from the cache, demo events of 64
    readings, batches of ``records``) and of the worker-side merge."""
    settings = ProduceSettings(count=records, keys=16)
    events = [(e.key, e.value) for e in demo_events(settings)]
    values: list[bytes | None] = [v for _, v in events]

    def on_loop(url: str) -> float:
        best = min(asyncio.run(_cached_enrich(url, events))[0] for _ in range(rounds // 10))
        return best / records * 1e6

    enrichment = asyncio.run(_cached_enrich("http://meta/sensors/{key}", events))[1]
    spec = "sensor-features"
    plain = _per_record(lambda: process_batch(spec, values, 1 << 20), records, rounds)
    merge = _per_record(
        lambda: process_batch(spec, values, 1 << 20, enrichment=enrichment, field="meta"),
        records,
        rounds,
    )
    return LoopCost(
        field_url=on_loop("http://meta/sensors/{sensor_id}"),
        key_url=on_loop("http://meta/sensors/{key}"),
        worker_plain=plain,
        worker_merge=merge,
    )


def _since(started: float) -> float:
    return time.perf_counter() - started


def _cpu() -> float:
    """CPU seconds of this process and of its children that have exited (a process pool's)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per answer")
    parser.add_argument("--process-workers", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--no-loop-cost", action="store_true", help="the clients only (as `stream bench` runs it)"
    )
    args = parser.parse_args(argv)
    results = io_bench(args.requests, args.delay, args.process_workers)
    cost = None if args.no_loop_cost else loop_cost()
    if args.json:
        rows = [asdict(r) | {"per_second": r.per_second} for r in results]
        report: dict[str, object] = {"io": rows}
        if cost is not None:
            report["loop_cost_us"] = asdict(cost)
        print(orjson.dumps(report).decode())  # noqa: T201
        return
    base = next(r for r in results if r.case == "threads(10)")
    lines = [f"{args.requests} requests, {args.delay * 1000:g} ms each:"]
    lines += [
        f"  {r.case:<24} {r.seconds:8.2f} s {r.per_second:9.0f} req/s "
        f"{base.seconds / r.seconds:6.1f}x threads(10)  client CPU "
        f"{r.cpu_seconds / r.requests * 1e3:5.2f} ms/request  errors {r.errors}"
        for r in results
    ]
    if cost is None:
        print("\n".join(lines))  # noqa: T201 - a command's output
        return
    lines.append("event loop, µs per record (answers from the cache, 64-reading events):")
    lines.append(f"  URL from a record field  {cost.field_url:6.2f}")
    lines.append(f"  URL from the key         {cost.key_url:6.2f}")
    lines.append(
        f"worker (sensor-features), µs per record: {cost.worker_plain:.2f} without enrichment, "
        f"{cost.worker_merge:.2f} with the answers merged"
    )
    print("\n".join(lines))  # noqa: T201 - a command's output


if __name__ == "__main__":
    main()
