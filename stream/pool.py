"""The pool of worker processes, as the event loop sees it.

One ``run()`` call sends one batch to a worker and awaits its result without
blocking the loop. Workers start with ``forkserver`` (the parent runs threads and
an event loop, so plain fork is unsafe) and one BLAS thread each. If a worker dies
(SIGKILL, segfault, out of memory) the executor is rebuilt and the batch retried;
a batch that keeps killing workers is split until the culprit record is isolated
and reported as a bad record, so nothing is lost and the rest flows.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from stream import worker
from stream.worker import BatchResult

log = logging.getLogger(__name__)


class PoolError(RuntimeError):
    """The pool cannot run work at all (its workers fail to start)."""


class WorkerPool:
    def __init__(
        self,
        transform: str,
        workers: int,
        max_record_bytes: int,
        *,
        max_attempts: int = 3,
        on_restart: Callable[[], None] | None = None,
        start_method: str = "forkserver",
        restart: bool = True,
    ) -> None:
        self.transform = transform
        self.workers = workers
        self.max_record_bytes = max_record_bytes
        self.max_attempts = max_attempts
        self._on_restart = on_restart
        self.restart = restart
        self._context = multiprocessing.get_context(start_method)
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0
        self.restarts = 0

    def _new_executor(self) -> ProcessPoolExecutor:
        for name in worker.BLAS_THREAD_VARS:
            os.environ.setdefault(name, "1")
        return ProcessPoolExecutor(
            max_workers=self.workers, mp_context=self._context, initializer=worker.init_worker
        )

    async def start(self) -> list[int]:
        """Start every worker and load the transform in each; returns their pids."""
        self._executor = self._new_executor()
        loop = asyncio.get_running_loop()
        # Each warm-up keeps its worker busy for a moment, so that every submit starts a
        # new process (the executor starts one only when none is idle).
        until = time.time() + 0.5
        try:
            pids = await asyncio.gather(
                *(
                    loop.run_in_executor(self._executor, worker.warm_up, self.transform, until)
                    for _ in range(self.workers)
                )
            )
        except BrokenProcessPool as exc:
            raise PoolError(f"worker processes failed to start: {exc}") from None
        return sorted(set(pids))

    @property
    def alive(self) -> int:
        """Worker processes now alive."""
        executor = self._executor
        if executor is None:
            return 0
        processes = getattr(executor, "_processes", None) or {}
        return sum(1 for p in list(processes.values()) if p.is_alive())

    @property
    def broken(self) -> bool:
        """A worker died and the executor has not been rebuilt yet."""
        return bool(getattr(self._executor, "_broken", False))

    def check(self) -> None:
        """Rebuild a broken executor now rather than at the next batch (called periodically)."""
        if self.broken and self.restart:
            self._rebuild(self._generation)

    def _rebuild(self, generation: int) -> None:
        """Replace a broken executor, once per breakage however many batches saw it."""
        if generation != self._generation:
            return
        self._generation += 1
        self.restarts += 1
        if self._on_restart is not None:
            self._on_restart()
        old = self._executor
        self._executor = self._new_executor()
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
        log.warning("a worker process died; the pool was restarted (%d so far)", self.restarts)

    async def run(self, values: list[bytes | None]) -> BatchResult:
        """Process one batch; never raises for what one record does to a worker."""
        for attempt in range(1, self.max_attempts + 1):
            executor, generation = self._executor, self._generation
            if executor is None:
                raise PoolError("the pool is closed")
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(
                    executor,
                    worker.process_batch,
                    self.transform,
                    values,
                    self.max_record_bytes,
                )
            except BrokenProcessPool:
                if not self.restart:
                    raise PoolError("a worker process died and restarts are off") from None
                self._rebuild(generation)
                log.info(
                    "retrying a batch of %d records after a worker died (attempt %d of %d)",
                    len(values),
                    attempt,
                    self.max_attempts,
                )
        if len(values) == 1:
            return BatchResult(
                [None],
                [(0, "worker_crash", f"the worker died on this record {self.max_attempts} times")],
                0.0,
                0,
            )
        # Split: the culprit is in one half; the other half goes through.
        middle = len(values) // 2
        left, right = await asyncio.gather(self.run(values[:middle]), self.run(values[middle:]))
        errors = left.errors + [(i + middle, r, m) for i, r, m in right.errors]
        return BatchResult(
            left.outputs + right.outputs, errors, left.seconds + right.seconds, left.pid
        )

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
