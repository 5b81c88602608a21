"""What the engine tells people: lag, event-loop lag, the stats line, and whether it
is alive and ready. Decisions take an injected clock, so a test can move time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.config import RunSettings
from stream.engine.assignment import Assignment, Batch, Partition
from stream.errors import KafkaFailure
from stream.flow import wait_event
from stream.http import Check
from stream.kafka.protocols import Consumer, TopicPartition
from stream.metrics import Metrics
from transforms.reasons import label

log = logging.getLogger("stream")

LOOP_LAG_INTERVAL = 0.25


@dataclass(slots=True)
class Counts:
    """Totals for the summary lines."""

    read: int = 0
    written: int = 0
    dead_lettered: int = 0


class Monitor:
    def __init__(
        self,
        settings: RunSettings,
        metrics: Metrics,
        assignment: Assignment,
        workers_alive: Callable[[], int],
        workers_serving: Callable[[], int],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.assignment = assignment
        self.workers_alive = workers_alive
        self.workers_serving = workers_serving
        self.clock = clock
        self.wall = wall
        self.counts = Counts()
        self.lag: dict[TopicPartition, int] = {}
        self.lag_refresh = asyncio.Event()
        self.last_progress = clock()
        self.broker_seen: float | None = None  # clock time of the last broker answer
        self.fatal: BaseException | None = None
        self.stopping = False
        self.rebalancing: Callable[[], bool] = lambda: False
        self.sink_ready: Callable[[], bool] = lambda: True  # the database pool is up
        self._consumed = metrics.consumed.labels(settings.input_topic)
        self._written = metrics.produced.labels(settings.output_topic)
        self._dead = metrics.produced.labels(settings.dead_letter_topic)

    # ---- events ------------------------------------------------------------------------

    def fetched(self, _part: Partition, count: int, batch_sizes: list[int]) -> None:
        self._consumed.inc(count)
        self.counts.read += count
        for size in batch_sizes:
            self.metrics.batch_size.observe(size)
        self.inflight_changed()

    def finished(self, _part: Partition, batch: Batch) -> None:
        count, failed = len(batch), len(batch.errors)
        m = self.metrics
        self._written.inc(count - failed)
        self.counts.written += count - failed
        if failed:
            self._dead.inc(failed)
            self.counts.dead_lettered += failed
            for _, reason, _message in batch.errors:
                m.failed.labels(label(reason)).inc()
                m.dead_lettered.labels(label(reason)).inc()
        now = self.wall()
        stamps = np.fromiter(batch.timestamps_ms, dtype=np.float64, count=count)
        m.latency.observe_many(np.maximum(0.0, now - stamps / 1000))
        m.last_processed.set(now)
        self.last_progress = self.clock()

    def inflight_changed(self) -> None:
        inflight = self.assignment.inflight
        self.metrics.inflight_messages.set(inflight.records)
        self.metrics.inflight_bytes.set(inflight.bytes)

    # ---- loops -------------------------------------------------------------------------

    async def loop_lag_loop(self) -> None:
        """Measure how late the event loop wakes up; count the live workers."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LOOP_LAG_INTERVAL)
            self.metrics.event_loop_lag.set(max(0.0, loop.time() - started - LOOP_LAG_INTERVAL))
            self.metrics.pool_workers.set(self.workers_alive())

    async def lag_loop(self, consumer: Consumer) -> None:
        """Read our partitions' end offsets every lag interval; set the lag gauges. A
        failed read (a rebalance, a broker away) is logged and tried again."""
        while True:
            await wait_event(self.lag_refresh, self.settings.lag_interval)
            self.lag_refresh.clear()
            parts = list(self.assignment.parts.values())
            if not parts:
                continue
            try:
                ends = await consumer.end_offsets([p.tp for p in parts])
                positions = {
                    p.tp: await consumer.position(p.tp)
                    for p in parts
                    if p.offsets.committed is None and p.offsets.first_offset is None
                }
            except KafkaFailure as exc:
                log.warning("could not read end offsets for lag: %s", exc)
                continue
            self.broker_seen = self.clock()
            self.update_lag(parts, ends, positions)

    def update_lag(
        self,
        parts: list[Partition],
        ends: dict[TopicPartition, int],
        positions: dict[TopicPartition, int],
    ) -> None:
        now = self.wall()
        for part in parts:
            end = ends.get(part.tp)
            state = part.offsets
            if end is None or state.closed:
                continue
            base = state.committed if state.committed is not None else state.first_offset
            if base is None:
                base = positions.get(part.tp)
            if base is None:
                continue
            lag = max(0, end - base)
            self.lag[part.tp] = lag
            age = 0.0
            if lag:
                oldest = state.oldest_uncommitted_timestamp or state.last_finished_timestamp
                age = max(0.0, now - oldest) if oldest else 0.0
            labels = (part.tp.topic, str(part.tp.partition))
            self.metrics.consumer_lag.labels(*labels).set(lag)
            self.metrics.consumer_lag_seconds.labels(*labels).set(age)
        owned = {p.tp for p in self.assignment.parts.values()}
        for tp in [tp for tp in self.lag if tp not in owned]:
            del self.lag[tp]

    async def stats_loop(self) -> None:
        interval = self.settings.stats_interval
        if interval <= 0:
            return
        c = self.counts
        last = (self.clock(), c.read, c.written)
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            elapsed = max(1e-9, now - last[0])
            log.info(
                "in %.0f/s, out %.0f/s, lag %d, in flight %d, dead-lettered %d, partitions %d",
                (c.read - last[1]) / elapsed,
                (c.written - last[2]) / elapsed,
                sum(self.lag.values()),
                self.assignment.inflight.records,
                c.dead_lettered,
                len(self.assignment.parts),
            )
            last = (now, c.read, c.written)

    # ---- health ------------------------------------------------------------------------

    def liveness(self) -> Check:
        """Alive: the loop answers (this runs on it), workers are up (or being replaced after
        a crash or a hang), no stall while lagging."""
        alive = self.workers_alive()
        details: dict[str, Any] = {"workers_alive": alive, "workers": self.settings.workers}
        if self.fatal is not None:
            return Check(False, f"stopping after a fatal error: {self.fatal}", details)
        if self.workers_serving() == 0:
            return Check(False, "no worker process is alive", details)
        lag = sum(self.lag.values())
        idle = self.clock() - self.last_progress
        details |= {"lag": lag, "seconds_since_progress": round(idle, 3)}
        if lag > 0 and idle > self.settings.stall_timeout:
            return Check(False, f"no progress for {idle:.0f}s while lagging", details)
        return Check(True, "alive", details)

    def readiness(self) -> Check:
        """Ready: partitions assigned, the broker answered recently, not mid-rebalance."""
        details: dict[str, Any] = {"partitions": len(self.assignment.parts)}
        if self.stopping:
            return Check(False, "shutting down", details)
        if self.rebalancing():
            return Check(False, "rebalancing: waiting for a partition assignment", details)
        if not self.assignment.parts:
            return Check(False, "no partitions assigned", details)
        if not self.sink_ready():
            return Check(False, "the database pool has no connection", details)
        seen = self.broker_seen
        stale = max(30.0, 3 * self.settings.lag_interval)
        if seen is None or self.clock() - seen > stale:
            return Check(False, "the broker has not answered recently", details)
        return Check(True, "ready", details)
