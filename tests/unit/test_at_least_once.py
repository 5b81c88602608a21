"""At-least-once's shared producer under refusals: a replaced producer is stopped only
once no partition is still sending on it or waiting for its answers (found in review: a
repair round settled outside the guard, so another partition's renewal stopped the
producer under it)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from stream.engine.assignment import Assignment
from stream.engine.at_least_once import AtLeastOnce
from stream.engine.batch import Batch
from stream.engine.progress import Progress
from stream.engine.routing import Router
from stream.engine.sending import Sender, Shipped
from stream.errors import RecordRefused
from stream.flow import InFlight
from stream.kafka.protocols import OutRecord, Sent, TopicPartition
from stream.metrics import Metrics
from stream.worker import BatchResult
from tests.fakes import FakeBroker, FakeClients

P0, P1 = TopicPartition("in", 0), TopicPartition("in", 1)


class Held:
    """A producer whose produce batches stay unanswered until ``release()``."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[None]] = []
        self.stopped = False

    async def send(self, topic: str, records: Sequence[OutRecord]) -> list[Sent]:
        assert not self.stopped, "a send on a stopped producer"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return [Sent(future, list(range(len(records))))]

    def release(self) -> None:
        for future in self.pending:
            if not future.done():
                future.set_result(None)

    async def stop(self) -> None:
        self.stopped = True


class Makes(FakeClients):
    def __init__(self, broker: FakeBroker) -> None:
        super().__init__(broker)
        self.made: list[Held] = []

    async def producer(self) -> Held:  # type: ignore[override]
        held = Held()
        self.made.append(held)
        return held


async def test_a_renewal_waits_for_a_repair_still_settling_on_the_producer() -> None:
    metrics = Metrics("identity", "in", "out", "in.dlq")
    owned = Assignment(InFlight(1000, 1 << 20), Progress(metrics, "in", "out", "in.dlq"))
    clients = Makes(FakeBroker())
    first = Held()
    shared = AtLeastOnce(
        first,
        clients=clients,
        consumer=clients.consumer_made,
        assignment=owned,
        sender=Sender(Router(False, 1 << 20, 1 << 20), "out", "in.dlq"),
        metrics=metrics,
    )
    part = owned.add(P0)
    delivery = await shared.open(part)
    result: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
    result.set_result(BatchResult(None, [], 0.0, 0))
    batch = Batch(part.offsets.track(0, 0, 1), [b"k"], [b"{}"], [0], [0], 2, result)
    owned.track(part, batch)
    refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    refused.set_exception(RecordRefused("MessageSizeTooLargeError"))
    delivery._watch(batch, [Shipped(Sent(refused, [0]), [0], False, first)])
    await asyncio.sleep(0)
    repairing = asyncio.create_task(delivery.commit(final=False))
    await asyncio.sleep(0.01)
    (second,) = clients.made  # the repair renewed the first producer and sent on this one
    assert second.pending
    assert not second.stopped
    third = await shared.renew(second)  # another partition, refused on it meanwhile
    assert third is not second
    await asyncio.sleep(0.01)
    assert not second.stopped  # the repair is still waiting for its answers
    second.release()
    await asyncio.wait_for(repairing, 2)
    await asyncio.sleep(0.01)
    assert second.stopped  # retired once the repair was done with it
    assert first.stopped
    assert part.offsets.committed == 1  # the repaired batch finished and was committed
    await shared.close()
