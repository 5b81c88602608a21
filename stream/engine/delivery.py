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
from dataclasses import dataclass
from typing import Any, Protocol

from stream.config import RunSettings
from stream.engine.assignment import Assignment, Batch, Partition
from stream.engine.routing import Plan, Router, refusal
from stream.engine.sinking import SinkStage
from stream.errors import FatalError, KafkaFailure, ProducerBroken, RecordRefused
from stream.kafka.protocols import Clients, Consumer, OutRecord, Producer, Sent
from stream.metrics import Metrics

log = logging.getLogger("stream")

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


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


@dataclass(frozen=True, slots=True)
class Shipped:
    """One produce batch of a batch's records: which records (indices in the batch), and
    whether they are dead letters."""

    sent: Sent
    records: list[int]
    letters: bool


MAX_TRIES = 4  # normal, each suspect alone, refused as dead letters, dead letters minimal


class Sender:
    """Routes a batch and queues its outputs and dead letters on a producer."""

    def __init__(
        self,
        router: Router,
        output_topic: str,
        dlq_topic: str,
        stage: SinkStage | None = None,
    ) -> None:
        self.router = router
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.stage = stage  # the database, written before Kafka
        self.outputs = stage is None or stage.to_kafka  # outputs go to the output topic

    async def write_rows(
        self, part: Partition, batches: list[Batch], next_offset: int | None
    ) -> list[Plan]:
        """With a database sink, the batches' rows first; plans for what it refused."""
        if self.stage is None:
            return [Plan() for _ in batches]
        return await self.stage.write(part, batches, next_offset)

    async def send(
        self,
        producer: Producer,
        part: Partition,
        batch: Batch,
        plan: Plan | None = None,
        only: set[int] | None = None,
    ) -> list[Shipped]:
        """Queue the batch's records (or ``only`` these), in order; records the plan says
        to send alone go in produce batches of their own."""
        routed = self.router.route(part.tp, batch, batch.result.result(), plan)
        batch.errors = routed.errors
        shipped = await self._ship(
            producer,
            self.output_topic,
            routed.outputs if self.outputs else [],
            routed.output_index if self.outputs else [],
            plan=plan,
            only=only,
            letters=False,
        )
        shipped += await self._ship(
            producer,
            self.dlq_topic,
            routed.letters,
            routed.letter_index,
            plan=plan,
            only=only,
            letters=True,
        )
        return shipped

    @staticmethod
    async def _ship(
        producer: Producer,
        topic: str,
        records: list[OutRecord],
        index: list[int],
        *,
        plan: Plan | None,
        only: set[int] | None,
        letters: bool,
    ) -> list[Shipped]:
        if only is not None:
            keep = [i for i, at in enumerate(index) if at in only]
            records, index = [records[i] for i in keep], [index[i] for i in keep]
        alone = plan.alone if plan else set()
        if not alone.intersection(index):
            sent = await producer.send(topic, records)
            return [Shipped(s, [index[i] for i in s.indices], letters) for s in sent]
        shipped: list[Shipped] = []
        start = 0
        for position, at in enumerate([*index, None]):  # runs between the records sent alone
            if at is not None and at not in alone:
                continue
            for s in await producer.send(topic, records[start:position]):
                shipped.append(Shipped(s, [index[start + i] for i in s.indices], letters))
            if at is not None:
                for s in await producer.send(topic, [records[position]]):
                    shipped.append(Shipped(s, [at], letters))
            start = position + 1
        return shipped


def learn(plan: Plan, failed: list[tuple[Shipped, BaseException]]) -> None:
    """Refine the plan from refusals: a refused produce batch of several records has each
    sent alone; a refused output becomes a dead letter; a refused dead letter becomes a
    minimal one. Raises what cannot be helped (not a refusal, or a minimal dead letter
    refused)."""
    for shipped, error in failed:
        if isinstance(error, ProducerBroken):
            continue  # not written: sent again as it was, by a new producer
        if not isinstance(error, RecordRefused):
            raise error if isinstance(error, KafkaFailure) else KafkaFailure(repr(error))
        if len(shipped.records) > 1:
            plan.alone.update(shipped.records)
            continue
        (at,) = shipped.records
        plan.alone.add(at)
        if not shipped.letters:
            plan.refused[at] = refusal(error.error)
        elif at not in plan.minimal:
            plan.minimal.add(at)
        else:
            raise FatalError(f"the dead-letter topic refused even a minimal dead letter: {error}")


async def settle(shipped: list[Shipped]) -> list[tuple[Shipped, BaseException]]:
    """Wait for every produce batch; the ones that failed, with their errors."""
    results = await asyncio.gather(*(s.sent.future for s in shipped), return_exceptions=True)
    return [(s, r) for s, r in zip(shipped, results, strict=True) if isinstance(r, BaseException)]


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
