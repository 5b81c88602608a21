"""The service: consume, process in the worker pool, produce, commit.

The event loop only moves bytes and offsets. Records are cut into batches per
partition; each batch crosses to a worker once and comes back once. One emitter
task per partition produces results in input order (so per key, outputs keep the
input order), without waiting for each acknowledgement; when every record of a
batch is acknowledged, its range of offsets is finished and may be committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiokafka.errors import IllegalOperation, IllegalStateError, KafkaError

from stream import __version__, kafka
from stream.config import RunSettings
from stream.flow import InFlight, split_batches
from stream.http import Check, HttpServer
from stream.kafka import TopicPartition
from stream.metrics import Metrics
from stream.offsets import OffsetTracker, PartitionOffsets, Ticket
from stream.pool import WorkerPool
from stream.worker import BatchResult
from transforms import resolve

log = logging.getLogger("stream")

TRANSACTION_MAX_BATCHES = 32  # exactly-once: most batches one transaction covers
HEADER_REASON = "stream.error.reason"
HEADER_MESSAGE = "stream.error.message"
HEADER_TOPIC = "stream.source.topic"
HEADER_PARTITION = "stream.source.partition"
HEADER_OFFSET = "stream.source.offset"
HEADER_ORIGINAL_SIZE = "stream.error.original-size"  # set when the dead letter is truncated


class FatalError(RuntimeError):
    """The service cannot go on safely (a produce failed for good); it stops, non-zero."""


@dataclass(slots=True, eq=False)
class _Batch:
    ticket: Ticket
    keys: list[bytes | None]
    values: list[bytes | None]
    offsets: list[int]
    timestamps_ms: list[int]
    nbytes: int
    result: asyncio.Future[BatchResult]
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # what was dead-lettered


@dataclass(slots=True, eq=False)
class _Partition:
    tp: TopicPartition
    offsets: PartitionOffsets
    queue: deque[_Batch] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    emitter: asyncio.Task[None] | None = None
    producer: Any = None  # exactly-once: this partition's transactional producer
    records: int = 0  # in flight: read, not yet acknowledged
    nbytes: int = 0
    closing: bool = False

    @property
    def busy(self) -> bool:
        return self.records > 0


class _Acks:
    """Counts acknowledgements of one batch's produced records; calls back once."""

    __slots__ = ("_callback", "_error", "_left")

    def __init__(self, count: int, callback: Any) -> None:
        self._left = count
        self._error: BaseException | None = None
        self._callback = callback

    def done(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._error = self._error or asyncio.CancelledError()
        elif future.exception() is not None:
            self._error = self._error or future.exception()
        self._left -= 1
        if self._left == 0:
            self._callback(self._error)


class Service:
    """One instance of the stream processor. ``await run()``; ``stop()`` to drain and end."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.transform = resolve(settings.transform)
        self.dlq_topic = settings.dead_letter_topic
        self.exactly_once = settings.guarantee == "exactly-once"
        self.metrics = Metrics(
            settings.transform, settings.input_topic, settings.output_topic, self.dlq_topic
        )
        self.inflight = InFlight(settings.max_inflight_records, settings.max_inflight_bytes)
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.metrics_port: int | None = None
        self.pool = WorkerPool(
            settings.transform,
            settings.workers,
            settings.max_record_bytes,
            batch_timeout=settings.batch_timeout,
            on_restart=self.metrics.worker_restarts.inc,
            max_array_length=settings.max_array_length,
        )
        self._parts: dict[TopicPartition, _Partition] = {}
        self._stopping = asyncio.Event()
        self._room = asyncio.Event()
        self._fatal: BaseException | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._http: HttpServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.assigned = asyncio.Event()
        self._rebalancing = True  # until the first assignment
        self._last_progress = time.monotonic()
        self._broker_seen: float | None = None  # monotonic time of the last broker answer
        self._lag: dict[TopicPartition, int] = {}
        self._lag_refresh = asyncio.Event()
        # Counters for the summary line.
        self._count_in = self._count_out = self._count_dlq = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop: no more fetching, drain, commit, exit."""
        self._stopping.set()
        self._room.set()

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
            log.error("stopping: %s", exc)
        self.stop()

    async def run(self) -> None:
        s = self.settings
        self._start_http()
        pids = await self.pool.start()
        self.metrics.pool_workers.set(self.pool.alive)
        try:
            if not self.exactly_once:
                self._producer = kafka.make_producer(
                    s, linger_ms=s.linger_ms, delivery_timeout=s.delivery_timeout
                )
                await kafka.start_client(self._producer, s)
            self._consumer = kafka.make_consumer(s)
            await kafka.start_client(self._consumer, s)
            await kafka.require_topics(
                self._consumer, [s.input_topic, s.output_topic, self.dlq_topic]
            )
            kafka.subscribe(self._consumer, s.input_topic, self._on_assigned, self._on_revoked)
            log.info(
                "stream %s started: %s transform=%s workers=%d (pids %s) %s -> %s (dead letters: "
                "%s) group=%s metrics=http://%s:%s/metrics",
                __version__,
                s.guarantee,
                s.transform,
                s.workers,
                ",".join(map(str, pids)),
                s.input_topic,
                s.output_topic,
                self.dlq_topic,
                s.group_id,
                s.metrics_host,
                self.metrics_port,
            )
            self._tasks = [
                self._own(self._commit_loop(), "committer"),  # idle in exactly-once mode
                self._own(self._stats_loop(), "stats"),
                self._own(self._loop_lag_loop(), "loop-lag"),
                self._own(self._lag_loop(), "lag"),
            ]
            await self._consume_loop()
            await self._shutdown()
        finally:
            await self._close()
        if self._fatal is not None:
            raise FatalError(str(self._fatal)) from self._fatal

    def _own(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)

        def check(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self._fail(FatalError(f"{name}: {t.exception()!r}"))

        task.add_done_callback(check)
        return task

    def _start_http(self) -> None:
        s = self.settings
        try:
            self._http = HttpServer(
                s.metrics_host,
                s.metrics_port,
                self.metrics.registry,
                loop=asyncio.get_running_loop(),
                liveness=self.liveness,
                readiness=self.readiness,
            )
        except OSError as exc:
            raise kafka.BrokerUnavailable(
                f"cannot serve metrics on {s.metrics_host}:{s.metrics_port}: {exc.strerror}"
            ) from None
        self._http.start()
        self.metrics_port = self._http.port

    async def _shutdown(self) -> None:
        """Drain what is in flight (bounded), then commit it."""
        busy = [p for p in self._parts.values() if p.busy]
        if busy:
            log.info("draining %d in-flight records", sum(p.records for p in busy))
        drained = await self._drain(list(self._parts.values()), self.settings.drain_timeout)
        if not drained:
            log.warning(
                "drain timeout (%gs): abandoning %d records; they will be read again",
                self.settings.drain_timeout,
                self.inflight.records,
            )
        await self._commit()

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for part in list(self._parts.values()):
            await self._release(part)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._consumer.stop()
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._producer.stop()
        await self.pool.close()
        if self._http is not None:
            self._http.close()
        if self._tasks:  # it ran (a start that failed says why, in one line, elsewhere)
            log.info(
                "stopped: %d read, %d written, %d dead-lettered",
                self._count_in,
                self._count_out,
                self._count_dlq,
            )

    # ---- consuming ---------------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        consumer, inflight = self._consumer, self.inflight
        while not self._stopping.is_set():
            if inflight.full:
                # Stop fetching: aiokafka keeps at most one fetched response per partition
                # buffered and fetches no more until we take from it.
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), 1.0)
                continue
            fetched = await consumer.getmany(timeout_ms=200, max_records=inflight.room)
            for tp, records in fetched.items():
                part = self._parts.get(tp)
                if part is None or part.closing:
                    # Not ours (yet, or any more): never skip records. Seek back so that
                    # they are fetched again if the partition stays assigned; if it goes,
                    # its next owner starts from the committed offset anyway.
                    with contextlib.suppress(KafkaError, IllegalStateError, AssertionError):
                        consumer.seek(tp, records[0].offset)
                    continue
                self._dispatch(part, records)

    def _dispatch(self, part: _Partition, records: list[Any]) -> None:
        s = self.settings
        self.metrics.consumed.labels(part.tp.topic).inc(len(records))
        self._count_in += len(records)
        for chunk, nbytes in split_batches(
            records, s.batch_max_records, s.batch_max_bytes, _value_size
        ):
            ticket = part.offsets.track(
                chunk[0].offset,
                chunk[-1].offset,
                len(chunk),
                chunk[0].timestamp / 1000,
                chunk[-1].timestamp / 1000,
            )
            values = [r.value for r in chunk]
            batch = _Batch(
                ticket=ticket,
                keys=[r.key for r in chunk],
                values=values,
                offsets=[r.offset for r in chunk],
                timestamps_ms=[r.timestamp for r in chunk],
                nbytes=nbytes,
                result=asyncio.ensure_future(self.pool.run(values)),
            )
            self.inflight.add(len(chunk), nbytes)
            part.records += len(chunk)
            part.nbytes += nbytes
            part.queue.append(batch)
            self.metrics.batch_size.observe(len(chunk))
        part.wakeup.set()
        self._update_inflight_gauges()

    # ---- producing ---------------------------------------------------------------------------

    async def _emit_loop(self, part: _Partition) -> None:
        """Produce the finished batches of one partition, in input order."""
        while True:
            if not part.queue:
                part.wakeup.clear()
                if not self.exactly_once:
                    await part.wakeup.wait()
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(part.wakeup.wait(), self.settings.commit_interval)
                if not part.queue and not await self._commit_idle(part):
                    return  # rewound: a new emitter carries on
                continue
            await part.queue[0].result
            if self.exactly_once:
                if not await self._emit_transaction(part):
                    return  # rewound: a new emitter carries on
                continue
            batch = part.queue[0]
            result = batch.result.result()
            futures = await self._send(self._producer, part, batch, result)
            acks = _Acks(len(futures), lambda exc, b=batch: self._acked(part, b, exc))
            for future in futures:
                future.add_done_callback(acks.done)
            part.queue.popleft()

    async def _send(
        self, producer: Any, part: _Partition, batch: _Batch, result: BatchResult
    ) -> list[asyncio.Future[Any]]:
        """Send one batch's outputs and dead letters; one future per produced record batch."""
        self.metrics.transform_duration.labels(self.settings.transform).observe(result.seconds)
        keys = batch.keys
        outputs: list[kafka.Record] = []
        letters: list[kafka.Record] = []
        errors = {index: (reason, message) for index, reason, message in result.errors}
        require_key = self.settings.require_key
        batch.errors = []
        for index, output in enumerate(result.materialize(batch.values)):
            key = keys[index]
            if output is not None and (key is not None or not require_key):
                outputs.append((key, output, None))
                continue
            reason, message = errors.get(index) or ("null_key", "the record has no key")
            batch.errors.append((index, reason, message))
            headers = [
                (HEADER_REASON, reason.encode()),
                (HEADER_MESSAGE, message.encode("utf-8", "replace")),
                (HEADER_TOPIC, part.tp.topic.encode()),
                (HEADER_PARTITION, str(part.tp.partition).encode()),
                (HEADER_OFFSET, str(batch.offsets[index]).encode()),
            ]
            value = batch.values[index] or b""
            limit = self.settings.max_record_bytes
            if len(value) > limit:  # the dead letter must fit where the original did not
                headers.append((HEADER_ORIGINAL_SIZE, str(len(value)).encode()))
                value = value[:limit]
            letters.append((key, value, headers))
        futures = await kafka.send_records(producer, self.settings.output_topic, outputs)
        return futures + await kafka.send_records(producer, self.dlq_topic, letters)

    def _acked(self, part: _Partition, batch: _Batch, error: BaseException | None) -> None:
        """At-least-once: every record of a batch is acknowledged (or one failed)."""
        if error is not None:
            # Never commit past a record that was not produced: stop, and let the next
            # start read this batch again.
            self._fail(FatalError(f"producing to Kafka failed: {error!r}"))
            return
        self._finish(part, batch)

    async def _emit_transaction(self, part: _Partition) -> bool:
        """Exactly-once: the finished batches at the head of the queue, their outputs and
        dead letters and the partition's next offset, in one transaction. False if the
        transaction failed and the partition was rewound."""
        batches: list[_Batch] = []
        for batch in part.queue:
            if not batch.result.done() or len(batches) >= TRANSACTION_MAX_BATCHES:
                break
            batches.append(batch)
        producer = part.producer
        position = batches[-1].ticket.end
        started = time.perf_counter()
        try:
            await producer.begin_transaction()
            futures: list[asyncio.Future[Any]] = []
            for batch in batches:
                futures += await self._send(producer, part, batch, batch.result.result())
            await producer.send_offsets_to_transaction({part.tp: position}, self.settings.group_id)
            await producer.commit_transaction()
            for future in futures:
                future.result()  # all done once committed; raises if a send failed
        except (KafkaError, IllegalOperation) as exc:
            await self._rewind(part, exc)
            return False
        self.metrics.commit_duration.observe(time.perf_counter() - started)
        for batch in batches:
            part.queue.popleft()
            self._finish(part, batch)
        part.offsets.mark_committed(position)
        return True

    async def _commit_idle(self, part: _Partition) -> bool:
        """Exactly-once, nothing in flight: commit the consumer's position if it moved past
        our last offset (transaction markers of a transactional input) in a transaction of
        its own, so that lag reaches 0. False if that failed and the partition rewound."""
        state = part.offsets
        if state.pending or state.position is None or part.closing:
            return True
        try:
            state.advance_idle(await self._consumer.position(part.tp))
        except (KafkaError, IllegalStateError, AssertionError):
            return True
        position = state.committable()
        if position is None:
            return True
        producer = part.producer
        try:
            await producer.begin_transaction()
            await producer.send_offsets_to_transaction({part.tp: position}, self.settings.group_id)
            await producer.commit_transaction()
        except (KafkaError, IllegalOperation) as exc:
            await self._rewind(part, exc)
            return False
        state.mark_committed(position)
        return True

    async def _rewind(self, part: _Partition, error: BaseException) -> None:
        """Abort, forget what is in flight, seek back to the last committed offset, and go
        on with a new transactional producer (whose start fences any zombie)."""
        tp = part.tp
        committed = part.offsets.committed
        log.warning(
            "%s: transaction failed (%r); aborted, rewinding to offset %s",
            _names({tp}),
            error,
            committed,
        )
        self.metrics.commit_failures.inc()
        await self._release(part, abort=True)
        if part.closing or self._stopping.is_set():
            return
        if committed is not None:
            self._consumer.seek(tp, committed)
        elif self.settings.auto_offset_reset == "earliest":
            await self._consumer.seek_to_beginning(tp)
        else:
            await self._consumer.seek_to_end(tp)
        await self._start_partition(self._add_partition(tp, committed))

    def _finish(self, part: _Partition, batch: _Batch) -> None:
        """A batch is produced (and, exactly-once, committed): account for it."""
        if part.offsets.closed:
            return  # revoked and abandoned; the new owner processes it again
        part.offsets.complete(batch.ticket)
        count, failed = len(batch.values), len(batch.errors)
        part.records -= count
        part.nbytes -= batch.nbytes
        self.inflight.remove(count, batch.nbytes)
        now = time.time()
        m = self.metrics
        m.produced.labels(self.settings.output_topic).inc(count - failed)
        self._count_out += count - failed
        if failed:
            m.produced.labels(self.dlq_topic).inc(failed)
            self._count_dlq += failed
            for _, reason, _message in batch.errors:
                m.failed.labels(reason).inc()
                m.dead_lettered.labels(reason).inc()
        stamps = np.fromiter(batch.timestamps_ms, dtype=np.float64, count=count)
        m.latency.observe_many(np.maximum(0.0, now - stamps / 1000))
        m.last_processed.set(now)
        self._last_progress = time.monotonic()
        self._update_inflight_gauges()
        if not self.inflight.full:
            self._room.set()

    def _update_inflight_gauges(self) -> None:
        self.metrics.inflight_messages.set(self.inflight.records)
        self.metrics.inflight_bytes.set(self.inflight.bytes)

    # ---- committing and rebalancing ---------------------------------------------------------

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        if self.exactly_once:
            return  # offsets are committed inside each partition's transactions
        for part in list(self._parts.values()):
            if not part.busy and not part.closing and part.offsets.position is not None:
                with contextlib.suppress(KafkaError, AssertionError):
                    part.offsets.advance_idle(await self._consumer.position(part.tp))
        offsets = self.tracker.committable()
        if only is not None:
            offsets = {tp: o for tp, o in offsets.items() if tp in only}
        if not offsets or self._consumer is None:
            return
        started = time.perf_counter()
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed (will retry): %r", exc)
            return
        self.metrics.commit_duration.observe(time.perf_counter() - started)
        self.tracker.mark_committed(offsets)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.commit_interval)
            await self._commit()

    async def _drain(self, parts: list[_Partition], seconds: float) -> bool:
        """Wait until these partitions have nothing in flight; False on timeout."""
        deadline = time.monotonic() + seconds
        while any(p.busy for p in parts):
            if time.monotonic() >= deadline or self._fatal is not None:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.metrics.rebalances.inc()
        # Register every new partition before the first await, so that records fetched
        # meanwhile have a queue to go to; then look up offsets and start producers.
        added = [self._add_partition(tp) for tp in sorted(assigned) if tp not in self._parts]
        for part in added:
            part.offsets.mark_committed(await self._consumer.committed(part.tp))
            await self._start_partition(part)
        self._rebalancing = False
        log.info("assigned partitions: %s", _names(assigned))
        if assigned:
            self.assigned.set()
        self._lag_refresh.set()

    def _add_partition(self, tp: TopicPartition, committed: int | None = None) -> _Partition:
        part = _Partition(tp, self.tracker.assign(tp, committed))
        self._parts[tp] = part
        labels = (tp.topic, str(tp.partition))
        self.metrics.consumer_lag.labels(*labels).set(0)
        self.metrics.consumer_lag_seconds.labels(*labels).set(0)
        return part

    async def _start_partition(self, part: _Partition) -> None:
        """Start a partition's producer (exactly-once) and its emitter."""
        tp = part.tp
        if self.exactly_once:
            # One transactional id per input partition (aiokafka has no KIP-447): starting
            # it fences any zombie that still writes for this partition.
            transactional_id = f"{self.settings.group_id}-{tp.topic}-{tp.partition}"
            part.producer = kafka.make_transactional_producer(self.settings, transactional_id)
            await kafka.start_client(part.producer, self.settings)
        part.emitter = self._own(self._emit_loop(part), f"emit-{tp.topic}-{tp.partition}")

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._rebalancing = True
        parts = [self._parts[tp] for tp in revoked if tp in self._parts]
        if not parts:
            return
        for part in parts:
            part.closing = True
        if not await self._drain(parts, self.settings.drain_timeout):
            log.warning("rebalance: in-flight work of revoked partitions abandoned after drain")
        await self._commit({p.tp for p in parts})
        for part in parts:
            await self._release(part)
        log.info("revoked partitions: %s", _names(revoked))

    async def _release(self, part: _Partition, abort: bool = False) -> None:
        """Forget a partition and close its transactional producer, if it has one."""
        self._drop(part)
        producer, part.producer = part.producer, None
        if producer is None:
            return
        with contextlib.suppress(KafkaError, IllegalOperation):
            if abort:
                await producer.abort_transaction()
        with contextlib.suppress(KafkaError, IllegalOperation, OSError):
            await producer.stop()

    def _drop(self, part: _Partition) -> None:
        """Forget a partition: cancel its emitter and abandon what is still in flight."""
        if self._parts.get(part.tp) is part:
            del self._parts[part.tp]
        self.tracker.revoke(part.tp)
        self.tracker.revoke(part.tp)
        self._lag.pop(part.tp, None)
        labels = (part.tp.topic, str(part.tp.partition))
        for gauge in (self.metrics.consumer_lag, self.metrics.consumer_lag_seconds):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        if part.emitter is not None and part.emitter is not asyncio.current_task():
            part.emitter.cancel()
        for batch in part.queue:
            batch.result.cancel()
        part.queue.clear()
        if part.records:
            self.inflight.remove(part.records, part.nbytes)
            part.records = part.nbytes = 0
            self._room.set()
        self._update_inflight_gauges()

    # ---- monitoring ----------------------------------------------------------------------------

    async def _loop_lag_loop(self) -> None:
        """Measure how late the event loop wakes up; count the live workers."""
        interval = 0.25
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(interval)
            self.metrics.event_loop_lag.set(max(0.0, loop.time() - started - interval))
            self.metrics.pool_workers.set(self.pool.alive)

    async def _lag_loop(self) -> None:
        """Read the end offsets of our partitions every lag interval; set the lag gauges."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lag_refresh.wait(), self.settings.lag_interval)
            self._lag_refresh.clear()
            parts = list(self._parts.values())
            if not parts:
                continue
            try:
                ends = await self._consumer.end_offsets([p.tp for p in parts])
            except KafkaError as exc:
                log.warning("could not read end offsets for lag: %r", exc)
                continue
            self._broker_seen = time.monotonic()
            now = time.time()
            for part in parts:
                end = ends.get(part.tp)
                if end is None or part.offsets.closed:
                    continue
                state = part.offsets
                base = state.committed if state.committed is not None else state.first_offset
                if base is None:
                    base = await self._consumer.position(part.tp)
                lag = max(0, end - base)
                self._lag[part.tp] = lag
                age = 0.0
                if lag:
                    oldest = state.oldest_uncommitted_timestamp or state.last_finished_timestamp
                    age = max(0.0, now - oldest) if oldest else 0.0
                labels = (part.tp.topic, str(part.tp.partition))
                self.metrics.consumer_lag.labels(*labels).set(lag)
                self.metrics.consumer_lag_seconds.labels(*labels).set(age)

    def liveness(self) -> Check:
        """Alive: the loop answers (this runs on it), workers are up, no stall while lagging."""
        alive = self.pool.alive
        details: dict[str, Any] = {"workers_alive": alive, "workers": self.settings.workers}
        if self._fatal is not None:
            return Check(False, f"stopping after a fatal error: {self._fatal}", details)
        if alive == 0:
            return Check(False, "no worker process is alive", details)
        lag = sum(self._lag.values())
        idle = time.monotonic() - self._last_progress
        details |= {"lag": lag, "seconds_since_progress": round(idle, 3)}
        if lag > 0 and idle > self.settings.stall_timeout:
            return Check(False, f"no progress for {idle:.0f}s while lagging", details)
        return Check(True, "alive", details)

    def readiness(self) -> Check:
        """Ready: partitions assigned, the broker answered recently, not mid-rebalance."""
        details: dict[str, Any] = {"partitions": len(self._parts)}
        if self._stopping.is_set():
            return Check(False, "shutting down", details)
        if self._rebalancing:
            return Check(False, "rebalancing: waiting for a partition assignment", details)
        if not self._parts:
            return Check(False, "no partitions assigned", details)
        seen = self._broker_seen
        stale = max(30.0, 3 * self.settings.lag_interval)
        if seen is None or time.monotonic() - seen > stale:
            return Check(False, "the broker has not answered recently", details)
        return Check(True, "ready", details)

    # ---- summary line ------------------------------------------------------------------------

    async def _stats_loop(self) -> None:
        interval = self.settings.stats_interval
        if interval <= 0:
            return
        last = (time.monotonic(), self._count_in, self._count_out)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            elapsed = max(1e-9, now - last[0])
            log.info(
                "in %.0f/s, out %.0f/s, lag %d, in flight %d, dead-lettered %d, partitions %d",
                (self._count_in - last[1]) / elapsed,
                (self._count_out - last[2]) / elapsed,
                sum(self._lag.values()),
                self.inflight.records,
                self._count_dlq,
                len(self._parts),
            )
            last = (now, self._count_in, self._count_out)


def _value_size(record: Any) -> int:
    value = record.value
    return len(value) if value is not None else 0


def _names(tps: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "none"


async def serve(settings: RunSettings) -> None:
    """Run a service until SIGTERM/SIGINT: the first drains and stops, a second exits at once."""
    service = Service(settings)
    loop = asyncio.get_running_loop()
    seen: list[int] = []

    def on_signal(signum: int) -> None:
        seen.append(signum)
        if len(seen) == 1:
            log.info(
                "%s: stopping (drain up to %gs; send it again to exit at once)",
                signal.Signals(signum).name,
                settings.drain_timeout,
            )
            service.stop()
        else:
            log.warning("second signal: exiting now without draining")
            os._exit(130)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await service.run()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
