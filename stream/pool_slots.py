"""One worker process of the pool and the parent thread that talks to it (a slot).

The thread takes batches from the pool's shared queue, sends each to its process over a
pipe and waits for the answer within the batch deadline; a worker that dies or overruns
it is replaced (unless the pool closes or restarts are off) and the batch comes back as
:class:`WorkerLost`, for the pool to retry. A replacement that fails to start is started
again after a growing pause until one works or the pool closes. A probe is answered
record by record, so the record a worker died or hung on is known. A batch whose awaiter
was cancelled is skipped, never run. Results reach the event loop through
``call_soon_threadsafe``: the loop never touches a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import queue
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Protocol

from stream import worker
from stream.errors import PoolError
from stream.formats.spec import FormatSpec
from stream.pool_activity import ActivityLog
from stream.windows.extract import WindowInput
from stream.worker import BatchResult
from transforms.reasons import Reason

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0  # seconds for a new worker to load the transform

Context = ForkServerContext | SpawnContext | ForkContext
"""Where worker processes start from."""

Answer = BatchResult | list[BatchResult]
"""A worker's answer to a batch (one result), or to a probe (one result per record)."""


class SlotOwner(Protocol):
    """What a slot reads from, and tells, its pool (``WorkerPool``)."""

    context: Context
    transform: str
    max_record_bytes: int
    max_array_length: int
    formats: FormatSpec
    windowing: WindowInput | None
    batch_timeout: float
    restart: bool
    restarts: int
    closing: bool
    jobs: queue.SimpleQueue[Queued | None]
    activity_log: ActivityLog

    respawn_pause: tuple[float, float]

    def note_restart(self) -> None: ...
    def note_respawn_failure(self, index: int) -> None: ...
    def pause_unless_closing(self, seconds: float) -> bool: ...
    def worker_exited(self) -> None: ...


