"""Window state of the partitions this instance owns (``--window``), exactly once.

Each opening of a partition restores its windows from the changelog (after its
transactional producer fenced the previous owner, before any record is accepted),
reading committed records to the end offset; then checks the state reaches the offset
the group committed. Each batch shipped moves the state on in input order: its records
are added (late ones become dead letters, reason ``late``), windows due close, and the
batch carries the closed windows' outputs and the changelog records of the new state
into the partition's transaction, with its offsets. An abort or a fence releases the
opening, and with it the state; the next opening reads the changelog again, so state
never runs ahead of what was committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from stream.engine.assignment import Partition
from stream.engine.batch import Batch, WindowOut
from stream.engine.routing import Router
from stream.errors import FatalError, UsageError
from stream.kafka.protocols import Clients, Consumer, OutRecord, TopicPartition
from stream.metrics import WindowMetrics
from stream.offsets import Ticket
from stream.windows import changelog
from stream.windows.aggregates import empty_records
from stream.windows.custom import Extras
from stream.windows.output import window_value
from stream.windows.spec import WindowSpec
from stream.windows.store import WindowResult, WindowStore
from stream.worker import BatchResult
from transforms.reasons import Reason

log = logging.getLogger("stream")

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def changelog_topic(group_id: str, input_topic: str) -> str:
    """The changelog topic of a group's windows over an input topic."""
    name = f"{group_id}-{input_topic}-windows-changelog"
    if not _TOPIC_NAME.fullmatch(name):
        raise UsageError(
            f"the windows' changelog topic would be named {name!r}, which Kafka does not "
            "take (letters, digits, '.', '_', '-'; at most 249): choose a --group-id of those"
        )
    return name


@dataclass(slots=True)
class Owned:
    """One opening's windows: the store, the input offset the state reaches, and when
    a record last moved it (wall clock, seconds)."""

    store: WindowStore
    position: int | None
    last_record: float
    shape_written: bool = False


@dataclass(frozen=True, slots=True)
class WindowConfig:
    spec: WindowSpec
    aggregates: tuple[str, ...]
    topic: str  # the changelog
    require_key: bool = False
    emit_update: bool = False
    idle_close_ms: int | None = None
    max_windows: int = 10_000_000
    extras: Extras = field(default_factory=Extras)  # aggregates of one's own
    router: Router | None = None  # the output topic's limit, and how dead letters look


