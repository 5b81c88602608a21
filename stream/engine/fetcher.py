"""The fetch loop: read records, cut them into batches, send each batch to the pool.

Backpressure: when the in-flight caps are reached the loop stops calling
``getmany`` (aiokafka then keeps at most one fetched response per partition and
fetches no more; heartbeats go on in aiokafka's own task). Records fetched for a
partition that is not accepting (not ours yet, being opened, revoked, rewound) are
sought back, never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from stream.config import RunSettings
from stream.engine.assignment import Assignment, Partition
from stream.engine.batch import Batch
from stream.errors import FatalError, KafkaFailure
from stream.flow import split_batches, wait_event
from stream.kafka.protocols import ConsumedRecord, Consumer
from stream.worker import BatchResult

# A batch's keys, values and timestamps in, its result out: the pool, behind enrichment
# if on.
Process = Callable[[list[bytes | None], list[bytes | None], list[int]], Awaitable[BatchResult]]

FETCH_TIMEOUT_MS = 200
ROOM_WAIT = 1.0
POLL_GUARD = 30.0  # seconds full before every partition is paused and polling goes on


class Fetcher:
    def __init__(
        self,
        settings: RunSettings,
        consumer: Consumer,
        assignment: Assignment,
        process: Process,
        on_fetched: Callable[[Partition, int, list[int]], None],
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.assignment = assignment
        self.process = process
        self.on_fetched = on_fetched  # (partition, records, batch sizes): for metrics
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        self.stopping.set()
        self.assignment.room.set()

    async def run(self) -> None:
        inflight, room = self.assignment.inflight, self.assignment.room
        full_since: float | None = None
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            self._resume_drained()
            if inflight.full:
                # Stop fetching: aiokafka keeps at most one fetched response per partition
                # buffered and fetches no more until we take from it.
                full_since = full_since or loop.time()
                if loop.time() - full_since < POLL_GUARD:
                    room.clear()
                    await wait_event(room, ROOM_WAIT)
                    continue
                # Full for long (stuck work): pause everything and keep polling, so the
                # consumer never leaves its group because work is stuck.
                for owned in self.assignment.parts.values():
                    self._pause(owned)
            else:
                full_since = None
            try:
                fetched = await self.consumer.getmany(FETCH_TIMEOUT_MS, max(1, inflight.room))
            except KafkaFailure as exc:
                if not exc.retriable:
                    raise FatalError(f"fetching from Kafka failed: {exc}") from exc
                await asyncio.sleep(FETCH_TIMEOUT_MS / 1000)
                continue
            for tp, got in fetched.items():
                records = got
                part = self.assignment.get(tp)
                if part is None or not part.accepting or part.closing or part.paused:
                    # Not ours to take now: fetch them again if the partition stays;
                    # if it goes, its next owner starts from the committed offset.
                    with contextlib.suppress(KafkaFailure):
                        self.consumer.seek(tp, records[0].offset)
                    continue
                allowed = self._share()[0] - part.records
                if len(records) > allowed:
                    # Over its share: take what fits, fetch the rest again after a resume.
                    with contextlib.suppress(KafkaFailure):
                        self.consumer.seek(tp, records[max(0, allowed)].offset)
                    records = records[: max(0, allowed)]
                    self._pause(part)
                if records:
                    self.dispatch(part, records)
                if self._over_share(part, 1):
                    self._pause(part)

    def _share(self) -> tuple[int, int]:
        """One partition's share of the in-flight caps: a stuck partition cannot take it
        all, so the others keep flowing (one partition alone may use all of it)."""
        inflight, s = self.assignment.inflight, self.settings
        n = len(self.assignment.parts)
        return (
            max(s.batch_max_records, 2 * inflight.max_records // (n + 1)),
            max(s.batch_max_bytes, 2 * inflight.max_bytes // (n + 1)),
        )

    def _over_share(self, part: Partition, fraction: float) -> bool:
        records, nbytes = self._share()
        return part.records >= records * fraction or part.nbytes >= nbytes * fraction

    def _pause(self, part: Partition) -> None:
        if not part.paused:
            part.paused = True
            self.consumer.pause(part.tp)

    def _resume_drained(self) -> None:
        """Resume paused partitions once below half their share (and the caps have room)."""
        if self.assignment.inflight.full:
            return
        for part in self.assignment.parts.values():
            if part.paused and not self._over_share(part, 0.5):
                part.paused = False
                self.consumer.resume(part.tp)

    def dispatch(self, part: Partition, records: Sequence[ConsumedRecord]) -> None:
        s = self.settings
        expected = part.offsets.next_offset
        if expected is not None and records[0].offset < expected:
            # Fetched again before a seek took effect: those already in flight stay.
            records = [r for r in records if r.offset >= expected]
            if not records:
                return
        sizes: list[int] = []
        for chunk, nbytes in split_batches(
            records, s.batch_max_records, s.batch_max_bytes, _record_size
        ):
            ticket = part.offsets.track(
                chunk[0].offset,
                chunk[-1].offset,
                len(chunk),
                chunk[0].timestamp / 1000,
                chunk[-1].timestamp / 1000,
            )
            values = [r.value for r in chunk]
            batch_keys = [r.key for r in chunk]
            stamps = [r.timestamp for r in chunk]
            batch = Batch(
                ticket=ticket,
                keys=batch_keys,
                values=values,
                offsets=[r.offset for r in chunk],
                timestamps_ms=stamps,
                nbytes=nbytes,
                result=asyncio.ensure_future(self.process(batch_keys, values, stamps)),
            )
            self.assignment.track(part, batch)
            sizes.append(len(chunk))
        part.wakeup.set()
        self.on_fetched(part, len(records), sizes)


def _record_size(record: ConsumedRecord) -> int:
    value = record.value
    return len(value) if value is not None else 0
