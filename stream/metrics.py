"""Every metric the service exports, declared in one place.

Recorded by the parent process only: workers return their timings with their
results (no multiprocess mode, no per-pid files). Names start with ``stream_``,
use base units, counters end in ``_total``; labels are low-cardinality (topic,
partition, transform, reason), never keys or offsets.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from stream import __version__
from transforms.reasons import Reason

# No ``<name>_created`` series (when each series was made): they were 70 of the 254
# ``stream_`` lines of a scrape, and the text format's readers have no use for them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Reasons a record goes to the dead-letter topic; created at start so each series exists at 0.
REASONS = tuple(r.value for r in Reason)

# Reasons of stream_sink_errors_total; created at start for each sink in use.
SINK_REASONS = ("sink_refused", "connection", "auth", "fatal")

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class BatchHistogram(Histogram):
    """A histogram that also takes a whole batch of observations in one call.

    ``observe_many`` buckets an array with numpy and adds one count per bucket, instead
    of a Python call per value (at 50,000 records/s, per-record ``observe`` costs a
    noticeable share of the event loop). It uses the parent class's bucket fields,
    which a unit test checks against per-value ``observe``.
    """

    def observe_many(self, amounts: np.ndarray[Any, Any]) -> None:
        if amounts.size == 0:
            return
        bounds = np.asarray(self._upper_bounds, dtype=float)
        # The first bucket whose upper bound is >= the amount (le semantics).
        counts = np.bincount(np.searchsorted(bounds, amounts, side="left"), minlength=len(bounds))
        for index, count in enumerate(counts[: len(bounds)]):
            if count:
                self._buckets[index].inc(int(count))
        self._sum.inc(float(amounts.sum()))


# Outcomes of one enrichment request (an HTTP GET or a call of the user's coroutine).
ENRICH_REQUEST_OUTCOMES = (
    "ok",
    "not_found",
    "client_error",
    "server_error",
    "throttled",
    "timeout",
    "connection_error",
    "invalid_url",
    "invalid_body",
    "redirect_refused",
    "error",
)
# What enrichment did with each record.
ENRICH_RECORD_RESULTS = ("enriched", "passed", "failed", "refused", "skipped")


class EnrichMetrics:
    """The enrichment stage's metrics (stream.enrich), registered in the service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = r = registry
        # counter: enrichment requests (attempts, retries included), by outcome
        self.requests = Counter(
            "stream_enrich_requests", "Enrichment requests by outcome.", ["outcome"], registry=r
        )
        # counter: retries of enrichment requests (after a timeout, 5xx, 429 or refusal)
        self.retries = Counter("stream_enrich_retries", "Enrichment retries.", registry=r)
        # counter: records by what enrichment did (enriched, passed, failed, refused, skipped)
        self.records = Counter(
            "stream_enrich_records", "Records through enrichment.", ["result"], registry=r
        )
        # histogram: seconds from a lookup's first request to its answer (retries included)
        self.lookup_duration = Histogram(
            "stream_enrich_lookup_duration_seconds",
            "Enrichment lookup latency.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # counter: records answered from the cache
        self.cache_hits = Counter("stream_enrich_cache_hits", "Enrichment cache hits.", registry=r)
        # counter: records not in the cache (a request, or a share of one in flight)
        self.cache_misses = Counter(
            "stream_enrich_cache_misses", "Enrichment cache misses.", registry=r
        )
        # gauge: answers held in the enrichment cache
        self.cache_entries = Gauge(
            "stream_enrich_cache_entries", "Answers in the enrichment cache.", registry=r
        )
        # gauge: bytes the enrichment cache holds, keys and answers (at most --enrich-cache-bytes)
        self.cache_bytes = Gauge(
            "stream_enrich_cache_bytes", "Bytes held in the enrichment cache.", registry=r
        )
        # gauge: enrichment requests in flight now (at most --enrich-concurrency)
        self.inflight = Gauge(
            "stream_enrich_inflight_requests", "Enrichment requests in flight.", registry=r
        )
        for outcome in ENRICH_REQUEST_OUTCOMES:
            self.requests.labels(outcome)
        for result in ENRICH_RECORD_RESULTS:
            self.records.labels(result)


class WindowMetrics:
    """A windowed run's metrics (``--window``), registered in the service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        # gauge: windows open in this instance (at most --max-windows)
        self.open = Gauge("stream_windows_open", "Windows open.", registry=r)
        # gauge: bytes the open windows' columns hold
        self.state_bytes = Gauge(
            "stream_window_state_bytes", "Bytes held by the open windows.", registry=r
        )
        # counter: windows closed and written to the output topic
        self.closed = Counter("stream_windows_closed", "Windows closed and output.", registry=r)
        # counter: closed windows whose output (with its key) is too large for the output
        # topic: dead-lettered, reason output_too_large
        self.too_large = Counter(
            "stream_window_outputs_too_large",
            "Windows dead-lettered for their size.",
            registry=r,
        )
        # counter: records every window of which had closed (dead-lettered, reason late)
        self.late = Counter(
            "stream_window_late_records", "Records too late for their windows.", registry=r
        )
        # histogram: seconds one partition's state took to restore from the changelog
        self.restore_duration = Histogram(
            "stream_window_restore_seconds",
            "Seconds to restore a partition's windows.",
            buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0, 300.0),
            registry=r,
        )
        # gauge: partitions restoring their windows now (not ready meanwhile)
        self.restoring = Gauge(
            "stream_window_restoring_partitions", "Partitions restoring windows.", registry=r
        )


class Metrics:
    """The service's metrics, in a registry of its own (one per service instance)."""

    def __init__(
        self,
        transform: str,
        input_topic: str,
        output_topic: str,
        dlq_topic: str,
        sinks: Sequence[str] = (),
    ):
        self.registry = r = CollectorRegistry(auto_describe=True)
        # counter: records read from the input topic
        self.consumed = Counter(
            "stream_messages_consumed", "Records read from Kafka.", ["topic"], registry=r
        )
        # counter: records written and acknowledged, per topic (output and dead-letter)
        self.produced = Counter(
            "stream_messages_produced", "Records produced and acknowledged.", ["topic"], registry=r
        )
        # counter: records that could not be processed, by reason
        self.failed = Counter(
            "stream_messages_failed", "Records that failed processing.", ["reason"], registry=r
        )
        # counter: failed records written to the dead-letter topic, by reason
        self.dead_lettered = Counter(
            "stream_messages_dead_lettered",
            "Records written to the dead-letter topic.",
            ["reason"],
            registry=r,
        )
        # histogram: seconds a worker spent on one batch (decode + transform + encode)
        self.transform_duration = Histogram(
            "stream_transform_duration_seconds",
            "Worker time per batch.",
            ["transform"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # histogram: records per batch sent to a worker
        self.batch_size = Histogram(
            "stream_batch_size", "Records per batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        # histogram: input record timestamp -> output acknowledged, seconds
        self.latency = BatchHistogram(
            "stream_end_to_end_latency_seconds",
            "Input record timestamp to output acknowledged.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # gauge: records read and not yet committed-ready
        self.inflight_messages = Gauge("stream_inflight_messages", "Records in flight.", registry=r)
        # gauge: bytes of records read and not yet committed-ready
        self.inflight_bytes = Gauge("stream_inflight_bytes", "Bytes in flight.", registry=r)
        # gauge: worker processes alive
        self.pool_workers = Gauge("stream_pool_workers", "Worker processes alive.", registry=r)
        # counter: times the worker pool was rebuilt after a worker died
        self.worker_restarts = Counter(
            "stream_worker_restarts", "Worker pool restarts.", registry=r
        )
        # counter: worker starts that failed after a worker was replaced (each is retried
        # with a growing pause until one works)
        self.worker_respawn_failures = Counter(
            "stream_worker_respawn_failures",
            "Worker restarts that failed to start (retried with backoff).",
            registry=r,
        )
        # counter: partition assignments and revocations seen
        self.rebalances = Counter("stream_rebalances", "Consumer group rebalances.", registry=r)
        # gauge: records behind, per partition: high watermark minus committed offset
        self.consumer_lag = Gauge(
            "stream_consumer_lag",
            "High watermark minus committed offset.",
            ["topic", "partition"],
            registry=r,
        )
        # gauge: seconds, per partition: age of the oldest record not yet committed (0 caught up)
        self.consumer_lag_seconds = Gauge(
            "stream_consumer_lag_seconds",
            "Age of the oldest record not yet committed; 0 when caught up.",
            ["topic", "partition"],
            registry=r,
        )
        # gauge: seconds the event loop was late waking up, at the last check
        self.event_loop_lag = Gauge(
            "stream_event_loop_lag_seconds", "Event loop scheduling delay.", registry=r
        )
        # counter: offset commits that failed (they are retried at the next interval)
        self.commit_failures = Counter(
            "stream_commit_failures", "Offset commits that failed.", registry=r
        )
        # histogram: seconds one offset commit took
        self.commit_duration = Histogram(
            "stream_commit_duration_seconds",
            "Offset commit duration.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # gauge: unix time of the newest output acknowledged
        self.last_processed = Gauge(
            "stream_last_processed_timestamp_seconds",
            "Unix time when a record was last finished.",
            registry=r,
        )
        # --- sinks beside the output topic (PostgreSQL); `sinks` names those in use ---
        # counter: rows a sink wrote (or found already written: a replay), per sink
        self.sink_rows_written = Counter(
            "stream_sink_rows_written", "Rows written by a sink.", ["sink"], registry=r
        )
        # histogram: seconds one batch write took (its transaction, retries included)
        self.sink_write_duration = Histogram(
            "stream_sink_write_duration_seconds",
            "Duration of one sink batch write.",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # counter: sink failures by reason (sink_refused: a row the database refused;
        # connection: a lost connection, retried; auth; fatal)
        self.sink_errors = Counter(
            "stream_sink_errors", "Sink errors by reason.", ["sink", "reason"], registry=r
        )
        # gauge: a sink's pool connections, state in_use or idle
        self.sink_pool_connections = Gauge(
            "stream_sink_pool_connections",
            "Sink pool connections by state.",
            ["sink", "state"],
            registry=r,
        )
        for sink in sinks:
            self.sink_rows_written.labels(sink)
            self.sink_write_duration.labels(sink)
            for reason in SINK_REASONS:
                self.sink_errors.labels(sink, reason)
            for state in ("in_use", "idle"):
                self.sink_pool_connections.labels(sink, state)
        # the enrichment stage's metrics: stream_enrich_*
        self.enrich = EnrichMetrics(r)
        # info: version and settings that identify this build
        self.build_info = Info("stream_build", "Build information.", registry=r)
        self.build_info.info(
            {"version": __version__, "transform": transform, "python": platform.python_version()}
        )
        # process_* (CPU, memory, start time, open files) and python_info, of this process
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

        self.consumed.labels(input_topic)
        for topic in (output_topic, dlq_topic):
            self.produced.labels(topic)
        for reason in REASONS:
            self.failed.labels(reason)
            self.dead_lettered.labels(reason)
        self.transform_duration.labels(transform)


class SinkMetrics:
    """A sink's observer (``stream.sink.postgres.SinkObserver``) recording into
    :class:`Metrics`; ``watch_pool`` makes the pool gauge read the sink's pool."""

    def __init__(self, metrics: Metrics, sink: str) -> None:
        self._rows = metrics.sink_rows_written.labels(sink)
        self._duration = metrics.sink_write_duration.labels(sink)
        self._errors = metrics.sink_errors
        self._pool = metrics.sink_pool_connections
        self._sink = sink

    def written(self, rows: int, seconds: float) -> None:
        self._rows.inc(rows)
        self._duration.observe(seconds)

    def error(self, reason: str) -> None:
        self._errors.labels(self._sink, reason).inc()

    def watch_pool(self, connections: Callable[[], tuple[int, int]]) -> None:
        """``connections()`` gives (in use, idle); read at every scrape."""
        self._pool.labels(self._sink, "in_use").set_function(lambda: connections()[0])
        self._pool.labels(self._sink, "idle").set_function(lambda: connections()[1])
