"""The database stage: a partition's finished batches as rows, before Kafka sees them.

Rows are written first, in input order per partition, in one database transaction per
delivery with the partition's next offset (both guarantees); then the Kafka side runs
as usual (dead letters, outputs when the Kafka sink is on too, offsets). So Kafka's
committed offset never passes the database's: a crash between the two replays a few
records, and the table's primary key (source topic, partition, offset) keeps each row
once.

The partition starts from Kafka's committed offset, or from ``--auto-offset-reset``
when the group has none there, whichever guarantee ran before: the database's stored
offset is how far its rows reach, never a start. It can be ahead of Kafka's (the Kafka
half of the last delivery did not commit, or the group is new and its first commit
failed), and that work must be done again in Kafka; the rows replayed meanwhile are
deduplicated by their primary key.

Each opening of a partition claims its row in the offsets table: a new generation,
kept on the opening. A write carries its opening's generation and is refused whole (its
rows too) once a newer opening claimed the partition, so a stale owner can neither move
the stored offset back nor commit rows after the new owner started.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from stream.engine.assignment import Partition
from stream.engine.batch import Batch
from stream.engine.routing import Router
from stream.kafka.protocols import TopicPartition
from stream.sink.position import Claim, Position
from transforms.reasons import Reason

Row = tuple[object, ...]
RowBuilder = Callable[[bytes | None, bytes, str, int, int], Row]


class Refusal(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def message(self) -> str: ...


class Sink(Protocol):
    """What the engine needs of a database sink (``stream.sink.postgres.PostgresSink``)."""

    async def write(
        self, topic: str, partition: int, rows: Sequence[Row], *, position: Position
    ) -> Sequence[Refusal]: ...
    async def claim(self, group: str, topic: str, partition: int) -> Claim: ...
    def forget(self, topic: str, partition: int) -> None: ...


class Database(Sink, Protocol):
    """A sink the engine starts, watches and closes (``PostgresSink``)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def pool_connections(self) -> tuple[int, int]: ...


class SinkStage:
    def __init__(
        self,
        sink: Sink,
        rows: RowBuilder,
        row_error: type[Exception],
        router: Router,
        group: str,
        *,
        to_kafka: bool,
    ) -> None:
        self.sink = sink
        self.rows = rows
        self.row_error = row_error
        self.router = router
        self.group = group
        self.to_kafka = to_kafka  # outputs go to the output topic as well

    async def write(self, part: Partition, batches: list[Batch]) -> None:
        """Write the batches' outputs as rows, with the partition's next offset; a record
        whose row is refused becomes a dead letter (in its batch's plan). Raises
        ``SinkFenced`` (an ``OwnershipLost``) when a newer owner claimed the partition."""
        tp = part.tp
        rows: list[Row] = []
        where: list[tuple[Batch, int]] = []  # (batch, record) of each row
        for batch in batches:
            routed = self.router.of(tp, batch)
            for output, index in zip(routed.outputs, routed.output_index, strict=True):
                try:
                    offset = batch.offsets[index]
                    row = self.rows(output[0], output[1] or b"", tp.topic, tp.partition, offset)
                except self.row_error as exc:
                    batch.refuse(index, Reason.SINK_REFUSED.value, str(exc))
                    continue
                rows.append(row)
                where.append((batch, index))
        position = Position(self.group, batches[-1].ticket.end, part.sink_generation)
        refused = await self.sink.write(tp.topic, tp.partition, rows, position=position)
        for item in refused:
            batch, index = where[item.index]
            batch.refuse(index, Reason.SINK_REFUSED.value, item.message)

    async def claim(self, part: Partition) -> None:
        """Claim the partition for this opening (fencing earlier openings' writes)."""
        tp = part.tp
        claim = await self.sink.claim(self.group, tp.topic, tp.partition)
        part.sink_generation = claim.generation

    def released(self, tp: TopicPartition) -> None:
        self.sink.forget(tp.topic, tp.partition)
