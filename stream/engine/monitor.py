"""What the engine tells people: lag, event-loop lag, the stats line, and whether it
is alive and ready. It reads the engine's state; decisions take an injected clock, so
a test can move time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from stream.config import RunSettings
from stream.engine.assignment import Assignment, Partition
from stream.engine.health import Limits, Work, judge
from stream.engine.progress import Progress
from stream.engine.state import EngineState, Membership
from stream.errors import KafkaFailure
from stream.flow import wait_event
from stream.http import Check
from stream.kafka.protocols import Consumer, TopicPartition
from stream.metrics import Metrics
from stream.pool import Pool

log = logging.getLogger("stream")

LOOP_LAG_INTERVAL = 0.25


class Database(Protocol):
    def pool_connections(self) -> tuple[int, int]:
        """Connections in use, and idle."""


class Monitor:
    def __init__(
        self,
        settings: RunSettings,
        metrics: Metrics,
        assignment: Assignment,
        progress: Progress,
        *,
        state: EngineState,
        membership: Membership,
        pool: Pool,
        database: Database | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.assignment = assignment
        self.progress = progress
        self.state = state
        self.membership = membership
        self.pool = pool
        self.database = database
        self.clock = clock
        self.wall = wall
        self.lag: dict[TopicPartition, int] = {}
        self.limits = Limits(
            settings.stall_timeout, settings.batch_timeout, settings.delivery_timeout
        )
        self.broker_seen: float | None = None  # clock time of the last broker answer

    # ---- loops -------------------------------------------------------------------------

    async def loop_lag_loop(self) -> None:
        """Measure how late the event loop wakes up; count the live workers."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LOOP_LAG_INTERVAL)
            self.metrics.event_loop_lag.set(max(0.0, loop.time() - started - LOOP_LAG_INTERVAL))
            self.metrics.pool_workers.set(self.pool.alive)

    async def lag_loop(self, consumer: Consumer) -> None:
        """Read our partitions' end offsets every lag interval; set the lag gauges. A
        failed read (a rebalance, a broker away) is logged and tried again."""
        while True:
            changed = self.membership.changed
            await wait_event(changed, self.settings.lag_interval)
            changed.clear()
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
        c = self.progress.counts
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
        alive = self.pool.alive
        details: dict[str, Any] = {"workers_alive": alive, "workers": self.settings.workers}
        if self.state.fatal is not None:
            return Check(False, f"stopping after a fatal error: {self.state.fatal}", details)
        if self.pool.serving == 0:
            return Check(False, "no worker process is alive", details)
        now = self.clock()
        parts = list(self.assignment.parts.values())
        work = Work(
            lag=sum(self.lag.values()),
            last_progress=self.progress.last_progress,
            last_fetch=self.progress.last_fetch,
            waiting_since=min((p.busy_since for p in parts if p.busy_since), default=None),
            delivering_since=min(
                (p.delivering_since for p in parts if p.delivering_since), default=None
            ),
        )
        activity = self.pool.activity()
        verdict = judge(now, work, activity, self.limits)
        details |= {
            "lag": work.lag,
            "seconds_since_progress": round(verdict.stalled_for, 3),
            "worker_starts_failing": activity.respawn_failures,
        }
        return Check(verdict.alive, verdict.reason, details)

    def readiness(self) -> Check:
        """Ready: partitions assigned, the broker answered recently, not mid-rebalance."""
        details: dict[str, Any] = {"partitions": len(self.assignment.parts)}
        if self.state.stopping:
            return Check(False, "shutting down", details)
        restoring = [p.label for p in self.assignment.parts.values() if p.restoring]
        if restoring:  # within the assignment callback: before "rebalancing" says less
            details["restoring"] = sorted(restoring)
            return Check(False, "restoring window state from the changelog", details)
        if self.membership.rebalancing:
            return Check(False, "rebalancing: waiting for a partition assignment", details)
        if not self.assignment.parts:
            return Check(False, "no partitions assigned", details)
        if self.database is not None and not any(self.database.pool_connections()):
            return Check(False, "the database pool has no connection", details)
        seen = self.broker_seen
        stale = max(30.0, 3 * self.settings.lag_interval)
        if seen is None or self.clock() - seen > stale:
            return Check(False, "the broker has not answered recently", details)
        return Check(True, "ready", details)