class WorkerLost(Exception):
    """The worker running a batch died or overran the deadline; the batch may be retried.
    ``done`` holds the results a probe got before that (one per record, in order)."""

    def __init__(self, reason: str, message: str, done: list[BatchResult] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.done = done or []


@dataclass(slots=True, eq=False)
class Queued:
    """A pickled job waiting in the pool's queue, and the future its answer settles."""

    payload: bytes
    future: asyncio.Future[Answer]
    loop: asyncio.AbstractEventLoop
    probe: int = 0  # records of a probe (answered one by one); 0: a batch
    abandoned: bool = False  # its awaiter was cancelled (revoke, rewind): skip it, drop its answer

    def resolve(self, result: Answer | BaseException) -> None:
        """Settle the future from this slot's thread, on the loop's own thread."""
        self.loop.call_soon_threadsafe(_settle, self.future, result)


def _settle(future: asyncio.Future[Answer], result: Answer | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class Slot:
    """One worker process and the parent thread that talks to it."""

    def __init__(self, pool: SlotOwner, index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.respawning = False
        self._kill_lock = threading.Lock()
        self._closed = False  # the pool closed this slot: a process started now is killed
        self.thread = threading.Thread(target=self._serve, name=f"stream-pool-{index}", daemon=True)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def pid(self) -> int | None:
        """The worker process's id, None before it started."""
        return None if self.process is None else self.process.pid

    def spawn(self) -> int:
        """Start a worker process and wait until it has loaded the transform; its pid.

        The process is the slot's under the kill lock, so a close (:meth:`close`) either
        sees it and kills it, or came first and this kills it: a close racing a restart
        leaves no worker behind."""
        pool = self.pool
        parent, child = pool.context.Pipe(duplex=True)
        process = pool.context.Process(
            target=worker.serve,
            args=(
                child,
                pool.transform,
                pool.max_record_bytes,
                pool.max_array_length,
                pool.formats,
                pool.windowing,
            ),
            name=f"stream-worker-{self.index}",
            daemon=True,
        )
        try:
            process.start()
        except OSError:
            parent.close()
            raise
        finally:
            child.close()
        with self._kill_lock:
            closed = self._closed
            if not closed:
                self.process, self.conn = process, parent
        if closed:
            _end(process, parent)
            raise PoolError("the pool closed while a worker was starting")
        try:
            ready = parent.recv_bytes() if parent.poll(START_TIMEOUT) else None
        except (EOFError, OSError):  # it died, or a close killed it and closed the pipe
            self.kill()
            raise PoolError("a worker process exited while starting") from None
        if ready is None:
            self.kill()
            raise PoolError(f"a worker did not start within {START_TIMEOUT:g}s")
        if ready != b"ready":
            self.kill()
            raise PoolError(f"a worker failed to start: {ready.decode(errors='replace')}")
        assert process.pid is not None  # started
        return process.pid

    def kill(self) -> None:
        """Kill the process and close the pipe; safe from two threads at once (the pool's
        close and this worker's own thread may both get here)."""
        with self._kill_lock:
            process, conn = self.process, self.conn
            self.conn = None
        _end(process, conn)

    def close(self) -> None:
        """For good (the pool closes): kill the process, and any this slot starts later."""
        with self._kill_lock:
            self._closed = True
        self.kill()

    def _respawn(self, why: str) -> bool:
        self.respawning = True
        try:
            return self._replace(why)
        finally:
            self.respawning = False

    def _replace(self, why: str) -> bool:
        """Kill the worker and start another; False if there will be none (the pool
        closes, or restarts are off)."""
        self.kill()
        if self.pool.closing:
            return False
        if not self.pool.restart:
            log.error("worker %d %s; restarts are off", self.index, why)
            return False
        self.pool.note_restart()
        pid = self._start_until_it_works()
        if pid is None:
            return False
        log.info(
            "worker %d %s; restarted as pid %d (%d restarts so far)",
            self.index,
            why,
            pid,
            self.pool.restarts,
        )
        return True

    def _start_until_it_works(self) -> int | None:
        """Start a worker; one that fails to start (a start timeout on a loaded node, an
        exit while loading, no process to be had) is tried again after a pause that grows
        up to the pool's longest, until one starts (its pid) or the pool closes (None)."""
        pool = self.pool
        pause, longest = pool.respawn_pause
        failed = False
        try:
            while True:
                try:
                    return self.spawn()
                except (PoolError, OSError) as exc:
                    if pool.closing:
                        return None
                    failed = True
                    pool.note_respawn_failure(self.index)
                    log.error(
                        "worker %d could not be restarted: %s; trying again in %.1fs",
                        self.index,
                        exc,
                        pause,
                    )
                if pool.pause_unless_closing(pause):
                    return None
                pause = min(pause * 2, longest)
        finally:
            if failed:
                pool.activity_log.start_settled(self.index)

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
            if job.abandoned:
                continue  # dropped on revoke or rewind: never run it
            if not self.alive:
                pool.jobs.put(job)  # another worker may take it while this one is replaced
                if not self._respawn("died while idle"):
                    break
                continue
            pool.activity_log.attempt_started(self.index)
            try:
                outcome, why = self._attempt(job)
            finally:
                pool.activity_log.attempt_ended(self.index)
            job.resolve(outcome)  # after the slot is noted free: the awaiter sees it so
            if not why:
                continue
            code = self.process.exitcode if self.process is not None else None
            log.warning(
                "worker %d %s (exit code %s); its batch will be retried", self.index, why, code
            )
            if not self._respawn(why):
                break
        self.stop()
        pool.worker_exited()

    def _attempt(self, job: Queued) -> tuple[Answer | WorkerLost, str]:
        """Run ``job`` on this slot's worker: its answer and "", or the loss and what
        happened to the worker."""
        conn = self.conn
        assert conn is not None
        timeout = self.pool.batch_timeout
        done: list[BatchResult] = []
        try:
            conn.send_bytes(job.payload)
            if job.probe:
                # Each record has the whole deadline; the first that overruns it
                # (or kills the worker) is the culprit.
                while len(done) < job.probe and conn.poll(timeout):
                    done.append(pickle.loads(conn.recv_bytes()))  # noqa: S301
                if len(done) == job.probe:
                    return done, ""
            elif conn.poll(timeout):
                return pickle.loads(conn.recv_bytes()), ""  # noqa: S301 - our own worker
        except (EOFError, OSError):
            lost = WorkerLost(Reason.WORKER_CRASH, "the worker process died on this record", done)
            return lost, "died"
        lost = WorkerLost(Reason.WORKER_TIMEOUT, f"the record took longer than {timeout:g}s", done)
        return lost, "overran the batch deadline"

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not."""
        process = self.process
        if self.conn is not None and process is not None and process.is_alive():
            try:
                self.conn.send_bytes(b"")
                process.join(2)
            except OSError:
                pass
        self.kill()


def _end(process: BaseProcess | None, conn: Connection | None) -> None:
    """Kill a worker process (if alive), reap it, and close its pipe."""
    if process is not None and process.is_alive():
        process.kill()
    if process is not None:
        process.join(5)
    if conn is not None:
        with contextlib.suppress(OSError):
            conn.close()
