"""``stream run``'s options in the processing, flow-control and observability sections
of ``--help``, as three layers of one chain of frozen dataclasses that
:class:`stream.config.run.RunSettings` ends (a slotted dataclass takes one base, so the
groups stack rather than mix in). They only declare; the checks across groups are
``RunSettings``'s."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, get_args

from stream.config.groups import FLOW, OBSERVABILITY, PROCESSING
from stream.config.kafka import KafkaSettings
from stream.options import (
    boolean,
    choice,
    non_negative_float,
    opt,
    port,
    positive_float,
    positive_int,
    size,
)

Guarantee = Literal["at-least-once", "exactly-once"]
OffsetReset = Literal["earliest", "latest"]
LogFormat = Literal["text", "json"]

DEFAULT_TRANSFORM = "sensor-features"
MIN_TRANSACTION_TIMEOUT = 60.0  # seconds: Kafka's own default transaction timeout
# Seconds: the broker's default transaction.max.timeout.ms; it refuses a transactional
# producer that asks for more (InvalidTransactionTimeout), so the service never does.
MAX_TRANSACTION_TIMEOUT = 900.0


@dataclass(frozen=True, slots=True)
class ProcessingOptions(KafkaSettings):
    """``stream run``: how records are read, batched and transformed."""

    group_id: str = opt(
        "stream", "consumer group id; instances with one id share the work", group=PROCESSING
    )
    transform: str = opt(
        "",
        f"transform: a built-in name (see `stream transforms`) or package.module:function "
        f"(default: {DEFAULT_TRANSFORM}; with --window, none: the windows aggregate the "
        "decoded records)",
        metavar="NAME",
        group=PROCESSING,
    )
    workers: int = opt(
        os.cpu_count() or 1,
        "worker processes (default: CPU count)",
        positive_int,
        "N",
        group=PROCESSING,
    )
    guarantee: Guarantee = opt(
        "at-least-once", "delivery guarantee", choice(*get_args(Guarantee)), group=PROCESSING
    )
    auto_offset_reset: OffsetReset = opt(
        "earliest",
        "where a group without committed offsets starts",
        choice(*get_args(OffsetReset)),
        group=PROCESSING,
    )
    batch_timeout: float = opt(
        60.0,
        "seconds a worker may spend on one batch before it is replaced and the batch retried",
        positive_float,
        "SECONDS",
        group=PROCESSING,
    )
    batch_max_records: int = opt(
        500, "most records in one batch sent to a worker", positive_int, "N", group=PROCESSING
    )
    batch_max_bytes: int = opt(
        1 << 20, "most bytes in one batch sent to a worker", size, "SIZE", group=PROCESSING
    )
    max_record_bytes: int = opt(
        1 << 20, "larger input records go to the dead-letter topic", size, "SIZE", group=PROCESSING
    )
    max_array_length: int = opt(
        100_000,
        "longest array a built-in transform accepts (sensor values, matrix rows)",
        positive_int,
        "N",
        group=PROCESSING,
    )
    require_key: bool = opt(
        False,
        "records without a key go to the dead-letter topic (reason null_key); when off, "
        "they are processed and their outputs keep the null key",
        boolean,
        group=PROCESSING,
    )


@dataclass(frozen=True, slots=True)
class FlowOptions(ProcessingOptions):
    """``stream run``: how much is in flight, fetched and held before a commit."""

    max_inflight_records: int = opt(
        20_000,
        "records read but not yet committed before fetching pauses",
        positive_int,
        "N",
        group=FLOW,
    )
    max_inflight_bytes: int = opt(
        64 << 20,
        "bytes read but not yet committed before fetching pauses",
        size,
        "SIZE",
        group=FLOW,
    )
    fetch_max_bytes: int = opt(
        8 << 20, "most bytes one fetch from the broker returns", size, "SIZE", group=FLOW
    )
    max_partition_fetch_bytes: int = opt(
        1 << 20, "most bytes one fetch returns per partition", size, "SIZE", group=FLOW
    )
    commit_interval: float = opt(
        1.0, "seconds between offset commits", positive_float, "SECONDS", group=FLOW
    )
    transaction_interval: float = opt(
        0.1,
        "exactly-once: seconds a partition's transaction stays open before it commits; "
        "outputs are visible to read_committed consumers only then, so longer means "
        "fewer commits and more throughput but later outputs (0: commit after each "
        "delivery; at most half the transaction timeout: twice --drain-timeout, from 60 s "
        "to 900 s)",
        non_negative_float,
        "SECONDS",
        group=FLOW,
    )
    drain_timeout: float = opt(
        30.0,
        "seconds to finish in-flight work on shutdown or rebalance before abandoning it",
        positive_float,
        "SECONDS",
        group=FLOW,
    )
    session_timeout_ms: int = opt(
        30_000, "consumer group session timeout", positive_int, "MS", group=FLOW
    )

    @property
    def transaction_timeout(self) -> float:
        """Seconds the broker lets a transaction of ours stay open before it aborts it
        (the transactional producers' transaction timeout): room for a whole drain on
        revoke or shutdown, twice over, within what a broker accepts by default (60 s
        to 15 min)."""
        return min(MAX_TRANSACTION_TIMEOUT, max(MIN_TRANSACTION_TIMEOUT, 2 * self.drain_timeout))


@dataclass(frozen=True, slots=True)
class ObservabilityOptions(FlowOptions):
    """``stream run``: metrics, health and logs."""

    metrics_port: int = opt(
        9400, "Prometheus metrics port (0: any free port)", port, "PORT", group=OBSERVABILITY
    )
    metrics_host: str = opt(
        "127.0.0.1", "address the metrics server binds", metavar="HOST", group=OBSERVABILITY
    )
    lag_interval: float = opt(
        5.0,
        "seconds between reads of the partitions' end offsets (lag)",
        positive_float,
        "SECONDS",
        group=OBSERVABILITY,
    )
    stall_timeout: float = opt(
        120.0,
        "seconds without progress while lagging before /healthz reports not alive",
        positive_float,
        "SECONDS",
        group=OBSERVABILITY,
    )
    log_level: str = opt(
        "info", "log level", choice("debug", "info", "warning", "error"), group=OBSERVABILITY
    )
    log_format: LogFormat = opt(
        "text", "log line format", choice(*get_args(LogFormat)), group=OBSERVABILITY
    )
    stats_interval: float = opt(
        30.0,
        "seconds between summary log lines (0: never)",
        non_negative_float,
        "SECONDS",
        group=OBSERVABILITY,
    )
