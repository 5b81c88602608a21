"""In-memory fakes of the Kafka edge (``stream.kafka.protocols``) and of the worker pool,
for driving the engine through paths a real broker cannot be made to take on cue:
rebalances on demand, sends refused, transactions fenced or failing, drains that
never finish. The broker suites stay the end-to-end proof."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from stream.errors import KafkaFailure, OwnershipLost, ProducerBroken, RecordRefused
from stream.kafka.protocols import Change, OutRecord, RebalanceCallback, Sent, TopicPartition
from stream.kafka.send import Partitioner, group_by_partition
from stream.pool_activity import PoolActivity
from stream.sink.errors import SinkFenced
from stream.sink.position import Claim, Position
from stream.sink.postgres import Refused
from stream.windows.extract import WindowInput
from stream.worker import BatchResult, process_batch, process_window_batch


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


Refuse = Callable[[str, OutRecord], str | None]  # (topic, record) -> broker error name


@dataclass
class FakeBroker:
    """Topics as lists of partitions, committed offsets per group, transactional ids."""

    partitions: dict[str, int] = field(default_factory=lambda: {"in": 2, "out": 2, "in.dlq": 2})
    limits: dict[str, int] = field(default_factory=dict)
    refuse: Refuse = lambda _topic, _record: None
    logs: dict[TopicPartition, list[Record]] = field(default_factory=dict)
    committed: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)  # what happened, in order
    aborted: int = 0

    def log(self, tp: TopicPartition) -> list[Record]:
        return self.logs.setdefault(tp, [])

    def append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        tp = TopicPartition(topic, partition)
        log = self.log(tp)
        log.append(Record(topic, partition, len(log), key, value, 0, tuple(headers or ())))

    def feed(self, partition: int, values: Sequence[bytes], key: bytes | None = b"k") -> None:
        for value in values:
            self.append("in", partition, key, value)

    def records(self, topic: str) -> list[Record]:
        return [r for tp, log in sorted(self.logs.items()) if tp.topic == topic for r in log]

    def init_id(self, transactional_id: str) -> int:
        """Start a producer with this id: fences the previous one."""
        epoch = self.epochs.get(transactional_id, -1) + 1
        self.epochs[transactional_id] = epoch
        self.events.append(f"init {transactional_id}")
        return epoch

    def fence(self, transactional_id: str) -> None:
        """Another producer took the id (a second owner, a zombie's successor)."""
        self.init_id(transactional_id)


class FakeConsumer:
    def __init__(self, broker: FakeBroker, group: str = "g") -> None:
        self.broker = broker
        self.group = group
        self.assigned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self._on_assigned: RebalanceCallback | None = None
        self._on_revoked: RebalanceCallback | None = None
        self.subscribed = asyncio.Event()
        self.fail_committed = 0  # committed() fails this many more times
        self.paused: set[TopicPartition] = set()
        self.polls = 0  # getmany() calls: the group's poll interval only counts these

    def subscribe(
        self, topic: str, on_assigned: RebalanceCallback, on_revoked: RebalanceCallback
    ) -> None:
        self._on_assigned, self._on_revoked = on_assigned, on_revoked
        self.subscribed.set()

    async def rebalance(self, revoke: set[TopicPartition], assign: set[TopicPartition]) -> None:
        """What a group rebalance does to this member: revoke, then assign."""
        await self.subscribed.wait()
        assert self._on_assigned is not None
        assert self._on_revoked is not None
        if revoke:
            await self._on_revoked(revoke)
            self.assigned -= revoke
        self.assigned |= assign
        for tp in assign:
            committed = self.broker.committed.get((self.group, tp))
            self.positions[tp] = committed if committed is not None else 0
        await self._on_assigned(assign)

    async def getmany(
        self, timeout_ms: int, max_records: int
    ) -> Mapping[TopicPartition, Sequence[Record]]:
        self.polls += 1
        await asyncio.sleep(0)  # a real client yields; what it returns is read after that
        out: dict[TopicPartition, list[Record]] = {}
        left = max_records
        for tp in sorted(self.assigned - self.paused):
            log = self.broker.log(tp)
            start = self.positions.get(tp, 0)
            chunk = log[start : start + left]
            if chunk:
                out[tp] = chunk
                self.positions[tp] = start + len(chunk)
                left -= len(chunk)
        if not out:
            await asyncio.sleep(min(timeout_ms / 1000, 0.005))
        return out

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.assigned:
            raise KafkaFailure(f"{tp} is not assigned")
        self.positions[tp] = offset

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)

    async def seek_to_reset(self, tp: TopicPartition) -> None:
        self.positions[tp] = 0

    async def position(self, tp: TopicPartition) -> int:
        return self.positions.get(tp, 0)

    async def committed(self, tp: TopicPartition) -> int | None:
        self.broker.events.append(f"committed {tp.topic}[{tp.partition}]")
        if self.fail_committed:
            self.fail_committed -= 1
            raise KafkaFailure("the coordinator is loading")
        return self.broker.committed.get((self.group, tp))

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self.broker.committed[(self.group, tp)] = offset

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.broker.log(tp)) for tp in tps}

    async def topics(self) -> set[str]:
        return set(self.broker.partitions)

    async def stop(self) -> None:
        return None


