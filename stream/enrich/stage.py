"""The enrichment stage: a batch in, the batch's lookups out, in input order.

``Enricher.enrich(keys, values)`` runs on the event loop. For each record it builds
the lookup (an URL from ``--enrich-url``, or a call of ``--enrich``'s coroutine),
answers it from the cache, joins a lookup of the same URL already in flight
(single-flight, across batches), or starts a new one. New lookups start only when
one of the ``--enrich-concurrency`` slots (one semaphore for all batches) is free,
so a stalled server makes ``enrich()`` wait instead of piling up tasks. Each attempt
is cancelled after ``--enrich-timeout``; timeouts, refused connections, 5xx and 429
are retried with backoff and jitter (honouring Retry-After). The result keeps the
batch's order, whatever order the lookups finish in.

Records the worker will reject anyway (no value, too large, not JSON) are not looked
up: the worker names their real reason. Records whose values would change the URL's
path shape or make it too long (``stream.url_template.UnsafeValue``) are not looked up
either: they are dead letters with reason ``enrich_refused``. Only what the URL needs
is read from a record: a ``{key}``-only URL decodes nothing. The records of a batch are
grouped by URL first: one cache look-up, one lookup per distinct URL.

Running the lookups (slots, single flight, timeouts, retries) is
``stream.enrich.lookups``; its tasks outlive a cancelled ``enrich()`` (other batches may
share them) and ``close()`` cancels and awaits them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol

from stream.config import RunSettings
from stream.enrich.cache import TtlCache
from stream.enrich.http import MAX_BODY, HttpLookup, Redirects
from stream.enrich.lookups import Lookup, Lookups
from stream.enrich.outcome import (
    ENRICH_FAILED,
    ENRICH_REFUSED,
    EnrichResult,
    Failed,
    Found,
    Missing,
    Outcome,
    Refused,
    weight,
)
from stream.enrich.retry import RetryPolicy
from stream.enrich.user import UserLookup, load_function
from stream.metrics import EnrichMetrics
from stream.url_template import TemplateError, UnsafeValue, UrlTemplate
from stream.worker import BatchResult
from transforms import BadRecord
from transforms.checks import decode_json

_SKIP = object()  # a record the worker will reject: not looked up


class Enricher:
    """Bounded, cached, retried lookups for whole batches. ``start()`` before use,
    ``close()`` after; exactly one of ``url`` and ``user`` is given."""

    def __init__(
        self,
        *,
        metrics: EnrichMetrics,
        url: UrlTemplate | None = None,
        field: str = "meta",
        user: UserLookup | None = None,
        concurrency: int = 100,
        timeout: float = 5.0,
        policy: RetryPolicy | None = None,
        cache_size: int = 10_000,
        cache_ttl: float = 60.0,
        cache_bytes: int = 64 << 20,
        max_body: int = MAX_BODY,
        redirects: Redirects = "same-origin",
        missing_pass: bool = False,
        max_record_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if (url is None) == (user is None):
            raise ValueError("give the Enricher exactly one of a URL template and a user lookup")
        self.metrics = metrics
        self.url = url
        self.user = user
        self.concurrency = concurrency
        self.missing_pass = missing_pass
        self.max_record_bytes = max_record_bytes
        self.cache: TtlCache[Hashable, Outcome] = TtlCache(
            cache_size, cache_ttl, clock, max_bytes=cache_bytes, weigh=weight
        )
        self.http = (
            HttpLookup(concurrency, max_body, redirects=redirects, redact=url.redact)
            if url is not None
            else None
        )
        self.lookups = Lookups(
            metrics=metrics,
            cache=self.cache,
            concurrency=concurrency,
            timeout=timeout,
            policy=policy or RetryPolicy(),
            clock=clock,
            sleep=sleep,
        )
        metrics.cache_entries.set_function(lambda: len(self.cache))  # read when scraped
        metrics.cache_bytes.set_function(lambda: self.cache.bytes)
        self._decode = user is not None or (url is not None and url.needs_record)
        self.field = field
        # bytes of answers that batches hold on their way to the workers (enrich_then_process)
        self.held_bytes = 0

    @classmethod
    def from_settings(cls, settings: RunSettings, metrics: EnrichMetrics) -> Enricher | None:
        """The stage ``stream run`` asked for, or None when enrichment is off."""
        if not (settings.enrich_url or settings.enrich):
            return None
        return cls(
            metrics=metrics,
            url=(
                UrlTemplate.parse(settings.enrich_url, settings.enrich_max_url_length)
                if settings.enrich_url
                else None
            ),
            field=settings.enrich_field,
            user=UserLookup(load_function(settings.enrich)) if settings.enrich else None,
            concurrency=settings.enrich_concurrency,
            timeout=settings.enrich_timeout,
            policy=RetryPolicy(retries=settings.enrich_retries),
            cache_size=settings.enrich_cache_size,
            cache_ttl=settings.enrich_cache_ttl,
            cache_bytes=settings.enrich_cache_bytes,
            max_body=settings.enrich_max_body,
            redirects=settings.enrich_redirects,
            missing_pass=settings.enrich_missing == "pass",
            max_record_bytes=settings.max_record_bytes,
        )

    @property
    def inflight(self) -> int:
        """Lookups holding a slot now (running, or waiting to retry)."""
        return self.lookups.held

    @property
    def requests_in_flight(self) -> int:
        """Requests (or user calls) under way now; at most ``inflight``."""
        return self.lookups.requests

    @property
    def running(self) -> int:
        """Lookup tasks alive now (never more than ``concurrency``)."""
        return self.lookups.running

    async def start(self) -> None:
        if self.http is not None:
            await self.http.start()

    async def close(self) -> None:
        """Cancel the lookups still running and wait for them; close the session."""
        await self.lookups.cancel()
        if self.http is not None:
            await self.http.close()

    async def enrich(self, keys: list[bytes | None], values: list[bytes | None]) -> EnrichResult:
        """Look up every record of one batch; the result is in the batch's order.

        Records with the same URL are one lookup: the batch's records are first grouped
        by their URL's placeholder texts, then each distinct URL is answered from the
        cache, joins its lookup in flight, or starts one. A batch that the cache answers
        whole never yields to the loop."""
        enrichment: list[bytes | None] = [None] * len(values)
        errors: list[tuple[int, str, str]] = []
        waits: list[tuple[list[int], asyncio.Future[Outcome]]] = []
        counts = dict.fromkeys(("enriched", "passed", "failed", "refused", "skipped"), 0)
        held = [0]  # bytes of the distinct answers
        hits = misses = 0
        cache = self.cache if self.cache.enabled else None
        launch = self.lookups.launch

        def settle(indexes: list[int], outcome: Outcome | Refused) -> None:
            if isinstance(outcome, Refused):
                errors.extend((index, ENRICH_REFUSED, outcome.message) for index in indexes)
                counts["refused"] += len(indexes)
            elif isinstance(outcome, Found):
                body = outcome.body  # one object for all: pickled once to the worker
                held[0] += len(body)
                for index in indexes:
                    enrichment[index] = body
                counts["enriched"] += len(indexes)
            elif isinstance(outcome, Missing) and self.missing_pass:
                counts["passed"] += len(indexes)
            else:
                errors.extend((index, ENRICH_FAILED, outcome.message) for index in indexes)
                counts["failed"] += len(indexes)

        by_url: dict[tuple[str, ...], list[int]] = {}
        calls: list[tuple[int, Lookup]] = []
        for index, (key, value) in enumerate(zip(keys, values, strict=True)):
            lookup = self._prepare(key, value)
            if type(lookup) is tuple:  # a URL's texts
                same = by_url.get(lookup)
                if same is None:
                    by_url[lookup] = [index]
                else:
                    same.append(index)
            elif lookup is _SKIP:
                counts["skipped"] += 1
            elif isinstance(lookup, Failed | Refused):
                settle([index], lookup)
            else:
                assert isinstance(lookup, Lookup)
                calls.append((index, lookup))
        if by_url:
            assert self.url is not None
            fill = self.url.fill
            for texts, indexes in by_url.items():
                try:
                    url = fill(texts)  # the cache, a lookup in flight, or a new one
                except UnsafeValue as exc:
                    settle(indexes, Refused(str(exc)))
                    continue
                if cache is not None:
                    hit, outcome = cache.get(url)
                    if hit:
                        assert outcome is not None
                        hits += len(indexes)
                        settle(indexes, outcome)
                        continue
                    misses += len(indexes)
                waits.append((indexes, await launch(self._get(url))))
        for index, call in calls:
            waits.append(([index], await launch(call)))
        if waits:
            await asyncio.wait({future for _, future in waits})
        for indexes, future in waits:
            settle(indexes, future.result())
        self._count(counts, hits, misses)
        errors.sort()
        return EnrichResult(enrichment, errors, held[0])

    def _count(self, records: dict[str, int], hits: int, misses: int) -> None:
        """Metrics once per batch, not per record (each update takes a lock)."""
        for result, count in records.items():
            if count:
                self.metrics.records.labels(result).inc(count)
        if hits:
            self.metrics.cache_hits.inc(hits)
        if misses:
            self.metrics.cache_misses.inc(misses)

    # ---- one record -------------------------------------------------------------------------

    def _prepare(
        self, key: bytes | None, value: bytes | None
    ) -> tuple[str, ...] | Lookup | Failed | Refused | object:
        """The texts of the record's URL, or its call of the user's lookup, or why it has
        none."""
        record: Any = None
        if self._decode:
            try:
                record = decode_json(value, self.max_record_bytes)
            except BadRecord:
                return _SKIP
        if self.user is not None:
            user = self.user
            return Lookup(None, lambda: user.call(record, key))
        assert self.url is not None
        try:
            return self.url.texts(key, record if isinstance(record, dict) else None)
        except UnsafeValue as exc:
            return Refused(str(exc))
        except TemplateError as exc:
            return Failed(str(exc))

    def _get(self, url: str) -> Lookup:
        assert self.http is not None
        get = self.http.get
        return Lookup(url, lambda: get(url))


class Process(Protocol):
    """``WorkerPool.run`` as this module calls it."""

    def __call__(
        self, values: list[bytes | None], *, enrichment: list[bytes | None] | None, field: str
    ) -> Awaitable[BatchResult]: ...


async def enrich_then_process(
    enricher: Enricher, process: Process, keys: list[bytes | None], values: list[bytes | None]
) -> BatchResult:
    """One batch through the stage and then the workers: what the engine awaits in place
    of ``pool.run(values)`` when enrichment is on. Failed lookups come back as errors
    (reason ``enrich_failed``) of their records, in the batch's order."""
    enriched = await enricher.enrich(keys, values)
    extra = enriched.enrichment if enriched.any else None
    enricher.held_bytes += enriched.nbytes
    try:
        batch = await process(values, enrichment=extra, field=enricher.field)
    finally:
        enricher.held_bytes -= enriched.nbytes
    return enriched.combine(batch, values)
