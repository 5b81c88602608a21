"""The parts the settings choose, each made once at start: the formats the workers
use, the enrichment stage in front of them, the database sink, the delivery
guarantee, and the topics they need. The engine's runner wires what these return."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

from stream.config import RunSettings
from stream.engine.assignment import Assignment
from stream.engine.at_least_once import AtLeastOnce
from stream.engine.delivery import Guarantee
from stream.engine.exactly_once import ExactlyOnce
from stream.engine.fetcher import Process
from stream.engine.policy import CommitPolicy
from stream.engine.routing import Router
from stream.engine.sending import Sender
from stream.engine.sinking import Database, SinkStage
from stream.engine.windowing import WindowConfig, Windowing, changelog_topic
from stream.errors import UsageError
from stream.formats.spec import JSON, FormatSpec
from stream.kafka.protocols import Clients, Consumer
from stream.metrics import Metrics, WindowMetrics
from stream.pool import Pool
from stream.windows.custom import Extras
from stream.worker import BatchResult
from transforms import Transform

if TYPE_CHECKING:
    from stream.enrich.stage import Enricher
    from stream.sink.postgres import PostgresSink

log = logging.getLogger("stream")


async def make_guarantee(
    settings: RunSettings,
    *,
    clients: Clients,
    consumer: Consumer,
    assignment: Assignment,
    sender: Sender,
    metrics: Metrics,
) -> Guarantee:
    if settings.guarantee == "exactly-once":
        return ExactlyOnce(
            settings.group_id,
            clients=clients,
            assignment=assignment,
            sender=sender,
            metrics=metrics,
        )
    return AtLeastOnce(
        await clients.producer(),
        clients=clients,
        consumer=consumer,
        assignment=assignment,
        sender=sender,
        metrics=metrics,
    )


def commit_policy(settings: RunSettings) -> CommitPolicy:
    """Exactly-once commits a partition's transaction every --transaction-interval,
    at-least-once its offsets every --commit-interval; both early at a quarter of the
    in-flight caps."""
    exactly_once = settings.guarantee == "exactly-once"
    return CommitPolicy(
        interval=settings.transaction_interval if exactly_once else settings.commit_interval,
        idle_interval=settings.commit_interval,
        max_records=settings.max_inflight_records,
        max_bytes=settings.max_inflight_bytes,
    )


async def prepare_formats(settings: RunSettings, transform: Transform) -> FormatSpec:
    """How workers decode and encode. Avro or Protobuf: the output schema registered (one
    line and exit 1 if the registry refuses it)."""
    if settings.input_format == "json" and settings.output_format == "json":
        return JSON
    from stream.formats.setup import prepare  # noqa: PLC0415 - formats only when used

    return await asyncio.to_thread(prepare, settings, transform)


def make_enricher(settings: RunSettings, metrics: Metrics) -> Enricher | None:
    """The enrichment stage, or None; a --enrich function that cannot be loaded fails here."""
    if not (settings.enrich_url or settings.enrich):
        return None
    from stream.enrich.stage import Enricher  # noqa: PLC0415 - aiohttp only when used

    return Enricher.from_settings(settings, metrics.enrich)


def make_process(pool: Pool, enricher: Enricher | None, *, windowed: bool = False) -> Process:
    """What the fetcher awaits for each batch: the pool, behind enrichment if it is on
    (a windowed run's workers also take the records' timestamps)."""
    if enricher is None:

        async def run(
            _keys: list[bytes | None], values: list[bytes | None], stamps: list[int]
        ) -> BatchResult:
            return await pool.run(values, timestamps=stamps if windowed else None)

        return run
    from stream.enrich.stage import enrich_then_process  # noqa: PLC0415 - aiohttp if on

    enriched = functools.partial(enrich_then_process, enricher, pool.run)

    async def run_enriched(
        keys: list[bytes | None], values: list[bytes | None], _stamps: list[int]
    ) -> BatchResult:
        return await enriched(keys, values)

    return run_enriched


def make_sink(settings: RunSettings, metrics: Metrics) -> PostgresSink | None:
    """With --sink postgres: the database sink, not started yet."""
    if "postgres" not in settings.sinks:
        return None
    from stream.metrics import SinkMetrics  # noqa: PLC0415 - asyncpg only when used
    from stream.sink.admin import sink_config  # noqa: PLC0415
    from stream.sink.postgres import PostgresSink  # noqa: PLC0415

    observer = SinkMetrics(metrics, "postgres")
    sink = PostgresSink(sink_config(settings), observer)
    observer.watch_pool(sink.pool_connections)
    return sink


async def start_sink(settings: RunSettings, sink: Database, router: Router) -> SinkStage:
    """The pool started and the tables checked (one line if one is missing); its stage."""
    from stream.sink.rows import RowError, row_builder  # noqa: PLC0415

    await sink.start()
    return SinkStage(
        sink,
        row_builder(settings.transform),
        RowError,
        router,
        settings.group_id,
        to_kafka="kafka" in settings.sinks,
    )


async def make_windowing(
    settings: RunSettings, clients: Clients, metrics: Metrics, router: Router
) -> Windowing | None:
    """With --window: the changelog topic made (or checked) and the window state."""
    spec = settings.window_spec
    if spec is None:
        return None
    topic = changelog_topic(settings.group_id, settings.input_topic)
    try:
        extras = Extras.of(settings.aggregates)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--aggregate: {exc}") from None
    if await clients.ensure_changelog(topic, settings.input_topic):
        log.info("created the windows' changelog topic %s (compacted)", topic)
    config = WindowConfig(
        spec,
        settings.aggregates,
        topic,
        require_key=settings.require_key,
        emit_update=settings.emit == "update",
        idle_close_ms=settings.idle_close_ms,
        max_windows=settings.max_windows,
        extras=extras,
        router=router,
    )
    return Windowing(config, clients, WindowMetrics(metrics.registry))


async def check_topics(settings: RunSettings, clients: Clients, consumer: Consumer) -> None:
    """The input and output topics exist; the dead-letter topic is made if missing."""
    from stream.kafka.admin import require_topics  # noqa: PLC0415

    await require_topics(consumer, [settings.input_topic, settings.output_topic])
    if await clients.ensure_topic(settings.dead_letter_topic, settings.input_topic):
        log.info(
            "created the dead-letter topic %s (as many partitions as %s)",
            settings.dead_letter_topic,
            settings.input_topic,
        )
