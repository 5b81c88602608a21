"""Running lookups for the enrichment stage: at most ``concurrency`` at once (one
semaphore for all batches: waiting for a slot is the stage's backpressure), one lookup
per URL in flight (single flight, across batches), each attempt cancelled after the
timeout, retries with the policy's backoff, answers (and known misses) cached.

The lookup tasks belong to ``Lookups``: they outlive a cancelled batch (other batches
may share them; their answers fill the cache) and ``cancel()`` ends and awaits them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import NamedTuple

from stream.enrich.cache import SingleFlight, TtlCache
from stream.enrich.outcome import Attempt, Failed, Found, Missing, Outcome, Retry
from stream.enrich.retry import RetryPolicy
from stream.metrics import EnrichMetrics

log = logging.getLogger(__name__)


class Lookup(NamedTuple):  # a tuple: made once per record, so cheap to make
    cache_key: Hashable | None  # the URL; None: not cached, not shared (a user coroutine)
    call: Callable[[], Awaitable[Attempt]]


class Lookups:
    def __init__(
        self,
        *,
        metrics: EnrichMetrics,
        cache: TtlCache[Hashable, Outcome],
        concurrency: int,
        timeout: float,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.metrics = metrics
        self.cache = cache
        self.timeout = timeout
        self.policy = policy
        self.flights: SingleFlight[Hashable, Outcome] = SingleFlight()
        self._clock = clock
        self._sleep = sleep
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[Outcome]] = set()
        self.held = 0  # slots held now (running, or waiting to retry)
        self.requests = 0  # requests in flight now (a slot waiting to retry has none)
        metrics.inflight.set_function(lambda: self.requests)  # read when scraped

    @property
    def running(self) -> int:
        """Lookup tasks alive now (never more than ``concurrency``)."""
        return len(self._tasks)

    async def cancel(self) -> None:
        """Cancel the lookups still running and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def launch(self, lookup: Lookup) -> asyncio.Future[Outcome]:
        """The future of this lookup: one already in flight, or a new one once a slot is
        free (waiting here is the stage's backpressure)."""
        key = lookup.cache_key
        if key is not None and (shared := self.flights.get(key)) is not None:
            return shared
        await self._slots.acquire()
        self.held += 1
        if key is not None:  # another batch may have asked while we waited for the slot
            shared = self.flights.get(key)
            hit, outcome = self.cache.get(key)
            if shared is not None or hit:
                self._release()
                if shared is not None:
                    return shared
                done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
                assert outcome is not None  # a hit
                done.set_result(outcome)
                return done
        task = asyncio.create_task(self._run(lookup), name="stream-enrich")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if key is not None:
            self.flights.begin(key, task)
        return task

    async def _run(self, lookup: Lookup) -> Outcome:
        """Attempts until an answer, a permanent failure or the retry budget is spent;
        holds its slot throughout (released here)."""
        started = self._clock()
        try:
            attempt = 0
            while True:
                attempt += 1
                result = await self._attempt(lookup)
                self.metrics.requests.labels(result.label).inc()
                if not isinstance(result, Retry):
                    break
                if not self.policy.should_retry(attempt):
                    tries = "attempt" if attempt == 1 else "attempts"
                    result = Failed(f"{result.message} ({attempt} {tries})", result.label)
                    break
                self.metrics.retries.inc()
                await self._sleep(self.policy.delay(attempt, result.retry_after))
            if lookup.cache_key is not None and isinstance(result, Found | Missing):
                self.cache.put(lookup.cache_key, result)
            self.metrics.lookup_duration.observe(self._clock() - started)
            return result
        finally:
            self._release()

    def _release(self) -> None:
        self.held -= 1
        self._slots.release()

    async def _attempt(self, lookup: Lookup) -> Attempt:
        self.requests += 1
        try:
            async with asyncio.timeout(self.timeout):
                return await lookup.call()
        except TimeoutError:
            return Retry(f"no answer within {self.timeout:g}s", "timeout")
        except Exception as exc:  # a bug in a lookup fails its records, never the batch
            log.warning("an enrichment lookup raised", exc_info=True)
            return Failed(f"{type(exc).__name__}: {exc}", "error")
        finally:
            self.requests -= 1
