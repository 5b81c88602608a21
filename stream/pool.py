"""The pool of worker processes, as the event loop sees it.

``await pool.run(values)`` sends one batch to a free worker and returns its
result without blocking the loop. Each worker process has a pipe and a thread
in the parent that feeds it batches from one shared queue and waits for the
answer, so the loop never touches a pipe and batches go to whichever worker is
free. Workers start with ``forkserver`` (the parent runs threads and an event
loop, so plain fork is unsafe), ignore SIGINT, and run one BLAS thread each.

Faults are per worker: one that dies (SIGKILL, segfault, out of memory,
``os._exit``) or overruns the batch deadline is replaced, and only its batch is
retried. A batch that keeps killing workers is split until the record that does
it is isolated and returned as a bad record (reason ``worker_crash`` or
``worker_timeout``), so nothing is lost and the rest flows.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from stream import worker
from stream.worker import BatchResult, Enriched

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0  # seconds for a new worker to load the transform


class PoolError(RuntimeError):
    """The pool cannot run work (its workers fail to start, or it was closed)."""


class WorkerLost(Exception):
    """The worker running a batch died or overran the deadline; the batch may be retried."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True, eq=False)
class _Job:
    payload: bytes
    future: asyncio.Future[BatchResult]
    loop: asyncio.AbstractEventLoop

    def resolve(self, result: BatchResult | BaseException) -> None:
        self.loop.call_soon_threadsafe(_settle, self.future, result)


