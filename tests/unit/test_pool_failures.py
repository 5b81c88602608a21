"""The pool's own failure paths, on real worker processes: abandoned batches, workers that
fail to start again, and a close that races a worker's restart."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, ForkServerProcess
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from stream import worker
from stream.pool import CLOSE_GRACE, WorkerPool

HERE = __name__
LIMIT = 1 << 20


@pytest.fixture(autouse=True)
def blas_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool sets OMP_NUM_THREADS & co. in os.environ; undo that after the test."""
    for name in worker.BLAS_THREAD_VARS:
        monkeypatch.setenv(name, os.environ.get(name, "1"))


def nap_and_touch(records: Sequence[Any]) -> list[Any]:
    """Per record: sleep ``nap`` seconds, then create the file ``touch`` names (a trace
    that the record was run); pass the record through."""
    for record in records:
        time.sleep(float(record.get("nap", 0)))
        if "touch" in record:
            Path(record["touch"]).touch()
    return list(records)


async def until(condition: Callable[[], bool], wait: float = 30.0) -> None:
    """Wait for ``condition`` (generous: workers start slowly on a loaded machine)."""
    deadline = time.monotonic() + wait
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def batch(**fields: Any) -> list[bytes | None]:
    return [orjson.dumps(fields)]


# --- abandoned work ---------------------------------------------------------------------------


async def test_a_cancelled_batch_waiting_in_the_queue_never_runs(tmp_path: Path) -> None:
    """A batch dropped on revoke (its awaiting task cancelled) while it waits behind a busy
    worker is skipped; the batch after it runs."""
    pool = WorkerPool(f"{HERE}:nap_and_touch", 1, LIMIT)
    try:
        await pool.start()
        busy = asyncio.ensure_future(pool.run(batch(nap=1.0)))
        await until(lambda: pool.activity().busy_since is not None)
        dropped = asyncio.ensure_future(pool.run(batch(touch=str(tmp_path / "dropped"))))
        await asyncio.sleep(0.1)  # queued behind the busy worker
        assert not busy.done()
        dropped.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dropped
        await busy
        after = await pool.run(batch(touch=str(tmp_path / "after")))
        assert after.errors == []
        assert (tmp_path / "after").exists()  # the worker has been past the dropped one
        assert not (tmp_path / "dropped").exists()
    finally:
        await pool.close()


async def test_a_batch_cancelled_while_it_runs_finishes_and_its_answer_is_dropped(
    tmp_path: Path,
) -> None:
    pool = WorkerPool(f"{HERE}:nap_and_touch", 1, LIMIT)
    try:
        await pool.start()
        running = asyncio.ensure_future(pool.run(batch(nap=0.5, touch=str(tmp_path / "ran"))))
        await until(lambda: pool.activity().busy_since is not None)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        values = batch(n=2)
        result = await pool.run(values)  # its own answer, not the dropped one's
        assert result.errors == []
        assert result.materialize(values) == values
        assert (tmp_path / "ran").exists()
        assert pool.activity().busy_since is None
    finally:
        await pool.close()


# --- worker starts under the test's hand ------------------------------------------------------


def refuse_start(conn: Connection, *_: object) -> None:
    """A worker that cannot load its transform (what a start timeout also ends in)."""
    conn.send_bytes(b"RuntimeError: this worker refuses to start (test)")


def slow_start(delay: float, conn: Connection, *rest: Any) -> None:
    """A worker that takes ``delay`` seconds to load its transform, then serves."""
    time.sleep(delay)
    worker.serve(conn, *rest)


@dataclass
class Starts:
    """What the next worker starts do (set by a test; read in the parent only)."""

    refuse: int = 0  # this many next starts fail to load
    slow: float = 0.0  # the next start takes this long to load
    hold: Callable[[], None] | None = None  # runs in the parent between start and spawn's return
    started: list[int] = field(default_factory=list)  # pids of the processes started
    made: list[float] = field(default_factory=list)  # time.monotonic() of each start
    refused: int = 0  # starts refused so far
    holding: threading.Event = field(default_factory=threading.Event)


