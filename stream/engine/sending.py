"""Sending a finished batch to Kafka: outputs and dead letters in input order, and what
to do when the broker refuses some of them (each suspect alone, then as a dead letter,
then as a minimal one). Shared by both guarantees."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from stream.engine.assignment import Batch, Partition
from stream.engine.routing import Plan, Router, refusal
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
