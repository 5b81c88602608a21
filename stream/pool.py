"""The pool of worker processes, as the event loop sees it.

``await pool.run(values)`` sends one batch to a free worker and returns its
result without blocking the loop. Each worker process has a pipe and a thread
in the parent that feeds it batches from one shared queue and waits for the
answer, so the loop never touches a pipe and batches go to whichever worker is
free (one process and its thread: a slot, :mod:`stream.pool_slots`). Workers start with
``forkserver`` (the parent runs threads and an event loop, so plain fork is unsafe),
ignore SIGINT, and run one BLAS thread each.

Faults are per worker: one that dies (SIGKILL, segfault, out of memory,
``os._exit``) or overruns the batch deadline is replaced, and only its batch is
retried. A batch that keeps killing workers is split until the record that does
it is isolated and returned as a bad record (reason ``worker_crash`` or
``worker_timeout``), so nothing is lost and the rest flows.

A batch whose caller stops waiting (its task cancelled on revoke or rewind) is never
run: the slot that takes it from the queue skips it; one already running finishes and
its answer is dropped. So no work runs outside the engine's in-flight caps, and new
batches never wait behind abandoned ones.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import queue
import threading
import time
from collections.abc import Callable
from typing import Literal, Protocol

from stream import worker
from stream.errors import PoolError
from stream.formats.spec import JSON, FormatSpec
from stream.pool_activity import ActivityLog, PoolActivity
from stream.pool_slots import Answer, Context, Queued, Slot, WorkerLost
from stream.windows.aggregates import Records, empty_records
from stream.windows.extract import WindowInput
from stream.worker import BatchResult, Job
from transforms.reasons import Reason

__all__ = ["Pool", "PoolActivity", "WorkerPool"]

log = logging.getLogger(__name__)

CLOSE_GRACE = 2.0  # seconds workers get to finish when the pool closes
RESPAWN_PAUSE = (1.0, 30.0)  # first and longest pause before starting again a worker that
# failed to start (a restart is retried until one works or the pool closes)
UNAVAILABLE_PAUSE = (0.5, 5.0)  # first and longest pause before re-running a batch that
# found the schema registry down (the worker has already retried for a while)


class Pool(Protocol):
    """The pool as the engine uses it (tests drive the engine with an in-process one)."""

    async def start(self) -> list[int]: ...
    async def run(
        self,
        values: list[bytes | None],
        *,
        enrichment: list[bytes | None] | None = None,
        field: str = "meta",
        timestamps: list[int] | None = None,
    ) -> BatchResult: ...
    async def close(self) -> None: ...
    def pids(self) -> list[int]: ...
    def activity(self) -> PoolActivity: ...
    @property
    def alive(self) -> int: ...
    @property
    def serving(self) -> int: ...


class WorkerPool:
    def __init__(
        self,
        transform: str,
        workers: int,
        max_record_bytes: int,
        *,
        batch_timeout: float = 60.0,
        max_attempts: int = 2,
        on_restart: Callable[[], None] | None = None,
        on_respawn_failure: Callable[[], None] | None = None,
        respawn_pause: tuple[float, float] = RESPAWN_PAUSE,
        start_method: Literal["forkserver", "spawn", "fork"] = "forkserver",
        restart: bool = True,
        max_array_length: int = 100_000,
        formats: FormatSpec | None = None,
        windowing: WindowInput | None = None,
    ) -> None:
        self.transform = transform
        self.formats = formats or JSON  # how workers decode and encode; None: JSON both ways
        self.windowing = windowing  # a windowed run: workers reduce each record's readings
        self.max_array_length = max_array_length
        self.workers = workers
        self.max_record_bytes = max_record_bytes
        self.batch_timeout = batch_timeout
        self.max_attempts = max_attempts
        self.restart = restart
        self.restarts = 0
        self.respawn_failures = 0  # worker starts that failed after a restart (each retried)
        self.respawn_pause = respawn_pause
        self.closing = False
        self._closed = threading.Event()  # set with ``closing``: wakes slots pausing to retry
        self.jobs: queue.SimpleQueue[Queued | None] = queue.SimpleQueue()
        self.context: Context
        if start_method == "forkserver":
            self.context = multiprocessing.get_context("forkserver")
            # New workers fork from a server that has numpy and the transforms loaded.
            self.context.set_forkserver_preload(["stream.worker"])
        elif start_method == "spawn":
            self.context = multiprocessing.get_context("spawn")
        else:
            self.context = multiprocessing.get_context("fork")
        self._on_restart = on_restart
        self._on_respawn_failure = on_respawn_failure
        self._lock = threading.Lock()
        self._workers: list[Slot] = []
        self._running_threads = 0
        self.activity_log = ActivityLog()  # slots and batches note their steps here

    async def start(self) -> list[int]:
        """Start every worker and load the transform in each; returns their pids."""
        for name in worker.BLAS_THREAD_VARS:
            os.environ.setdefault(name, "1")
        self._workers = [Slot(self, i) for i in range(self.workers)]
        self.activity_log.step()
        try:
            pids = await asyncio.gather(*(asyncio.to_thread(w.spawn) for w in self._workers))
        except PoolError:
            for w in self._workers:
                w.close()
            raise
        self._running_threads = len(self._workers)
        for w in self._workers:
            w.thread.start()
        return sorted(pids)

    @property
    def alive(self) -> int:
        """Worker processes now alive."""
        return sum(1 for w in self._workers if w.alive)

    @property
    def serving(self) -> int:
        """Worker slots still serving: alive, or being replaced after a death or a hang
        (with restarts on, a slot whose thread runs will bring its worker back)."""
        return sum(
            1
            for w in self._workers
            if w.alive or w.respawning or (self.restart and w.thread.is_alive())
        )

    def pids(self) -> list[int]:
        """Process ids of the workers now alive."""
        return [pid for w in self._workers if w.alive and (pid := w.pid) is not None]

    def activity(self) -> PoolActivity:
        """What the workers are doing now (for health); never waits on a worker."""
        return self.activity_log.snapshot()

    def note_restart(self) -> None:
        with self._lock:
            self.restarts += 1
        if self._on_restart is not None:
            self._on_restart()

    def note_respawn_failure(self, index: int) -> None:
        """Slot ``index`` failed to start its worker and will try again."""
        with self._lock:
            self.respawn_failures += 1
        self.activity_log.start_failed(index)
        if self._on_respawn_failure is not None:
            self._on_respawn_failure()

    def pause_unless_closing(self, seconds: float) -> bool:
        """Wait ``seconds``, or less if the pool starts closing; True if it is closing."""
        return self._closed.wait(seconds)

    def worker_exited(self) -> None:
        """A worker thread ended; the last one fails whatever still waits in the queue."""
        with self._lock:
            self._running_threads -= 1
            last = self._running_threads == 0
        if last:
            while True:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job.resolve(PoolError("no worker process is left to run the batch"))

    async def _attempt(self, job: Job) -> Answer:
        if self.closing or self._running_threads == 0:
            raise PoolError("the pool has no running workers")
        loop = asyncio.get_running_loop()
        payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        queued = Queued(payload, loop.create_future(), loop, len(job.values) if job.probe else 0)
        self.jobs.put(queued)
        try:
            return await queued.future
        except asyncio.CancelledError:
            queued.abandoned = True  # a slot that takes it skips it (one attribute: atomic)
            raise

    async def _attempt_until_available(self, job: Job) -> BatchResult:
        """One attempt; while the schema registry is down, the same batch again after a
        growing pause (never a dead letter for an outage; ends when the pool closes)."""
        result = await self._attempt(job)
        assert isinstance(result, BatchResult)  # a batch, not a probe
        if not result.unavailable:
            return result
        pause, longest = UNAVAILABLE_PAUSE
        with self.activity_log.waiting_for_registry():
            while result.unavailable:
                log.warning("%s; running the batch again in %.1fs", result.unavailable, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, longest)
                result = await self._attempt(job)
                assert isinstance(result, BatchResult)
        return result

    async def run(
        self,
        values: list[bytes | None],
        *,
        enrichment: list[bytes | None] | None = None,
        field: str = "meta",
        timestamps: list[int] | None = None,
    ) -> BatchResult:
        """Process one batch; a record that kills or hangs workers comes back as an error.

        ``enrichment`` (from ``stream.enrich``): per record, JSON bytes the worker puts
        under ``field`` of the decoded record before the transform, or None.

        A batch whose worker died or overran the deadline is run again as a probe: record
        by record, each answered as it is done, so the record it fails on is known at once
        (within two deadlines of the first try, whatever the batch size). A record the
        worker died on is tried once more alone; the records after it go on as a batch."""
        job = Job(values, False, enrichment, field, timestamps)
        try:
            return await self._attempt_until_available(job)
        except WorkerLost as exc:
            lost = exc
        with self.activity_log.isolating():
            return await self._isolate(job, lost)

    async def _run(self, job: Job) -> BatchResult:
        """The rest of a batch being isolated: as a batch first, record by record if needed."""
        try:
            return await self._attempt_until_available(job)
        except WorkerLost as exc:
            return await self._isolate(job, exc)

    async def _isolate(self, job: Job, lost: WorkerLost) -> BatchResult:
        """A batch whose worker died or overran: find the record that did it."""
        values = job.values
        if len(values) == 1:
            return await self._single(job, lost, tries=1)
        done: list[BatchResult] = []
        try:
            answer = await self._attempt(job.part(0, probe=True))
            assert isinstance(answer, list)  # a probe: one result per record
            done = answer
            if any(r.unavailable for r in done):  # the registry went away meanwhile
                return await self._attempt_until_available(job)
            return _combine([(r, 1) for r in done], values)
        except WorkerLost as exc:
            done, lost = exc.done, exc
        at = len(done)
        # A record that overran the deadline alone in the probe has had its two tries; one
        # the worker died on gets another alone (something else may have killed it).
        tries = 2 if lost.reason == Reason.WORKER_TIMEOUT else 1
        culprit = await self._single(job.part(at, at + 1), lost, tries=tries)
        parts = [(r, 1) for r in [*done, culprit]]
        if at + 1 < len(values):
            parts.append((await self._run(job.part(at + 1)), len(values) - at - 1))
        return _combine(parts, values)

    async def _single(self, job: Job, lost: WorkerLost, tries: int) -> BatchResult:
        """One record that already failed ``tries`` times: try it up to ``max_attempts``."""
        for _ in range(tries, self.max_attempts):
            try:
                return await self._attempt_until_available(job)
            except WorkerLost as exc:
                lost = exc
        message = f"{lost} ({self.max_attempts} tries)"
        window = None if self.windowing is None else empty_records(1)
        return BatchResult([None], [(0, lost.reason, message)], 0.0, 0, window=window)

    async def close(self) -> None:
        """Stop every worker (busy ones get ``CLOSE_GRACE``, then are killed), and any a
        slot is starting; bounded whatever the workers do."""
        self.closing = True
        self._closed.set()
        for _ in self._workers:
            self.jobs.put(None)
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        """Workers get a moment to finish; then any still busy (or hung) is killed, which
        ends its thread's wait. Bounded: a few seconds whatever the workers do."""
        deadline = time.monotonic() + CLOSE_GRACE
        started = [w for w in self._workers if w.thread.ident is not None]  # not if start failed
        for w in started:
            w.thread.join(max(0.0, deadline - time.monotonic()))
        for w in self._workers:
            w.close()
        for w in started:
            w.thread.join(CLOSE_GRACE)


def _combine(parts: list[tuple[BatchResult, int]], values: list[bytes | None]) -> BatchResult:
    """Results of consecutive slices of ``values`` (each with its length), as one."""
    outputs: list[bytes | None] = []
    errors: list[tuple[int, str, str]] = []
    seconds = 0.0
    windows: list[Records] = []
    start = 0
    for part, count in parts:
        if part.window is None:
            outputs += part.materialize(values[start : start + count])
        else:
            windows.append(part.window)
        errors += [(start + i, reason, message) for i, reason, message in part.errors]
        seconds += part.seconds
        start += count
    window = Records.concat(windows) if windows else None
    return BatchResult(
        [] if window is not None else outputs,
        errors,
        seconds,
        parts[0][0].pid if parts else 0,
        window=window,
    )
