"""How finished batches leave: the ``Delivery`` protocol and at-least-once.

The guarantee is chosen once, where the engine is built (``runner``); nothing else
asks which one is on. Exactly-once lives in ``transactions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from stream.config import RunSettings
from stream.engine.assignment import Assignment, Batch, Partition
from stream.engine.routing import Routed, Router
from stream.errors import FatalError, KafkaFailure
from stream.kafka.protocols import Consumer, Producer, Sent
from stream.metrics import Metrics

log = logging.getLogger("stream")


class Delivery(Protocol):
    """Produces finished batches of a partition and makes their offsets count."""

    idle_interval: float | None  # an emitter with nothing to do calls idle() this often
    max_batches: int  # most finished batches handed to deliver() at once

    async def start(self) -> None: ...
    async def run(self) -> None:
        """Background duty for as long as the engine runs (periodic commits)."""

    async def open(self, part: Partition) -> None:
        """Before the partition's committed offset is read."""

    async def deliver(self, part: Partition, batches: list[Batch]) -> None:
        """Raises ``KafkaFailure`` when the partition must be rewound."""

    async def idle(self, part: Partition) -> None: ...
    async def commit(self, parts: list[Partition] | None = None) -> None: ...
    async def release(self, part: Partition, *, lost: bool) -> None: ...
    async def close(self) -> None: ...


class Sender:
    """Routes a batch and queues its outputs and dead letters on a producer."""

    def __init__(self, router: Router, output_topic: str, dlq_topic: str) -> None:
        self.router = router
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic

    async def send(
        self, producer: Producer, part: Partition, batch: Batch
    ) -> tuple[Routed, list[Sent]]:
        routed = self.router.route(part.tp, batch, batch.result.result())
        batch.errors = routed.errors
        sent = await producer.send(self.output_topic, routed.outputs)
        sent += await producer.send(self.dlq_topic, routed.letters)
        return routed, sent


class AtLeastOnce:
    """One shared idempotent producer; a batch is finished when every record of it is
    acknowledged; offsets are committed every ``--commit-interval``."""

    idle_interval: float | None = None
    max_batches = 1

    def __init__(
        self,
        settings: RunSettings,
        *,
        producer: Producer,
        consumer: Consumer,
        assignment: Assignment,
        sender: Sender,
        metrics: Metrics,
        fail: Callable[[BaseException], None],
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.consumer = consumer
        self.assignment = assignment
        self.sender = sender
        self.metrics = metrics
        self._fail = fail

    async def start(self) -> None:
        return None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.commit_interval)
            await self.commit()

    async def open(self, part: Partition) -> None:
        return None

    async def deliver(self, part: Partition, batches: list[Batch]) -> None:
        for batch in batches:
            try:
                _, sent = await self.sender.send(self.producer, part, batch)
            except KafkaFailure as exc:
                # Not queued within the delivery timeout: stop, and let the next start
                # read this batch again (nothing past it is committed).
                raise FatalError(f"producing to Kafka failed: {exc}") from exc
            self._watch(part, batch, sent)

    def _watch(self, part: Partition, batch: Batch, sent: list[Sent]) -> None:
        """Finish the batch once every produce batch of it is acknowledged."""
        if not sent:
            self.assignment.finish(part, batch)
            return
        left = len(sent)
        errors: list[BaseException] = []

        def done(future: asyncio.Future[None]) -> None:
            nonlocal left
            if future.cancelled():
                errors.append(asyncio.CancelledError())
            elif (error := future.exception()) is not None:
                errors.append(error)
            left -= 1
            if left:
                return
            if errors:
                # Never commit past a record that was not produced.
                self._fail(FatalError(f"producing to Kafka failed: {errors[0]}"))
                return
            self.assignment.finish(part, batch)

        for item in sent:
            item.future.add_done_callback(done)

    async def idle(self, part: Partition) -> None:
        return None

    async def commit(self, parts: list[Partition] | None = None) -> None:
        """Commit each partition's finished prefix (an idle one up to its position)."""
        owned = list(self.assignment.parts.values()) if parts is None else parts
        for part in owned:
            if not part.busy and not part.closing and part.offsets.position is not None:
                with contextlib.suppress(KafkaFailure):
                    part.offsets.advance_idle(await self.consumer.position(part.tp))
        wanted = {p.tp for p in owned}
        offsets = {tp: o for tp, o in self.assignment.tracker.committable().items() if tp in wanted}
        if not offsets:
            return
        started = time.perf_counter()
        try:
            await self.consumer.commit(offsets)
        except KafkaFailure as exc:
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed (will retry): %s", exc)
            return
        self.metrics.commit_duration.observe(time.perf_counter() - started)
        self.assignment.tracker.mark_committed(offsets)

    async def release(self, part: Partition, *, lost: bool) -> None:
        return None

    async def close(self) -> None:
        await self.producer.stop()
