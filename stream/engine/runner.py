"""The engine's lifecycle: build the parts, start, run until stopped, drain, close.

``Engine(settings).run()`` reads top to bottom: ``startup()`` (every part built with
what it needs, in dependency order), the fetch loop, ``shutdown()`` (each partition
drains within the drain timeout and commits), ``close()``. Every background task is
owned by ``Tasks``: if one fails, its error is the engine's fatal error and the engine
stops. ``serve()`` adds signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from stream import __version__
from stream.config import RunSettings
from stream.engine import stages
from stream.engine.assignment import Assignment
from stream.engine.delivery import Guarantee
from stream.engine.fetcher import Fetcher
from stream.engine.lifecycle import CLOSE_STEP, PartitionLifecycle, Parts
from stream.engine.monitor import Monitor
from stream.engine.progress import Progress
from stream.engine.rebalance import Rebalancer
from stream.engine.routing import Router
from stream.engine.sending import Sender
from stream.engine.sinking import Database
from stream.engine.state import EngineState, Membership
from stream.engine.tasks import Tasks
from stream.errors import PortUnavailable
from stream.flow import InFlight
from stream.hints import DeadLetterStreak
from stream.http import HttpServer
from stream.kafka.protocols import Clients, Consumer, TopicPartition
from stream.metrics import Metrics
from stream.pool import Pool, WorkerPool
from stream.stages_line import describe_stages
from transforms import resolve

log = logging.getLogger("stream")


class Engine:
    """One instance of the stream processor. ``await run()``; ``stop()`` to drain and end."""

    def __init__(
        self,
        settings: RunSettings,
        clients: Clients | None = None,
        pool: Pool | None = None,
        sink: Database | None = None,
    ) -> None:
        self.settings = s = settings.resolve()  # the files the options name, read now
        self.transform = resolve(s.transform)  # unknown: a usage error, before anything starts
        if clients is None:
            from stream.kafka.clients import KafkaClients  # noqa: PLC0415

            clients = KafkaClients(settings)
        self.clients = clients
        sinks = [name for name in s.sinks if name != "kafka"]
        self.metrics = Metrics(
            s.transform, s.input_topic, s.output_topic, s.dead_letter_topic, sinks=sinks
        )
        self.state = EngineState()
        self.membership = Membership()
        self.tasks = Tasks(self.state)
        self.progress = Progress(
            self.metrics,
            s.input_topic,
            s.output_topic,
            s.dead_letter_topic,
            streak=DeadLetterStreak.of(s),
        )
        # Made now: a --enrich function that cannot be loaded is a usage error.
        self.enricher = enricher = stages.make_enricher(s, self.metrics)
        held = None if enricher is None else (lambda: enricher.held_bytes)
        self.assignment = Assignment(
            InFlight(s.max_inflight_records, s.max_inflight_bytes, held), self.progress
        )
        self.sink = sink or stages.make_sink(s, self.metrics)
        self.pool = pool  # made at start, once the formats are known
        self.monitor: Monitor | None = None
        self.metrics_port: int | None = None
        self._http: HttpServer | None = None
        self._consumer: Consumer | None = None
        self._guarantee: Guarantee | None = None
        self._fetcher: Fetcher | None = None
        self._rebalancer: Rebalancer | None = None

    @property
    def assigned(self) -> asyncio.Event:
        """Set once partitions were assigned."""
        return self.membership.assigned

    def stop(self) -> None:
        """Ask for a graceful stop: no more fetching, drain, commit, exit."""
        self.state.stop()
        if self._fetcher is not None:
            self._fetcher.stop()

    # ---- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.startup()
            if not self.state.stopping:
                assert self._fetcher is not None
                fetch = self.tasks.spawn(self._fetcher.run(), "fetcher")
                await self.state.stopped.wait()
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetch
            await self.shutdown()
        finally:
            await self.close()
        if self.state.fatal is not None:
            raise self.state.fatal

    async def startup(self) -> None:
        s = self.settings
        formats = await stages.prepare_formats(s, self.transform)
        pool = self.pool = self.pool or WorkerPool(
            s.transform,
            s.workers,
            s.max_record_bytes,
            batch_timeout=s.batch_timeout,
            on_restart=self.metrics.worker_restarts.inc,
            on_respawn_failure=self.metrics.worker_respawn_failures.inc,
            max_array_length=s.max_array_length,
            formats=formats,
            windowing=s.window_input,
        )
        monitor = self.monitor = Monitor(
            s,
            self.metrics,
            self.assignment,
            self.progress,
            state=self.state,
            membership=self.membership,
            pool=pool,
            database=self.sink,
        )
        self._start_http(monitor)
        pids = await pool.start()
        self.metrics.pool_workers.set(pool.alive)
        consumer = self._consumer = await self.clients.consumer()
        await stages.check_topics(s, self.clients, consumer)
        dlq_limit = await self.clients.record_limit(s.dead_letter_topic)
        out_limit = await self.clients.record_limit(s.output_topic)
        self.clients.fit_batches(min(out_limit, dlq_limit))
        router = Router(s.require_key, s.max_record_bytes, dlq_limit, out_limit)
        stage = None if self.sink is None else await stages.start_sink(s, self.sink, router)
        windowing = await stages.make_windowing(s, self.clients, self.metrics, router)
        sender = Sender(
            router,
            s.output_topic,
            s.dead_letter_topic,
            stage,
            changelog_topic=windowing.config.topic if windowing else "",
        )
        guarantee = self._guarantee = await stages.make_guarantee(
            s,
            clients=self.clients,
            consumer=consumer,
            assignment=self.assignment,
            sender=sender,
            metrics=self.metrics,
        )
        parts = Parts(
            consumer=consumer,
            assignment=self.assignment,
            guarantee=guarantee,
            policy=stages.commit_policy(s),
            metrics=self.metrics,
            transform=s.transform,
            drain_timeout=s.drain_timeout,
            delivery_timeout=s.delivery_timeout,
            stage=stage,
            state=windowing,
        )
        rebalancer = self._rebalancer = Rebalancer(
            functools.partial(PartitionLifecycle, parts=parts),
            self.tasks,
            self.membership,
            self.metrics,
            s.drain_timeout,
        )
        if self.enricher is not None:
            await self.enricher.start()
        self._fetcher = Fetcher(
            s,
            consumer,
            self.assignment,
            stages.make_process(pool, self.enricher, windowed=windowing is not None),
            self.progress.fetched,
        )
        consumer.subscribe(
            s.input_topic, self._guard(rebalancer.on_assigned), self._guard(rebalancer.on_revoked)
        )
        stages_text = describe_stages(s)
        log.info(
            "stream %s started: %s transform=%s workers=%d (pids %s) %s -> %s (dead letters: "
            "%s) group=%s%s metrics=http://%s:%s/metrics",
            __version__,
            s.guarantee,
            s.transform,
            s.workers,
            ",".join(map(str, pids)),
            s.input_topic,
            s.output_topic,
            s.dead_letter_topic,
            s.group_id,
            f" ({stages_text})" if stages_text else "",
            s.metrics_host,
            self.metrics_port,
        )
        self.tasks.spawn(monitor.stats_loop(), "stats")
        self.tasks.spawn(monitor.loop_lag_loop(), "loop-lag")
        self.tasks.spawn(monitor.lag_loop(consumer), "lag")

    def _guard(
        self, callback: Callable[[set[TopicPartition]], Awaitable[None]]
    ) -> Callable[[set[TopicPartition]], Coroutine[Any, Any, None]]:
        """aiokafka logs and swallows an error in a rebalance callback, which would leave
        partitions without a lifecycle: stop the engine with it instead."""

        async def guarded(tps: set[TopicPartition]) -> None:
            try:
                await callback(tps)
            except Exception as exc:  # noqa: BLE001 - becomes the engine's fatal error
                self.state.fail(exc)

        return guarded

    def _start_http(self, monitor: Monitor) -> None:
        s = self.settings
        try:
            self._http = HttpServer(
                s.metrics_host,
                s.metrics_port,
                self.metrics.registry,
                loop=asyncio.get_running_loop(),
                liveness=monitor.liveness,
                readiness=monitor.readiness,
            )
        except OSError as exc:
            raise PortUnavailable(
                f"cannot serve metrics on {s.metrics_host}:{s.metrics_port}: {exc.strerror}"
            ) from None
        self._http.start()
        self.metrics_port = self._http.port

    async def shutdown(self) -> None:
        """Each partition drains what is in flight (bounded) and commits it; after a
        fatal error nothing more is committed."""
        if self._rebalancer is None:
            return
        if self.state.fatal is not None:
            await self._rebalancer.abandon()
            return
        if busy := self.assignment.inflight.records:
            log.info("draining %d in-flight records", busy)
        await self._rebalancer.close()

    async def close(self) -> None:
        if self._rebalancer is not None:
            await self._rebalancer.abandon()
        await self.tasks.close()
        for part in list(self.assignment.parts.values()):
            self.assignment.drop(part)
        # Each step is bounded: a broker that is down must not keep the process alive.
        closing = [] if self.pool is None else [bounded(self.pool.close(), "closing the pool")]
        if self._guarantee is not None:
            closing.append(bounded(self._guarantee.close(), "closing the producers"))
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
            c = self.progress.counts
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
