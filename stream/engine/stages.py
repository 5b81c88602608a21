"""The parts the settings choose, made once at start: the delivery guarantee, the
optional stages (formats, enrichment, the database sink) and the topics they need.
Nothing else in the engine asks which guarantee or which stages are on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from stream.config import RunSettings
from stream.engine.assignment import Assignment
from stream.engine.delivery import AtLeastOnce, Delivery, Spawn
from stream.engine.routing import Router
from stream.engine.sending import Sender
from stream.engine.sinking import SinkStage
from stream.engine.transactions import ExactlyOnce
from stream.kafka.protocols import Clients, Consumer
from stream.metrics import Metrics
from stream.pool import Pool, WorkerPool
from transforms import Transform

log = logging.getLogger("stream")


async def make_delivery(
    settings: RunSettings,
    *,
    clients: Clients,
    consumer: Consumer,
    assignment: Assignment,
    sender: Sender,
    metrics: Metrics,
    fail: Callable[[BaseException], None],
    spawn: Spawn,
) -> Delivery:
    if settings.guarantee == "exactly-once":
        return ExactlyOnce(
            settings,
            clients=clients,
            consumer=consumer,
            assignment=assignment,
            sender=sender,
            metrics=metrics,
        )
    return AtLeastOnce(
        settings,
        producer=await clients.producer(),
        consumer=consumer,
        assignment=assignment,
        sender=sender,
        metrics=metrics,
        fail=fail,
        spawn=spawn,
        clients=clients,
    )


async def prepare_formats(settings: RunSettings, transform: Transform, pool: Pool) -> None:
    """Avro or Protobuf: register the output schema (one line and exit 1 if the registry
    refuses it) and tell the workers how to decode and encode."""
    if settings.input_format == "json" and settings.output_format == "json":
        return
    from stream.formats.setup import prepare  # noqa: PLC0415 - formats only when used

    formats = await asyncio.to_thread(prepare, settings, transform)
    if isinstance(pool, WorkerPool):
        pool.formats = formats


def make_enricher(settings: RunSettings, metrics: Metrics) -> Any:
    """The enrichment stage, or None; a --enrich function that cannot be loaded fails here."""
    if not (settings.enrich_url or settings.enrich):
        return None
    from stream.enrich.stage import Enricher  # noqa: PLC0415 - aiohttp only when used

    return Enricher.from_settings(settings, metrics.enrich)


async def start_sink(
    settings: RunSettings, metrics: Metrics, router: Router
) -> tuple[Any, SinkStage | None]:
    """With --sink postgres: the pool started and the tables checked (one line if one is
    missing); the sink and its stage."""
    if "postgres" not in settings.sinks:
        return None, None
    from stream.metrics import SinkMetrics  # noqa: PLC0415 - asyncpg only when used
    from stream.sink.admin import sink_config  # noqa: PLC0415
    from stream.sink.postgres import PostgresSink  # noqa: PLC0415
    from stream.sink.rows import RowError, row_builder  # noqa: PLC0415

    observer = SinkMetrics(metrics, "postgres")
    sink = PostgresSink(sink_config(settings), observer)
    await sink.start()
    observer.watch_pool(sink.pool_connections)
    stage = SinkStage(
        sink,
        row_builder(settings.transform),
        RowError,
        router,
        settings.group_id,
        to_kafka="kafka" in settings.sinks,
    )
    return sink, stage


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
