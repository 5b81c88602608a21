"""The pool's activity snapshot (for /healthz), on real worker processes: a batch being
run, a record being isolated and a wait for the schema registry show as work in hand."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest

from stream import worker
from stream.formats.registry import RegistryConfig
from stream.formats.spec import FormatSpec
from stream.pool import PoolActivity, WorkerPool
from stream.pool_activity import ActivityLog

HERE = __name__
LIMIT = 1 << 20


@pytest.fixture(autouse=True)
def blas_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool sets OMP_NUM_THREADS & co. in os.environ; undo that after the test."""
    for name in worker.BLAS_THREAD_VARS:
        monkeypatch.setenv(name, os.environ.get(name, "1"))


def nap(records: Sequence[Any]) -> list[Any]:
    """Sleep the seconds a record asks for (``{"nap": 0.5}``), then pass it through."""
    for record in records:
        time.sleep(float(record.get("nap", 0)))
    return list(records)


async def until(condition: Callable[[], bool], wait: float = 30.0) -> None:
    """Wait for ``condition`` (generous: workers start slowly on a loaded machine)."""
    deadline = time.monotonic() + wait
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_the_log_is_plain_bookkeeping() -> None:
    """Two attempts, an isolation and a registry wait, on an injected clock."""
    now = [10.0]
    log = ActivityLog(clock=lambda: now[0])
    assert log.snapshot() == PoolActivity(None, 10.0, 0, 0, 0)
    now[0] = 11.0
    log.attempt_started(0)
    now[0] = 12.0
    log.attempt_started(1)
    assert log.snapshot() == PoolActivity(11.0, 12.0, 0, 0, 0)
    now[0] = 13.0
    log.attempt_ended(0)
    assert log.snapshot() == PoolActivity(12.0, 13.0, 0, 0, 0)
    log.start_failed(0)
    log.start_failed(0)  # one slot, however many tries
    with log.isolating(), log.waiting_for_registry():
        assert log.snapshot() == PoolActivity(12.0, 13.0, 1, 1, 1)
    log.start_settled(0)
    now[0] = 14.0
    log.attempt_ended(1)
    assert log.snapshot() == PoolActivity(None, 14.0, 0, 0, 0)


async def test_a_slow_batch_shows_as_busy_until_it_is_answered() -> None:
    pool = WorkerPool(f"{HERE}:nap", 1, LIMIT)
    try:
        before_start = time.monotonic()
        await pool.start()
        idle = pool.activity()
        assert idle.busy_since is None
        assert idle.last_step >= before_start  # the pool's start, before any attempt
        assert (idle.isolating, idle.waiting_for_registry, idle.respawn_failures) == (0, 0, 0)
        sent = time.monotonic()
        values: list[bytes | None] = [orjson.dumps({"nap": 1.5})]
        task = asyncio.ensure_future(pool.run(values))
        await until(lambda: pool.activity().busy_since is not None)
        busy = pool.activity()
        assert busy.busy_since is not None
        assert sent <= busy.busy_since <= time.monotonic()
        assert busy.last_step == busy.busy_since  # the attempt's start was the last step
        assert not task.done()  # busy while the worker still sleeps
        result = await task
        assert result.errors == []
        done = pool.activity()
        assert done.busy_since is None
        assert done.last_step >= busy.busy_since
        assert (done.isolating, done.waiting_for_registry) == (0, 0)
    finally:
        await pool.close()


async def test_a_hanging_record_being_isolated_shows_as_isolating() -> None:
    pool = WorkerPool("tests.chaos.chaos_transforms:misbehave", 1, LIMIT, batch_timeout=1.0)
    values: list[bytes | None] = [
        orjson.dumps({"sensor_id": "s", "seq": i, "hang": i == 1}) for i in range(3)
    ]
    try:
        await pool.start()
        task = asyncio.ensure_future(pool.run(values))
        await until(lambda: pool.activity().isolating == 1)
        assert not task.done()
        result = await task
        assert [(i, reason) for i, reason, _ in result.errors] == [(1, "worker_timeout")]
        after = pool.activity()
        assert after.isolating == 0
        assert after.busy_since is None
    finally:
        await pool.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_batch_waiting_for_the_registry_shows_as_waiting() -> None:
    """An Avro record whose schema cannot be fetched (nothing listens): the pool runs the
    batch again and again, counted as waiting; cancelling the batch ends the count."""
    registry = RegistryConfig(f"http://127.0.0.1:{closed_port()}", timeout=0.2, retry_for=0.2)
    formats = FormatSpec(input="avro", output="json", registry=registry)
    pool = WorkerPool("identity", 1, LIMIT, formats=formats)
    record = b"\x00" + struct.pack(">I", 7) + b"\x02"  # Confluent framing, schema id 7
    try:
        await pool.start()
        task = asyncio.ensure_future(pool.run([record]))
        await until(lambda: pool.activity().waiting_for_registry == 1)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.activity().waiting_for_registry == 0
    finally:
        await pool.close()