class ControlledProcess(ForkServerProcess):
    """A real forkserver worker whose start the module's ``STARTS`` steers."""

    starts: ClassVar[Starts] = Starts()

    def __init__(
        self, *, target: Callable[..., object], args: tuple[Any, ...], name: str, daemon: bool
    ) -> None:
        starts = self.starts
        starts.made.append(time.monotonic())
        if starts.refuse:
            starts.refuse -= 1
            starts.refused += 1
            target = refuse_start
        elif starts.slow:
            target, args = slow_start, (starts.slow, *args)
            starts.slow = 0.0
        super().__init__(target=target, args=args, name=name, daemon=daemon)

    def start(self) -> None:
        super().start()
        assert self.pid is not None
        self.starts.started.append(self.pid)
        hold, self.starts.hold = self.starts.hold, None
        if hold is not None:
            self.starts.holding.set()
            hold()


class ControlledContext(ForkServerContext):
    Process = ControlledProcess


@pytest.fixture
def starts() -> Starts:
    ControlledProcess.starts = Starts()
    return ControlledProcess.starts


def controlled(pool: WorkerPool) -> WorkerPool:
    pool.context = ControlledContext()
    return pool


def dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- a worker that fails to start again -------------------------------------------------------


async def test_a_worker_that_fails_to_restart_is_retried_until_it_starts(
    starts: Starts, tmp_path: Path
) -> None:
    """Three failed starts after a kill: the slot keeps trying, with a growing pause, shown
    in the activity snapshot and the failure callback; a batch sent meanwhile waits and
    runs once the worker is back."""
    failures: list[float] = []
    pool = controlled(
        WorkerPool(
            f"{HERE}:nap_and_touch",
            1,
            LIMIT,
            on_respawn_failure=lambda: failures.append(time.monotonic()),
            respawn_pause=(0.2, 0.5),
        )
    )
    try:
        [pid] = await pool.start()
        assert pool.activity().respawn_failures == 0
        starts.refuse = 3
        os.kill(pid, signal.SIGKILL)
        await until(lambda: pool.activity().respawn_failures == 1)
        waiting = asyncio.ensure_future(pool.run(batch(touch=str(tmp_path / "waited"))))
        await until(lambda: pool.alive == 1)
        result = await waiting
        assert result.errors == []
        assert (tmp_path / "waited").exists()
        assert starts.refused == 3
        assert len(failures) == pool.respawn_failures == 3
        assert pool.activity().respawn_failures == 0
        # Four starts after the kill (three refused), each after a pause at least as long
        # as the last, up to the longest: 0.2, 0.4, then 0.5 s.
        restarts = starts.made[-4:]
        gaps = [later - earlier for earlier, later in itertools.pairwise(restarts)]
        assert len(gaps) == 3
        assert all(gap >= least for gap, least in zip(gaps, [0.2, 0.4, 0.5], strict=True)), gaps
    finally:
        await pool.close()


# --- a close racing a restart -----------------------------------------------------------------


async def test_a_close_racing_a_worker_restart_leaves_no_worker_alive(starts: Starts) -> None:
    """The pool closes while a slot restarts its worker, between the new process's start
    and the slot taking hold of it (held there until the close has killed every slot's
    process); the new worker loads slowly, so only a kill ends it before the close ends."""
    pool = controlled(WorkerPool(f"{HERE}:nap_and_touch", 1, LIMIT))
    closing = threading.Event()

    def hold() -> None:
        closing.wait(30)
        time.sleep(CLOSE_GRACE + 1.0)  # past the close's kill (it comes after CLOSE_GRACE)

    respawned = 0
    try:
        [pid] = await pool.start()
        starts.slow, starts.hold = 20.0, hold
        os.kill(pid, signal.SIGKILL)
        await until(starts.holding.is_set)
        respawned = starts.started[-1]
        closing.set()
        await pool.close()
        assert dead(respawned)
        assert pool.alive == 0
    finally:
        if respawned and not dead(respawned):
            with contextlib.suppress(ProcessLookupError):
                os.kill(respawned, signal.SIGKILL)
