"""At-least-once: one shared idempotent producer; a batch is finished once every record
of it is acknowledged, and the partition commits its finished prefix with the consumer.

Records the broker refused for good are sent again at the next commit (which a refusal
makes due at once) through the sending layer's refusal loop, on a new shared producer.
A send that fails otherwise (not queued, or not acknowledged, within the delivery
timeout) stops the service: nothing past it is committed, the next start reads it
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator

from stream.engine.assignment import Assignment, Partition
from stream.engine.batch import Batch
from stream.engine.policy import Pending
from stream.engine.sending import Failures, Refusals, Sender, Shipped, settle, until_accepted
from stream.errors import FatalError, KafkaFailure, ProducerBroken, RecordRefused
from stream.kafka.protocols import Clients, Consumer, Producer
from stream.metrics import Metrics

log = logging.getLogger("stream")


class AtLeastOnce:
    """The shared producer, renewed after a refusal (once, whoever asks first)."""

    def __init__(
        self,
        producer: Producer,
        *,
        clients: Clients,
        consumer: Consumer,
        assignment: Assignment,
        sender: Sender,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.producer = producer
        self.clients = clients
        self.consumer = consumer
        self.assignment = assignment
        self.sender = sender
        self.metrics = metrics
        self.clock = clock
        self._renewing = asyncio.Lock()
        self._senders: dict[Producer, int] = {}  # sends in progress, per producer
        self._quiet: dict[Producer, asyncio.Event] = {}  # retired, set when none are
        self._retiring: set[asyncio.Task[None]] = set()

    async def open(self, part: Partition) -> Acknowledged:
        return Acknowledged(self, part)

    async def renew(self, broken: Producer) -> Producer:
        """A refusal breaks the producer's sequence: replace the shared producer unless
        another partition already did; the one to use now."""
        async with self._renewing:
            if self.producer is broken:
                log.warning("replacing the producer after the broker refused a record")
                self.producer = await self.clients.producer()
                task = asyncio.create_task(self._retire(broken), name="retire-producer")
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        return self.producer

    @contextlib.contextmanager
    def sending(self, producer: Producer) -> Iterator[Producer]:
        """Around a send on ``producer``: a replaced producer is stopped only once no
        send on it is in progress."""
        self._senders[producer] = self._senders.get(producer, 0) + 1
        try:
            yield producer
        finally:
            left = self._senders[producer] - 1
            if left:
                self._senders[producer] = left
            else:
                del self._senders[producer]
                if (quiet := self._quiet.pop(producer, None)) is not None:
                    quiet.set()

    async def _retire(self, broken: Producer) -> None:
        """Stop a replaced producer once nothing is being sent on it (stopping flushes
        what it holds, so its sends settle first): a refusal per round never leaks one."""
        if broken in self._senders:
            quiet = self._quiet[broken] = asyncio.Event()
            await quiet.wait()
        try:
            await broken.stop()
        except Exception as exc:  # noqa: BLE001 - a producer that will not stop is dropped
            log.warning("stopping a replaced producer failed: %s", exc)

    async def close(self) -> None:
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.producer.stop()


class Acknowledged:
    """One partition's at-least-once delivery."""

    def __init__(self, shared: AtLeastOnce, part: Partition) -> None:
        self.shared = shared
        self.part = part
        self._acks: dict[Batch, asyncio.Future[None]] = {}  # shipped, not yet acknowledged
        self._refused: Refusals = []
        self._since: float | None = None  # clock time the oldest uncommitted batch finished
        self._records = 0
        self._nbytes = 0
        self._closed = False

    async def ship(self, batches: list[Batch]) -> None:
        shared = self.shared
        await shared.sender.write_rows(self.part, batches)
        for batch in batches:
            try:
                with shared.sending(shared.producer) as producer:
                    shipped = await shared.sender.send(producer, self.part, batch)
            except KafkaFailure as exc:
                # Not queued within the delivery timeout: stop, and let the next start
                # read this batch again (nothing past it is committed).
                raise FatalError(f"producing to Kafka failed: {exc}") from exc
            self._watch(batch, shipped)

    def _watch(self, batch: Batch, shipped: list[Shipped]) -> None:
        if not shipped:
            self._finished(batch)
            return
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[batch] = acked
        left = len(shipped)
        failed: Failures = []

        def done(item: Shipped, future: asyncio.Future[None]) -> None:
            nonlocal left
            if future.cancelled():
                failed.append((item, KafkaFailure("the send was cancelled")))
            elif (error := future.exception()) is not None:
                failed.append((item, error))
            left -= 1
            if left:
                return
            del self._acks[batch]
            acked.set_result(None)
            if self._closed:
                return
            if failed:
                self._refused.append((batch, failed))
                self.part.wakeup.set()  # a refusal makes a commit due at once
            else:
                self._finished(batch)

        for item in shipped:
            item.sent.future.add_done_callback(functools.partial(done, item))

    def _finished(self, batch: Batch) -> None:
        self.shared.assignment.finish(self.part, batch)
        self._records += len(batch)
        self._nbytes += batch.nbytes
        if self._since is None:
            self._since = self.shared.clock()
            self.part.wakeup.set()

    def pending(self) -> Pending:
        if self._refused:
            return Pending(self._since or self.shared.clock(), urgent=True)
        return Pending(self._since, self._records, self._nbytes)

    async def commit(self, *, final: bool) -> None:
        """Send refused records again; commit the finished prefix (``final``: once
        every shipped batch is acknowledged). A failed offset commit is tried again
        at the next one."""
        if final and self._acks:
            await asyncio.wait(list(self._acks.values()))
        if self._refused:
            await self._repair()
        self._since, self._records, self._nbytes = None, 0, 0
        part, shared = self.part, self.shared
        position = part.offsets.committable()
        if position is None:
            return
        started = time.perf_counter()
        try:
            await shared.consumer.commit({part.tp: position})
        except KafkaFailure as exc:
            shared.metrics.commit_failures.inc()
            log.warning("offset commit failed (will retry): %s", exc)
            return
        shared.metrics.commit_duration.observe(time.perf_counter() - started)
        part.offsets.mark_committed(position)

    async def _repair(self) -> None:
        refusals, self._refused = self._refused, []
        if not all(
            isinstance(e, RecordRefused | ProducerBroken) for _, f in refusals for _, e in f
        ):
            (_, failed), *_ = refusals
            raise FatalError(f"producing to Kafka failed: {failed[0][1]}")
        shared = self.shared
        # The producer the refused sends went out on (not whichever is current now: a
        # healthy one must not be replaced).
        broken = refusals[0][1][0][0].producer or shared.producer

        async def renew() -> Producer:
            nonlocal broken
            broken = await shared.renew(broken)
            return broken

        async def again(producer: Producer, refused: Refusals) -> Refusals:
            left: Refusals = []
            # The whole round, settling included, holds the producer: another partition
            # renewing it meanwhile retires it only once this round is done with it.
            with shared.sending(producer):
                for batch, failed in refused:
                    only = {at for shipped, _ in failed for at in shipped.records}
                    try:
                        shipped = await shared.sender.send(producer, self.part, batch, only)
                    except KafkaFailure as exc:
                        raise FatalError(f"producing to Kafka failed: {exc}") from exc
                    if still := await settle(shipped):
                        left.append((batch, still))
            return left

        try:
            await until_accepted(refusals, renew, again)
        except KafkaFailure as exc:
            raise FatalError(f"{self.part.label}: {exc}") from exc
        for batch, _ in refusals:
            self._finished(batch)

    async def close(self, *, lost: bool) -> None:
        """Acknowledgements that come later no longer count; refused records are read
        again by the next owner."""
        self._closed = True
        self._refused.clear()