class FakeProducer:
    """At-least-once: records are visible once sent (unless refused)."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.partitioner = Partitioner()
        self.stopped = False
        self.broken = False  # like aiokafka: after a refusal its sequence is broken

    def _write(self, topic: str, record: OutRecord, partition: int) -> None:
        self.broker.append(topic, partition, record[0], record[1], record[2])

    async def send(self, topic: str, records: Sequence[OutRecord]) -> list[Sent]:
        loop = asyncio.get_running_loop()
        partitions = list(range(self.broker.partitions[topic]))
        sent: list[Sent] = []
        for partition, indices in group_by_partition(records, partitions, self.partitioner).items():
            for index in indices:
                future: asyncio.Future[None] = loop.create_future()
                error = self.broker.refuse(topic, records[index])
                if self.broken:
                    future.set_exception(ProducerBroken("OutOfOrderSequenceNumber"))
                elif error is not None:
                    self.broken = True
                    future.set_exception(RecordRefused(error, f"{error}: refused"))
                else:
                    self._write(topic, records[index], partition)
                    future.set_result(None)
                sent.append(Sent(future, [index]))
        return sent

    async def stop(self) -> None:
        self.stopped = True


class FakeTransactionalProducer(FakeProducer):
    def __init__(self, broker: FakeBroker, transactional_id: str, group: str = "g") -> None:
        super().__init__(broker)
        self.id = transactional_id
        self.group = group
        self.epoch = broker.init_id(transactional_id)
        self.staged: list[tuple[str, OutRecord, int]] = []
        self.offsets: dict[TopicPartition, int] = {}
        self.open = False
        self.fail_commit = 0  # commit() fails this many more times
        self.aborts = 0

    def _check(self) -> None:
        if self.broker.epochs[self.id] != self.epoch:
            raise OwnershipLost(f"ProducerFenced: {self.id} epoch {self.epoch}")

    def _write(self, topic: str, record: OutRecord, partition: int) -> None:
        self._check()
        assert self.open, "send outside a transaction"
        self.staged.append((topic, record, partition))

    async def begin(self) -> None:
        self._check()
        assert not self.open
        self.open = True

    async def send_offsets(self, offsets: Mapping[TopicPartition, int], group_id: str) -> None:
        self._check()
        self.offsets.update(offsets)

    async def commit(self) -> None:
        self._check()
        if self.fail_commit:
            self.fail_commit -= 1
            raise KafkaFailure("CoordinatorNotAvailable: try again")
        for topic, record, partition in self.staged:
            self.broker.append(topic, partition, record[0], record[1], record[2])
        for tp, offset in self.offsets.items():
            self.broker.committed[(self.group, tp)] = offset
        self.broker.events.append(f"commit {self.id}")
        self._reset()

    async def abort(self) -> None:
        if not self.open:
            return
        self._check()
        self.aborts += 1
        self.broker.aborted += 1
        self._reset()

    def _reset(self) -> None:
        self.staged, self.offsets, self.open = [], {}, False


class FakeClients:
    def __init__(self, broker: FakeBroker, group: str = "g") -> None:
        self.restores: list[int] = []  # the changelog partitions read back, in order
        self.restore_chunk = 1000
        self.restore_gate = asyncio.Event()
        self.restore_gate.set()
        self.broker = broker
        self.group = group
        self.consumer_made = FakeConsumer(broker, group)
        self.producers: list[FakeTransactionalProducer] = []
        self.plain: list[FakeProducer] = []  # the at-least-once producers made
        self.refuse_ids = 0  # transactional_producer() fails this many more times

    async def consumer(self) -> FakeConsumer:
        return self.consumer_made

    async def producer(self) -> FakeProducer:
        producer = FakeProducer(self.broker)
        self.plain.append(producer)
        return producer

    async def transactional_producer(self, transactional_id: str) -> FakeTransactionalProducer:
        await asyncio.sleep(0)
        if self.refuse_ids:
            self.refuse_ids -= 1
            raise KafkaFailure("CoordinatorLoadInProgress")
        producer = FakeTransactionalProducer(self.broker, transactional_id, self.group)
        self.producers.append(producer)
        return producer

    async def record_limit(self, topic: str) -> int:
        return self.broker.limits.get(topic, 1_048_588)

    def fit_batches(self, limit: int) -> None:
        self.batch_limit = limit

    async def ensure_topic(self, topic: str, like: str) -> bool:
        if topic in self.broker.partitions:
            return False
        self.broker.partitions[topic] = self.broker.partitions[like]
        return True

    async def ensure_changelog(self, topic: str, like: str) -> bool:
        return await self.ensure_topic(topic, like)

    async def read_changelog(
        self, topic: str, partition: int
    ) -> AsyncGenerator[list[Change], None]:
        """The committed records (the fake broker holds no others), in chunks of
        ``restore_chunk``; each chunk waits for ``restore_gate``."""
        self.restores.append(partition)
        log = list(self.broker.log(TopicPartition(topic, partition)))
        for start in range(0, len(log), self.restore_chunk):
            await self.restore_gate.wait()
            chunk = log[start : start + self.restore_chunk]
            yield [(r.key, r.value) for r in chunk if r.key is not None]


class FakePool:
    """Runs batches in-process through the worker's code path; ``gate`` holds them."""

    def __init__(self, transform: str = "identity", windowing: WindowInput | None = None) -> None:
        self.transform = transform
        self.windowing = windowing
        self.gate = asyncio.Event()
        self.gate.set()
        self.stuck = asyncio.Event()  # batches with a b"stuck" record wait for this
        self.started = 0
        self.closed = False
        self.busy_since: float | None = None  # what activity() reports

    async def start(self) -> list[int]:
        return [0]

    async def run(
        self,
        values: list[bytes | None],
        *,
        enrichment: list[bytes | None] | None = None,
        field: str = "meta",
        timestamps: list[int] | None = None,
    ) -> BatchResult:
        self.started += 1
        await self.gate.wait()
        if any(v and b"stuck" in v for v in values):
            await self.stuck.wait()
        if self.windowing is not None:
            stamps = timestamps or [0] * len(values)
            return process_window_batch(
                self.transform, values, stamps, 1 << 20, windowing=self.windowing
            )
        return process_batch(self.transform, values, 1 << 20)

    async def close(self) -> None:
        self.closed = True

    def pids(self) -> list[int]:
        return []

    def activity(self) -> PoolActivity:
        """Nothing in hand: the engine's own clocks decide (tests set ``busy_since``)."""
        return PoolActivity(self.busy_since, self.busy_since or 0.0, 0, 0, 0)

    @property
    def alive(self) -> int:
        return 0 if self.closed else 1

    @property
    def serving(self) -> int:
        return self.alive


