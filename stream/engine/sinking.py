"""The database stage: a partition's finished batches as rows, before Kafka sees them.

Rows are written first, in input order per partition, in one database transaction per
delivery (exactly-once: with the partition's next offset); then the Kafka side runs as
usual (dead letters, outputs when the Kafka sink is on too, offsets). So Kafka's
committed offset never passes the database's: a crash between the two replays a few
records, and the table's primary key (source topic, partition, offset) keeps each row
once. On assignment the service starts from the lower of the two offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from stream.engine.assignment import Partition
from stream.engine.batch import Batch
from stream.engine.routing import Router
from stream.kafka.protocols import TopicPartition
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
        self,
        topic: str,
        partition: int,
        rows: Sequence[Row],
        *,
        next_offset: int | None = None,
        group: str | None = None,
    ) -> Sequence[Refusal]: ...
    async def stored_offset(self, group: str, topic: str, partition: int) -> int | None: ...
    def forget(self, topic: str, partition: int) -> None: ...


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

    async def write(self, part: Partition, batches: list[Batch], next_offset: int | None) -> None:
        """Write the batches' outputs as rows (with the next offset, exactly-once); a
        record whose row is refused becomes a dead letter (in its batch's plan)."""
        tp = part.tp
        rows: list[Row] = []
        where: list[tuple[Batch, int]] = []  # (batch, record) of each row
        for batch in batches:
            routed = self.router.of(tp, batch)
            for output, index in zip(routed.outputs, routed.output_index, strict=True):
                try:
                    offset = batch.offsets[index]
                    row = self.rows(output[0], output[1], tp.topic, tp.partition, offset)
                except self.row_error as exc:
                    batch.refuse(index, Reason.SINK_REFUSED.value, str(exc))
                    continue
                rows.append(row)
                where.append((batch, index))
        group = self.group if next_offset is not None else None
        refused = await self.sink.write(
            tp.topic, tp.partition, rows, next_offset=next_offset, group=group
        )
        for item in refused:
            batch, index = where[item.index]
            batch.refuse(index, Reason.SINK_REFUSED.value, item.message)

    async def stored(self, tp: TopicPartition) -> int | None:
        return await self.sink.stored_offset(self.group, tp.topic, tp.partition)

    def released(self, tp: TopicPartition) -> None:
        self.sink.forget(tp.topic, tp.partition)


def start_from(kafka: int | None, database: int | None) -> int | None:
    """Where an assigned partition starts: the lower of the two committed positions."""
    known = [o for o in (kafka, database) if o is not None]
    return min(known) if known else None