def _settle(future: asyncio.Future[BatchResult], result: BatchResult | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class _Worker:
    """One worker process and the parent thread that talks to it."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: Any = None
        self.conn: Connection | None = None
        self.thread = threading.Thread(target=self._serve, name=f"stream-pool-{index}", daemon=True)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def spawn(self) -> int:
        pool = self.pool
        parent, child = pool.context.Pipe(duplex=True)
        process = pool.context.Process(
            target=worker.serve,
            args=(child, pool.transform, pool.max_record_bytes, pool.max_array_length),
            name=f"stream-worker-{self.index}",
            daemon=True,
        )
        process.start()
        child.close()
        self.process, self.conn = process, parent
        if not parent.poll(START_TIMEOUT):
            self.kill()
            raise PoolError(f"a worker did not start within {START_TIMEOUT:g}s")
        try:
            ready = parent.recv_bytes()
        except (EOFError, OSError):
            self.kill()
            raise PoolError("a worker process exited while starting") from None
        if ready != b"ready":
            self.kill()
            raise PoolError(f"a worker failed to start: {ready.decode(errors='replace')}")
        pid: int = process.pid
        return pid

    def kill(self) -> None:
        process, conn = self.process, self.conn
        if process is not None and process.is_alive():
            process.kill()
        if process is not None:
            process.join(5)
        if conn is not None:
            conn.close()
        self.conn = None

    def _respawn(self, why: str) -> bool:
        self.kill()
        if not self.pool.restart:
            log.error("worker %d %s; restarts are off", self.index, why)
            return False
        self.pool.note_restart()
        try:
            pid = self.spawn()
        except PoolError as exc:
            log.error("worker %d could not be restarted: %s", self.index, exc)
            return False
        log.info(
            "worker %d %s; restarted as pid %d (%d restarts so far)",
            self.index,
            why,
            pid,
            self.pool.restarts,
        )
        return True

    def _serve(self) -> None:
        pool = self.pool
        while True:
            try:
                job = pool.jobs.get(timeout=0.5)
            except queue.Empty:
                if not self.alive and not pool.closing and not self._respawn("died while idle"):
                    break
                continue
            if job is None:
                break
            if not self.alive and not self._respawn("died while idle"):
                pool.jobs.put(job)  # another worker may take it
                break
            conn = self.conn
            assert conn is not None
            try:
                conn.send_bytes(job.payload)
                if conn.poll(pool.batch_timeout):
                    job.resolve(pickle.loads(conn.recv_bytes()))  # noqa: S301 - our own worker
                    continue
                lost = WorkerLost(
                    "worker_timeout", f"the batch took longer than {pool.batch_timeout:g}s"
                )
                why = "overran the batch deadline"
            except (EOFError, OSError):
                lost = WorkerLost("worker_crash", "the worker process died on this batch")
                why = "died"
            code = self.process.exitcode if self.process is not None else None
            log.warning(
                "worker %d %s (exit code %s); its batch will be retried", self.index, why, code
            )
            job.resolve(lost)
            if not self._respawn(why):
                break
        self.stop()
        pool.worker_exited()

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not."""
        if self.conn is not None and self.alive:
            try:
                self.conn.send_bytes(b"")
                self.process.join(2)
            except OSError:
                pass
        self.kill()


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
        start_method: str = "forkserver",
        restart: bool = True,
        max_array_length: int = 100_000,
    ) -> None:
        self.transform = transform
        self.max_array_length = max_array_length
        self.workers = workers
        self.max_record_bytes = max_record_bytes
        self.batch_timeout = batch_timeout
        self.max_attempts = max_attempts
        self.restart = restart
        self.restarts = 0
        self.closing = False
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.context: Any = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # New workers fork from a server that has numpy and the transforms loaded.
            self.context.set_forkserver_preload(["stream.worker"])
        self._on_restart = on_restart
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._running_threads = 0

    async def start(self) -> list[int]:
        """Start every worker and load the transform in each; returns their pids."""
        for name in worker.BLAS_THREAD_VARS:
            os.environ.setdefault(name, "1")
        self._workers = [_Worker(self, i) for i in range(self.workers)]
        try:
            pids = await asyncio.gather(*(asyncio.to_thread(w.spawn) for w in self._workers))
        except PoolError:
            for w in self._workers:
                w.kill()
            raise
        self._running_threads = len(self._workers)
        for w in self._workers:
            w.thread.start()
        return sorted(pids)

    @property
    def alive(self) -> int:
        """Worker processes now alive."""
        return sum(1 for w in self._workers if w.alive)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.alive]

    def note_restart(self) -> None:
        with self._lock:
            self.restarts += 1
        if self._on_restart is not None:
            self._on_restart()

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

    async def _attempt(
        self, values: list[bytes | None], enrichment: list[bytes | None] | None, field: str
    ) -> BatchResult:
        if self.closing or self._running_threads == 0:
            raise PoolError("the pool has no running workers")
        loop = asyncio.get_running_loop()
        batch: Any = values if enrichment is None else Enriched(values, enrichment, field)
        payload = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        job = _Job(payload, loop.create_future(), loop)
        self.jobs.put(job)
        return await job.future

    async def run(
        self,
        values: list[bytes | None],
        attempts: int | None = None,
        *,
        enrichment: list[bytes | None] | None = None,
        field: str = "meta",
    ) -> BatchResult:
        """Process one batch; a record that kills or hangs workers comes back as an error.

        ``enrichment`` (from ``stream.enrich``): per record, JSON bytes the worker puts
        under ``field`` of the decoded record before the transform, or None."""
        tries = self.max_attempts if attempts is None else attempts
        lost: WorkerLost | None = None
        for _ in range(tries):
            try:
                return await self._attempt(values, enrichment, field)
            except WorkerLost as exc:
                lost = exc
        assert lost is not None
        if len(values) == 1:
            message = f"{lost} ({self.max_attempts} tries)"
            return BatchResult([None], [(0, lost.reason, message)], 0.0, 0)
        # Split: the culprit is in one half; the other half goes through. Halves get one
        # try each until a single record is left, which gets the full number of tries.
        middle = len(values) // 2
        left_values, right_values = values[:middle], values[middle:]
        left_extra = None if enrichment is None else enrichment[:middle]
        right_extra = None if enrichment is None else enrichment[middle:]
        left, right = await asyncio.gather(
            self.run(
                left_values,
                None if len(left_values) == 1 else 1,
                enrichment=left_extra,
                field=field,
            ),
            self.run(
                right_values,
                None if len(right_values) == 1 else 1,
                enrichment=right_extra,
                field=field,
            ),
        )
        errors = left.errors + [(i + middle, r, m) for i, r, m in right.errors]
        outputs = left.materialize(left_values) + right.materialize(right_values)
        return BatchResult(outputs, errors, left.seconds + right.seconds, left.pid)

    async def close(self) -> None:
        self.closing = True
        for _ in self._workers:
            self.jobs.put(None)
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        for w in self._workers:
            if w.thread.is_alive():
                w.thread.join(10)
        for w in self._workers:
            w.kill()