class Windowing:
    """The restore step of every opening, and the state step of every batch shipped."""

    def __init__(
        self,
        config: WindowConfig,
        clients: Clients,
        metrics: WindowMetrics,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clients = clients
        self.metrics = metrics
        self.wall = wall
        self.owned: dict[TopicPartition, Owned] = {}

    # ---- the restore step ---------------------------------------------------------------

    async def restore(self, part: Partition) -> None:
        """Read the partition's changelog back into a new store (cancelled with the
        opening on a revoke)."""
        c, tp = self.config, part.tp
        self.owned.pop(tp, None)
        store, position, records = WindowStore(c.spec, c.extras), None, 0
        shape: bytes | None = None
        started = time.monotonic()
        part.restoring = True
        self.metrics.restoring.inc()
        try:
            reading = self.clients.read_changelog(c.topic, tp.partition)
            async with contextlib.aclosing(reading) as chunks:
                async for chunk in chunks:
                    windows = []
                    for key, value in chunk:
                        if key == changelog.POSITION_KEY:
                            position = None if value is None else changelog.parse_stream_time(value)
                        elif key == changelog.SHAPE_KEY:
                            shape = value
                        else:
                            windows.append((key, value))
                    records += len(chunk)
                    try:
                        store.apply(windows)
                    except ValueError as exc:
                        raise FatalError(
                            f"the changelog {c.topic}[{tp.partition}]: {exc}"
                        ) from None
                    await asyncio.sleep(0)  # a large restore shares the loop
        finally:
            part.restoring = False
            self.metrics.restoring.dec()
        if shape is not None and shape != self._shape():
            raise FatalError(
                f"the changelog {c.topic}[{tp.partition}] holds windows of "
                f"{shape.decode(errors='replace')!r}, not {self._shape().decode()!r}: its state "
                "would not mean what it says; give the windows it was written with, or delete "
                "the changelog topic (and reset the group) to start the windows afresh"
            )
        seconds = time.monotonic() - started
        self.metrics.restore_duration.observe(seconds)
        self.owned[tp] = Owned(store, position, self.wall(), shape_written=shape is not None)
        self._gauges()
        if records:
            log.info(
                "%s: restored %d windows from %d changelog records in %.1fs",
                part.label,
                len(store),
                records,
                seconds,
            )
        self._check_cap()

    def check(self, part: Partition, committed: int | None) -> None:
        """The restored state reaches exactly the group's committed offset (both commit
        in one transaction, an idle move of the offset too): behind it, the records
        between were never counted; ahead, they would be counted twice."""
        owned = self.owned.get(part.tp)
        if owned is None or owned.position is None or committed == owned.position:
            return
        if committed is None:
            where, then = "has no committed offset", "count records twice"
        elif committed < owned.position:
            where, then = f"is at {committed}", "count records twice"
        else:
            where, then = f"is at {committed}", f"leave records {owned.position}.. uncounted"
        raise FatalError(
            f"{part.label}: the windows' changelog {self.config.topic} holds state up to "
            f"offset {owned.position}, but the group {where}: reading from there would "
            f"{then}; reset the group to {owned.position}, or delete the changelog topic "
            "to start the windows afresh"
        )

    def moved(self, part: Partition, position: int) -> Batch | None:
        """The partition's position moved with no record (past transaction markers): a
        batch of no records carrying the new position into the changelog, so that it
        commits with the group's offset; None when the partition holds no state."""
        owned = self.owned.get(part.tp)
        if owned is None:
            return None
        batch = self._empty_batch(position)
        batch.window_out = self._out(part, owned, [], position)
        return batch

    def release(self, tp: TopicPartition) -> None:
        """The opening ended (closed, revoked or rewound): its state goes with it."""
        self.owned.pop(tp, None)
        self._gauges()

    # ---- the state step -----------------------------------------------------------------

    async def step(self, part: Partition, batches: list[Batch]) -> None:
        """Move the partition's windows on by each batch, in input order; each batch
        then carries its outputs, and the last one the changelog records of the state
        they left (one record per window changed by any of them: fewer to write and to
        restore). Made once: a batch sent again sends the same. In a thread: a batch
        that closes a million windows makes a million outputs, and the event loop
        (heartbeats, fetches, the other partitions) goes on meanwhile."""
        owned = self.owned[part.tp]
        todo = [batch for batch in batches if batch.window_out is None]
        if todo:
            await asyncio.to_thread(self._step_all, part, owned, todo)
        self._gauges()
        self._check_cap()

    def _step_all(self, part: Partition, owned: Owned, todo: list[Batch]) -> None:
        for at, batch in enumerate(todo, 1):
            self._step(part, owned, batch, last=at == len(todo) or self.config.emit_update)

    def _step(self, part: Partition, owned: Owned, batch: Batch, *, last: bool) -> None:
        result = batch.result.result()
        records = result.window
        if records is None:
            raise FatalError(f"{part.label}: a batch came back without window data")
        valid = np.ones(len(batch), dtype=np.bool_)
        for failed, _reason, _message in result.errors:
            valid[failed] = False
        if self.config.require_key:
            valid &= np.fromiter((k is not None for k in batch.keys), np.bool_, len(batch))
        index = np.flatnonzero(valid)
        keys = [batch.keys[i] for i in index.tolist()]
        store = owned.store
        try:
            late = store.add_records(keys, records.take(index))
        except ValueError as exc:
            raise FatalError(f"{part.label}: {exc}") from None
        for i in index[late].tolist():
            batch.refuse(
                i,
                Reason.LATE.value,
                f"every window of its event time had closed (stream time {store.stream_time} "
                f"ms, {self.config.spec.describe()})",
            )
        self.metrics.late.inc(int(late.sum()))
        if len(index):
            owned.last_record = self.wall()
        batch.window_out = self._out(part, owned, store.close(), batch.ticket.end, last=last)

    def _out(
        self,
        part: Partition,
        owned: Owned,
        closed: list[WindowResult],
        end: int,
        *,
        last: bool = True,
    ) -> WindowOut:
        c = self.config
        results = closed + (owned.store.changed() if c.emit_update else [])
        outputs, letters = _outputs(results, c, part.tp, end)
        p = part.tp.partition
        self.metrics.too_large.inc(len(letters))
        self.metrics.closed.inc(len(closed))
        if not last:  # the group's last batch writes the state they leave
            return WindowOut(outputs, [], letters)
        owned.position = end
        changes = [*owned.store.take_changes(), changelog.position_change(end)]
        if not owned.shape_written:
            changes.append((changelog.SHAPE_KEY, self._shape()))
            owned.shape_written = True
        return WindowOut(outputs, [(key, value, None, p) for key, value in changes], letters)

    def _shape(self) -> bytes:
        """What the state means: the windows (not the grace: changing it is harmless)
        and the custom aggregates whose columns it holds."""
        spec = self.config.spec
        custom = ",".join(a.name for a in self.config.extras.aggregates)
        return f"{spec.kind}:{spec.size_ms}ms/{spec.advance_ms}ms;{custom}".encode()

    # ---- quiet input --------------------------------------------------------------------

    async def idle(self, part: Partition, consumer: Consumer) -> Batch | None:
        """With ``--idle-close``: a partition read to its end and quiet for that long
        moves its stream time on with the wall clock; a batch of no records carrying
        the windows that closed, or None."""
        c, owned = self.config, self.owned.get(part.tp)
        if c.idle_close_ms is None or owned is None or not len(owned.store):
            return None
        store = owned.store
        quiet_ms = (self.wall() - owned.last_record) * 1000
        end = part.offsets.position if part.offsets.position is not None else part.offsets.committed
        if quiet_ms < c.idle_close_ms or store.stream_time is None or end is None:
            return None
        position = await consumer.position(part.tp)
        last = (await consumer.end_offsets([part.tp])).get(part.tp, 0)
        if position < last:
            return None  # behind: a replay must not close windows early
        closed = await asyncio.to_thread(store.close, store.stream_time + int(quiet_ms))
        owned.last_record = self.wall()  # the stream time now includes the quiet time
        if not closed:
            return None
        batch = self._empty_batch(end)
        batch.window_out = await asyncio.to_thread(self._out, part, owned, closed, end)
        self._gauges()
        return batch

    def _empty_batch(self, end: int) -> Batch:
        """A batch of no records at ``end``: what the state moves on without input."""
        result: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        width = self.config.extras.width
        result.set_result(BatchResult([], [], 0.0, 0, window=empty_records(0, width)))
        return Batch(Ticket(end, end, 0, self.wall()), [], [], [], [], 0, result)

    # ---- bounds -------------------------------------------------------------------------

    def _gauges(self) -> None:
        stores = [o.store for o in self.owned.values()]
        self.metrics.open.set(sum(len(s) for s in stores))
        self.metrics.state_bytes.set(sum(s.nbytes for s in stores))

    def _check_cap(self) -> None:
        total = sum(len(o.store) for o in self.owned.values())
        if total > self.config.max_windows:
            raise FatalError(
                f"{total} windows are open, more than --max-windows {self.config.max_windows}: "
                "raise it (about 50 bytes a window), or shorten the windows or the grace"
            )


def _outputs(
    results: list[WindowResult], c: WindowConfig, tp: TopicPartition, end: int
) -> tuple[list[OutRecord], list[OutRecord]]:
    """The windows' output records, and dead letters for those whose key is too large
    for the output topic with the window (it fitted the input): the rest go on."""
    outputs: list[OutRecord] = []
    letters: list[OutRecord] = []
    for r in results:
        value = window_value(r, c.aggregates)
        if c.router is None or c.router.fits(r.key, value):
            outputs.append((r.key, value, None, tp.partition if r.key is None else None))
            continue
        message = (
            f"the window's output is {len(value) + len(r.key or b'')} bytes with its key, "
            f"more than the output topic's max.message.bytes ({c.router.output_limit}) allows"
        )
        letter = c.router.dead_letter(
            tp,
            end - 1,
            key=r.key,
            value=value,
            reason=Reason.OUTPUT_TOO_LARGE.value,
            message=message,
        )
        letters.append(letter)
    return outputs, letters