class FakeSink:
    """The database sink as the engine's sink stage uses it: rows by source position,
    a stored offset and a generation per partition (a claim fences older ones)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int, int], object] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.generations: dict[tuple[str, int], int] = {}
        self.up = asyncio.Event()  # cleared: the database is away, writes wait (as retries do)
        self.up.set()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def pool_connections(self) -> tuple[int, int]:
        return (0, 1) if self.up.is_set() else (0, 0)

    async def write(
        self, topic: str, partition: int, rows: Sequence[tuple[object, ...]], *, position: Position
    ) -> list[Refused]:
        await self.up.wait()
        key = (topic, partition)
        if self.generations.get(key) != position.generation:
            raise SinkFenced(f"{topic}[{partition}]: another owner claimed the partition")
        for row in rows:  # the primary key: the row's source position, its first columns
            self.rows[(str(row[0]), int(str(row[1])), int(str(row[2])))] = row
        self.offsets[key] = max(self.offsets.get(key, -1), position.next_offset)
        return []

    async def claim(self, group: str, topic: str, partition: int) -> Claim:
        key = (topic, partition)
        self.generations[key] = self.generations.get(key, 0) + 1
        return Claim(self.offsets.get(key), self.generations[key])

    def forget(self, topic: str, partition: int) -> None:
        return None
