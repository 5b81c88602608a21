"""The engine's lifecycle: build the parts, start, run until stopped, drain, close.

``Engine(settings).run()`` reads top to bottom: ``startup()``, the fetch loop,
``shutdown()`` (bounded drain, final commit), ``close()``. Every background task is
owned here: if one dies, the engine stops with its error. ``serve()`` adds signals:
the first SIGTERM/SIGINT drains and stops, a second exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from stream import __version__
from stream.config import RunSettings
from stream.engine import stages
from stream.engine.assignment import Assignment, Batch, Partition
from stream.engine.delivery import Delivery
from stream.engine.fetcher import Fetcher
from stream.engine.monitor import Monitor
from stream.engine.rebalance import Rebalancer
from stream.engine.routing import Router
from stream.engine.sending import Sender
from stream.errors import FatalError, PortUnavailable, StreamError
from stream.flow import InFlight
from stream.http import HttpServer
from stream.kafka.protocols import Clients, Consumer, TopicPartition
from stream.metrics import Metrics
from stream.pool import Pool, WorkerPool
from transforms import resolve

log = logging.getLogger("stream")

CLOSE_STEP = 3.0  # seconds one shutdown step (a commit, closing a client) may take


class Engine:
    """One instance of the stream processor. ``await run()``; ``stop()`` to drain and end."""

    def __init__(
        self, settings: RunSettings, clients: Clients | None = None, pool: Pool | None = None
    ) -> None:
        self.settings = s = settings.resolve()  # the files the options name, read now
        self.transform = resolve(s.transform)  # unknown: a usage error, before anything starts
        self.enricher: Any = None  # the enrichment stage, with --enrich-url or --enrich
        if clients is None:
            from stream.kafka.clients import KafkaClients  # noqa: PLC0415

            clients = KafkaClients(settings)
        self.clients = clients
        sinks = [name for name in s.sinks if name != "kafka"]
        self.metrics = Metrics(
            s.transform, s.input_topic, s.output_topic, s.dead_letter_topic, sinks=sinks
        )
        self.sink: Any = None  # the database sink, with --sink postgres
        # Made now: a --enrich function that cannot be loaded is a usage error.
        self.enricher = stages.make_enricher(s, self.metrics)
        self.pool = pool or WorkerPool(
            s.transform,
            s.workers,
            s.max_record_bytes,
            batch_timeout=s.batch_timeout,
            on_restart=self.metrics.worker_restarts.inc,
            max_array_length=s.max_array_length,
        )
        self.assignment = Assignment(
            InFlight(s.max_inflight_records, s.max_inflight_bytes),
            self._finished,
            self._inflight_changed,
        )
        self.monitor = Monitor(
            s, self.metrics, self.assignment, lambda: self.pool.alive, lambda: self.pool.serving
        )
        self.metrics_port: int | None = None
        self._http: HttpServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._consumer: Consumer | None = None
        self._delivery: Delivery | None = None
        self._fetcher: Fetcher | None = None
        self._rebalancer: Rebalancer | None = None
        self._stop = asyncio.Event()
        self.assigned = asyncio.Event()

    # ---- control -----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop: no more fetching, drain, commit, exit."""
        self._stop.set()
        self.monitor.stopping = True
        if self._fetcher is not None:
            self._fetcher.stop()

    def fail(self, exc: BaseException) -> None:
        if self.monitor.fatal is None:
            self.monitor.fatal = exc
            log.error("stopping: %s", exc)
        self.stop()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start a task the engine owns: if it fails, the engine stops with its error."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)

        def check(t: asyncio.Task[None]) -> None:
            if t.cancelled() or (error := t.exception()) is None:
                return
            self.fail(error if isinstance(error, StreamError) else FatalError(f"{name}: {error!r}"))

        task.add_done_callback(check)
        self._tasks.append(task)
        return task

    # ---- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.startup()
            if not self._stop.is_set():
                assert self._fetcher is not None
                fetch = self.spawn(self._fetcher.run(), "fetcher")
                await self._stop.wait()
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetch
            await self.shutdown()
        finally:
            await self.close()
        if self.monitor.fatal is not None:
            error = self.monitor.fatal
            raise error if isinstance(error, StreamError) else FatalError(str(error)) from error

    async def startup(self) -> None:
        s = self.settings
        self._start_http()
        await stages.prepare_formats(s, self.transform, self.pool)
        pids = await self.pool.start()
        self.metrics.pool_workers.set(self.pool.alive)
        consumer = self._consumer = await self.clients.consumer()
        await stages.check_topics(s, self.clients, consumer)
        dlq_limit = await self.clients.record_limit(s.dead_letter_topic)
        out_limit = await self.clients.record_limit(s.output_topic)
        self.clients.fit_batches(min(out_limit, dlq_limit))
        router = Router(s.require_key, s.max_record_bytes, dlq_limit, out_limit)
        self.sink, stage = await stages.start_sink(s, self.metrics, router)
        if self.sink is not None:
            sink = self.sink
            self.monitor.sink_ready = lambda: sum(sink.pool_connections()) > 0
        sender = Sender(router, s.output_topic, s.dead_letter_topic, stage)
        delivery = await stages.make_delivery(
            s,
            clients=self.clients,
            consumer=consumer,
            assignment=self.assignment,
            sender=sender,
            metrics=self.metrics,
            fail=self.fail,
            spawn=self.spawn,
        )
        self._delivery = delivery
        rebalancer = self._rebalancer = Rebalancer(
            consumer,
            self.assignment,
            delivery,
            self.metrics,
            self.spawn,
            transform=s.transform,
            drain_timeout=s.drain_timeout,
            delivery_timeout=s.delivery_timeout,
            stopping=lambda: self._stop.is_set() or self.monitor.fatal is not None,
            stage=stage,
        )
        rebalancer.on_assigned_hook = self._on_assigned
        self.monitor.rebalancing = lambda: rebalancer.rebalancing
        self._fetcher = Fetcher(s, consumer, self.assignment, self.pool, self.monitor.fetched)
        if self.enricher is not None:
            await self.enricher.start()
            self._fetcher.enricher = self.enricher
        consumer.subscribe(
            s.input_topic, self._guard(rebalancer.on_assigned), self._guard(rebalancer.on_revoked)
        )
        log.info(
            "stream %s started: %s transform=%s workers=%d (pids %s) %s -> %s (dead letters: "
            "%s) group=%s metrics=http://%s:%s/metrics",
            __version__,
            s.guarantee,
            s.transform,
            s.workers,
            ",".join(map(str, pids)),
            s.input_topic,
            s.output_topic,
            s.dead_letter_topic,
            s.group_id,
            s.metrics_host,
            self.metrics_port,
        )
        self.spawn(delivery.run(), "committer")
        self.spawn(self.monitor.stats_loop(), "stats")
        self.spawn(self.monitor.loop_lag_loop(), "loop-lag")
        self.spawn(self.monitor.lag_loop(consumer), "lag")

    def _guard(self, callback: Any) -> Any:
        """aiokafka logs and swallows an error in a rebalance callback, which would leave
        partitions without an emitter: stop the engine with it instead."""

        async def guarded(tps: set[TopicPartition]) -> None:
            try:
                await callback(tps)
            except Exception as exc:  # noqa: BLE001 - becomes the engine's fatal error
                self.fail(exc if isinstance(exc, StreamError) else FatalError(repr(exc)))

        return guarded

    def _on_assigned(self) -> None:
        if self.assignment.parts:
            self.assigned.set()
        self.monitor.lag_refresh.set()

    def _inflight_changed(self) -> None:
        self.monitor.inflight_changed()

    def _finished(self, part: Partition, batch: Batch) -> None:
        self.monitor.finished(part, batch)
        if self._rebalancer is not None:
            self._rebalancer.progressed(part.tp)

    def _start_http(self) -> None:
        s = self.settings
        try:
            self._http = HttpServer(
                s.metrics_host,
                s.metrics_port,
                self.metrics.registry,
                loop=asyncio.get_running_loop(),
                liveness=self.monitor.liveness,
                readiness=self.monitor.readiness,
            )
        except OSError as exc:
            raise PortUnavailable(
                f"cannot serve metrics on {s.metrics_host}:{s.metrics_port}: {exc.strerror}"
            ) from None
        self._http.start()
        self.metrics_port = self._http.port

    async def shutdown(self) -> None:
        """Drain what is in flight (bounded), then commit it."""
        parts = list(self.assignment.parts.values())
        busy = sum(p.records for p in parts)
        if busy:
            log.info("draining %d in-flight records", busy)
        if self._delivery is not None:
            self._delivery.flush()
        drained = await self.assignment.drain(
            parts, self.settings.drain_timeout, lambda: self.monitor.fatal is not None
        )
        if not drained:
            log.warning(
                "drain timeout (%gs): abandoning %d records; they will be read again",
                self.settings.drain_timeout,
                self.assignment.inflight.records,
            )
        if self._delivery is not None and self.monitor.fatal is None:
            await bounded(self._delivery.commit(), "the final commit")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for part in list(self.assignment.parts.values()):
            self.assignment.drop(part)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Each step is bounded: a broker that is down must not keep the process alive.
        closing = [self.pool.close()]
        if self._delivery is not None:
            closing.append(bounded(self._delivery.close(), "closing the producers"))
        await asyncio.gather(*closing)
        if self._consumer is not None:
            await bounded(self._consumer.stop(), "leaving the group")
        if self.sink is not None:
            await bounded(self.sink.close(), "closing the database pool")
        if self.enricher is not None:
            await bounded(self.enricher.close(), "closing the enrichment stage")
        if self._http is not None:
            self._http.close()
        if self._fetcher is not None:  # it ran (a start that failed says why elsewhere)
            c = self.monitor.counts
            log.info(
                "stopped: %d read, %d written, %d dead-lettered", c.read, c.written, c.dead_lettered
            )


async def bounded(step: Coroutine[Any, Any, None], what: str) -> None:
    """Run one shutdown step for at most ``CLOSE_STEP`` seconds."""
    try:
        async with asyncio.timeout(CLOSE_STEP):
            await step
    except TimeoutError:
        log.warning("%s took longer than %gs; going on without it", what, CLOSE_STEP)
