"""How finished batches leave: the ``Delivery`` protocol and at-least-once.

The guarantee is chosen once, where the engine is built (``runner``); nothing else
asks which one is on. Exactly-once lives in ``transactions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from stream.config import RunSettings
from stream.engine.assignment import Assignment, Batch, Partition
from stream.engine.routing import Plan
from stream.engine.sending import MAX_TRIES, Sender, Shipped, learn, settle
from stream.errors import FatalError, KafkaFailure, ProducerBroken, RecordRefused
from stream.kafka.protocols import Clients, Consumer, Producer
from stream.metrics import Metrics

log = logging.getLogger("stream")

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


class Delivery(Protocol):
    """Produces finished batches of a partition and makes their offsets count."""

    max_batches: int  # most finished batches handed to deliver() at once

    def wait_limit(self, part: Partition) -> float | None:
        """Seconds an emitter waits for a finished batch before it calls ``idle`` (None:
        no limit)."""

    def flush(self) -> None:
        """Shutting down: deliver what is held back as soon as nothing more is queued."""

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


class AtLeastOnce:
    """One shared idempotent producer; a batch is finished when every record of it is
    acknowledged; offsets are committed every ``--commit-interval``."""

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
        spawn: Spawn,
        clients: Clients,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.consumer = consumer
        self.assignment = assignment
        self.sender = sender
        self.metrics = metrics
        self._fail = fail
        self._spawn = spawn
        self.clients = clients
        self._renewing = asyncio.Lock()
        self._retired: list[Producer] = []  # replaced producers: closed at the end

    async def start(self) -> None:
        return None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.commit_interval)
            await self.commit()

    async def open(self, part: Partition) -> None:
        return None

    def wait_limit(self, part: Partition) -> float | None:
        return None  # offsets are committed every --commit-interval by run()

    def flush(self) -> None:
        return None  # nothing is held back

    async def deliver(self, part: Partition, batches: list[Batch]) -> None:
        for batch in batches:
            (plan,) = await self.sender.write_rows(part, [batch], None)
            try:
                shipped = await self.sender.send(self.producer, part, batch, plan)
            except KafkaFailure as exc:
                # Not queued within the delivery timeout: stop, and let the next start
                # read this batch again (nothing past it is committed).
                raise FatalError(f"producing to Kafka failed: {exc}") from exc
            self._watch(part, batch, shipped, plan)

    def _watch(self, part: Partition, batch: Batch, shipped: list[Shipped], plan: Plan) -> None:
        """Finish the batch once every produce batch of it is acknowledged; records the
        broker refused for good are sent again, alone, and become dead letters."""
        if not shipped:
            self.assignment.finish(part, batch)
            return
        left = len(shipped)
        failed: list[tuple[Shipped, BaseException]] = []

        def done(item: Shipped, future: asyncio.Future[None]) -> None:
            nonlocal left
            if future.cancelled():
                failed.append((item, KafkaFailure("the send was cancelled")))
            elif (error := future.exception()) is not None:
                failed.append((item, error))
            left -= 1
            if left:
                return
            if not failed:
                self.assignment.finish(part, batch)
            elif all(isinstance(e, (RecordRefused, ProducerBroken)) for _, e in failed):
                self._spawn(self._repair(part, batch, failed, plan), f"refused-{part.label}")
            else:
                # Never commit past a record that was not produced.
                self._fail(FatalError(f"producing to Kafka failed: {failed[0][1]}"))

        for item in shipped:
            item.sent.future.add_done_callback(functools.partial(done, item))

    async def _repair(
        self,
        part: Partition,
        batch: Batch,
        failed: list[tuple[Shipped, BaseException]],
        plan: Plan,
    ) -> None:
        broken = self.producer
        for _ in range(MAX_TRIES):
            learn(plan, failed)
            only = {at for shipped, _ in failed for at in shipped.records}
            broken = await self._renew(broken)
            try:
                shipped = await self.sender.send(self.producer, part, batch, plan, only)
            except KafkaFailure as exc:
                raise FatalError(f"producing to Kafka failed: {exc}") from exc
            failed = await settle(shipped)
            if not failed:
                self.assignment.finish(part, batch)
                return
        raise FatalError(f"{part.label}: records refused after {MAX_TRIES} tries: {failed[0][1]}")

    async def _renew(self, broken: Producer) -> Producer:
        """A refusal breaks the producer's sequence for that partition: replace the
        shared producer (once, whoever asks first); returns the one to use now."""
        async with self._renewing:
            if self.producer is broken:
                log.warning("replacing the producer after the broker refused a record")
                self.producer = await self.clients.producer()
                self._retired.append(broken)
        return self.producer

    async def idle(self, part: Partition) -> None:
        return None

    async def commit(self, parts: list[Partition] | None = None) -> None:
        """Commit each partition's finished prefix (an idle one up to its position)."""
        owned = list(self.assignment.parts.values()) if parts is None else parts
        for part in owned:
            if not part.busy and part.accepting and not part.closing:
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
        for producer in [*self._retired, self.producer]:
            await producer.stop()
