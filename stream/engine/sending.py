"""Sending finished batches to Kafka, for both guarantees: outputs and dead letters in
input order (the database's rows first, with a sink), and the one loop that handles
what the broker refuses: each suspect alone, then as a dead letter, then as a minimal
one, each round on a new producer (a refusal breaks a producer's sequence)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from stream.engine.assignment import Partition
from stream.engine.batch import Batch
from stream.engine.routing import Router, refusal
from stream.engine.sinking import SinkStage
from stream.errors import FatalError, KafkaFailure, ProducerBroken, RecordRefused
from stream.kafka.protocols import OutRecord, Producer, Sent


@dataclass(frozen=True, slots=True)
class Shipped:
    """One produce batch of a batch's records: which records (indices in the batch), and
    whether they are dead letters."""

    sent: Sent
    records: list[int]
    letters: bool
    producer: Producer | None = None  # the producer it was queued on
    state: bool = False  # windows' outputs or changelog records, not the batch's records


Failures = list[tuple[Shipped, BaseException]]
Refusals = list[tuple[Batch, Failures]]  # batches with sends that failed

MAX_TRIES = 4  # normal, each suspect alone, refused as dead letters, dead letters minimal


class Sender:
    """Writes a partition's batches to the database (if on) and queues their outputs and
    dead letters on a producer."""

    def __init__(
        self,
        router: Router,
        output_topic: str,
        dlq_topic: str,
        stage: SinkStage | None = None,
        changelog_topic: str = "",
    ) -> None:
        self.router = router
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.changelog_topic = changelog_topic  # a windowed run's state
        self.stage = stage  # the database, written before Kafka
        self.outputs = stage is None or stage.to_kafka  # outputs go to the output topic

    async def write_rows(self, part: Partition, batches: list[Batch]) -> None:
        """With a database sink, the batches' rows first (with the partition's next
        offset); what it refuses becomes dead letters in the batches' plans."""
        if self.stage is not None:
            await self.stage.write(part, batches)

    async def send(
        self, producer: Producer, part: Partition, batch: Batch, only: set[int] | None = None
    ) -> list[Shipped]:
        """Queue the batch's records (or ``only`` these), in order; records its plan says
        to send alone go in produce batches of their own."""
        routed = self.router.of(part.tp, batch)
        batch.errors = routed.errors
        alone = batch.plan.alone
        shipped = []
        if self.outputs:
            outputs = _select(routed.outputs, routed.output_index, only)
            shipped += await _ship(producer, self.output_topic, *outputs, alone, letters=False)
        letters = _select(routed.letters, routed.letter_index, only)
        shipped += await _ship(producer, self.dlq_topic, *letters, alone, letters=True)
        out = batch.window_out
        if out is not None and only is None:
            for topic, records in (
                (self.output_topic, out.outputs),
                (self.dlq_topic, out.letters),
                (self.changelog_topic, out.changes),
            ):
                shipped += [
                    Shipped(s, [], letters=False, producer=producer, state=True)
                    for s in await producer.send(topic, records)
                ]
        return shipped


def _select(
    records: list[OutRecord], index: list[int], only: set[int] | None
) -> tuple[list[OutRecord], list[int]]:
    """The records (and their indices in the batch) among ``only``, or all of them."""
    if only is None:
        return records, index
    keep = [i for i, at in enumerate(index) if at in only]
    return [records[i] for i in keep], [index[i] for i in keep]


async def _ship(
    producer: Producer,
    topic: str,
    records: list[OutRecord],
    index: list[int],
    alone: set[int],
    *,
    letters: bool,
) -> list[Shipped]:
    if not alone.intersection(index):
        sent = await producer.send(topic, records)
        return [Shipped(s, [index[i] for i in s.indices], letters, producer) for s in sent]
    shipped: list[Shipped] = []
    start = 0
    for position, at in enumerate([*index, None]):  # runs between the records sent alone
        if at is not None and at not in alone:
            continue
        for s in await producer.send(topic, records[start:position]):
            shipped.append(Shipped(s, [index[start + i] for i in s.indices], letters, producer))
        if at is not None:
            for s in await producer.send(topic, [records[position]]):
                shipped.append(Shipped(s, [at], letters, producer))
        start = position + 1
    return shipped


def learn(batch: Batch, failed: Failures) -> None:
    """Refine the batch's plan from refusals: a refused produce batch of several records
    has each sent alone; a refused output becomes a dead letter (every output of the
    batch when the topic refuses this user); a refused dead letter becomes a minimal
    one. Raises what cannot be helped (not a refusal, or a minimal dead letter refused)."""
    plan = batch.plan
    for shipped, error in failed:
        if isinstance(error, ProducerBroken):
            continue  # not written: sent again as it was, by a new producer
        if not isinstance(error, RecordRefused):
            raise error if isinstance(error, KafkaFailure) else KafkaFailure(repr(error))
        if shipped.state:  # a window's output or state: no record of the input to blame
            raise FatalError(f"the broker refused a window's output or changelog record: {error}")
        if len(shipped.records) > 1:
            plan.alone.update(shipped.records)
            continue
        (at,) = shipped.records
        plan.alone.add(at)
        if not shipped.letters and "Authorization" in error.error and batch.routed is not None:
            # The topic refuses this user, not this record: every output of the batch
            # becomes a dead letter in this one round.
            for index in batch.routed.output_index:
                batch.refuse(index, *refusal(error.error))
        elif not shipped.letters:
            batch.refuse(at, *refusal(error.error))
        elif at not in plan.minimal:
            plan.minimal.add(at)
            batch.routed = None
        else:
            raise FatalError(f"the dead-letter topic refused even a minimal dead letter: {error}")


async def settle(shipped: list[Shipped]) -> Failures:
    """Wait for every produce batch; the ones that failed, with their errors."""
    results = await asyncio.gather(*(s.sent.future for s in shipped), return_exceptions=True)
    return [(s, r) for s, r in zip(shipped, results, strict=True) if isinstance(r, BaseException)]


async def until_accepted(
    refusals: Refusals,
    renew: Callable[[], Awaitable[Producer]],
    again: Callable[[Producer, Refusals], Awaitable[Refusals]],
) -> None:
    """The refusal loop of both guarantees: learn from what was refused, get a new
    producer, send again (``again(producer, refusals)`` says what it refused), up to
    ``MAX_TRIES`` rounds."""
    for _ in range(MAX_TRIES):
        if not refusals:
            return
        for batch, failed in refusals:
            learn(batch, failed)
        refusals = await again(await renew(), refusals)
    if refusals:
        (_, failed), *_ = refusals
        raise KafkaFailure(f"records refused after {MAX_TRIES} tries: {failed[0][1]}")
