"""The pool's own failure paths, on real worker processes: abandoned batches, workers that
fail to start again, and a close that races a worker's restart."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream import worker
from stream.pool import WorkerPool

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
