"""What a worker does with a batch (in-process), and the pool of worker processes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import worker
from stream.errors import PoolError
from stream.pool import WorkerPool
from stream.worker import BatchResult, process_batch

HERE = __name__  # "tests.unit.test_worker": user transforms below are resolved by import path
LIMIT = 1 << 20


# --- user transforms, resolved as "tests.unit.test_worker:<name>" -------------------------------


def fail_on_boom(records: Sequence[Any]) -> list[Any]:
    """Raise for the whole batch if any record asks for it (a buggy user transform)."""
    for record in records:
        if isinstance(record, dict) and record.get("boom") is True:
            raise ValueError("boom!")
    return [{"seen": record} for record in records]


def die_on_flag(records: Sequence[Any]) -> list[Any]:
    """Kill the worker process outright, as a segfault or the OOM killer would."""
    for record in records:
        if isinstance(record, dict) and record.get("die") is True:
            os._exit(1)
    return list(records)


def drop_one(records: Sequence[Any]) -> list[Any]:
    """Return one result too few when the batch has more than one record."""
    return list(records)[: max(1, len(records) - 1)]


def unencodable(records: Sequence[Any]) -> list[Any]:
    """An output orjson cannot encode, for records that ask for it."""
    return [object() if record == "opaque" else record for record in records]


# --- helpers ----------------------------------------------------------------------------------


def sensor(sensor_id: str, values: list[float] | None = None, **extra: Any) -> bytes:
    body = {"sensor_id": sensor_id, "ts": 1700000000.5, "values": values or [1.0, 2.0, 4.0, 8.0]}
    return orjson.dumps({**body, **extra})


def reasons(result: BatchResult) -> dict[int, str]:
    return {index: reason for index, reason, _ in result.errors}


def outputs(result: BatchResult, values: list[bytes | None] | None = None) -> list[bytes | None]:
    """The per-record outputs; a passthrough result (identity) needs its inputs."""
    if result.outputs is None:
        assert values is not None, "a passthrough result has no outputs of its own"
        return result.materialize(values)
    return result.outputs


def check_shape(result: BatchResult, size: int, values: list[bytes | None] | None = None) -> None:
    """Batch length kept; errors sorted by index; outputs None exactly where errors are."""
    assert len(outputs(result, values)) == size
    indices = [index for index, _, _ in result.errors]
    assert indices == sorted(indices)
    assert len(set(indices)) == len(indices)
    for index, output in enumerate(outputs(result, values)):
        assert (output is None) == (index in indices), index
    for _, reason, message in result.errors:
        assert reason
        assert len(message) <= 500


# --- process_batch ----------------------------------------------------------------------------


def test_good_sensor_events() -> None:
    values: list[bytes | None] = [
        sensor(f"s-{i}", [float(i), 1.0, 2.0, 3.0, 5.0], seq=i) for i in range(5)
    ]
    result = process_batch("sensor-features", values, LIMIT)
    check_shape(result, 5)
    assert result.errors == []
    assert result.pid == os.getpid()
    assert result.seconds >= 0
    for i, output in enumerate(outputs(result)):
        assert output is not None
        decoded = orjson.loads(output)
        assert isinstance(decoded, dict)
        assert decoded["sensor_id"] == f"s-{i}"
        assert decoded["seq"] == i
        assert decoded["n"] == 5
        assert decoded["min"] == min(float(i), 1.0)
        assert decoded["max"] == 5.0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b'{"sensor_id": "a", "ts": 1, "values": [1, 2,]}', "invalid_json"),
        (b"   ", "invalid_json"),
        (b"\xff\xfe\x00", "invalid_utf8"),
        (b'{"sensor_id": "caf\xc3\x28"}', "invalid_utf8"),
        (b"", "empty"),
        (None, "empty"),
        (b"[1, 2, 3]", "schema"),
        (b'"just a string"', "schema"),
        (b'{"sensor_id": 5, "ts": 1, "values": [1.0]}', "schema"),
        (b'{"sensor_id": "a", "ts": 1}', "schema"),
        (b'{"sensor_id": "a", "ts": 1, "values": ["x"]}', "schema"),
    ],
)
def test_bad_record_reasons(value: bytes | None, reason: str) -> None:
    values = [sensor("before"), value, sensor("after")]
    result = process_batch("sensor-features", values, LIMIT)
    check_shape(result, 3)
    assert reasons(result) == {1: reason}
    # The neighbours are unaffected.
    first, last = outputs(result)[0], outputs(result)[2]
    assert first is not None
    assert last is not None
    assert orjson.loads(first)["sensor_id"] == "before"
    assert orjson.loads(last)["sensor_id"] == "after"


def test_too_large() -> None:
    value = sensor("big", [1.0] * 100)
    limit = len(value)
    at_limit = process_batch("sensor-features", [value], limit)
    assert at_limit.errors == []  # exactly the limit is allowed
    over = process_batch("sensor-features", [value, sensor("small")], limit - 1)
    check_shape(over, 2)
    assert reasons(over) == {0: "too_large"}
    assert str(limit) in over.errors[0][2]


@pytest.mark.parametrize(
    "value",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b"[" * 10_000,  # deep and unterminated
    ],
)
def test_deeply_nested_json_is_a_bad_record(value: bytes) -> None:
    result = process_batch("sensor-features", [sensor("ok"), value], LIMIT)
    check_shape(result, 2)
    assert reasons(result) == {1: "invalid_json"}
    assert outputs(result)[0] is not None


def test_mixed_batch_errors_sorted_and_outputs_aligned() -> None:
    values: list[bytes | None] = [
        sensor("a"),
        b"nope",
        None,
        sensor("d"),
        b"[]",
        sensor("f"),
        b"\x80",
        b"",
        sensor("i"),
    ]
    result = process_batch("sensor-features", values, LIMIT)
    check_shape(result, len(values))
    assert reasons(result) == {
        1: "invalid_json",
        2: "empty",
        4: "schema",
        6: "invalid_utf8",
        7: "empty",
    }
    ids = {i: orjson.loads(o)["sensor_id"] for i, o in enumerate(outputs(result)) if o is not None}
    assert ids == {0: "a", 3: "d", 5: "f", 8: "i"}


def test_empty_batch() -> None:
    result = process_batch("identity", [], LIMIT)
    assert result.outputs is None  # identity passes its (no) records through
    assert result.materialize([]) == []
    assert result.errors == []


def test_user_transform_that_raises_fails_only_its_record() -> None:
    spec = f"{HERE}:fail_on_boom"
    values: list[bytes | None] = [orjson.dumps({"n": n, "boom": n == 2}) for n in range(5)]
    result = process_batch(spec, values, LIMIT)
    check_shape(result, 5)
    assert reasons(result) == {2: "transform_error"}
    assert "ValueError: boom!" in result.errors[0][2]
    for n, output in enumerate(outputs(result)):
        if n != 2:
            assert output is not None
            assert orjson.loads(output) == {"seen": {"n": n, "boom": False}}


def test_user_transform_with_the_wrong_result_count() -> None:
    result = process_batch(f"{HERE}:drop_one", [b"1", b"2", b"3"], LIMIT)
    check_shape(result, 3)
    # The batch call is bad; record by record it is fine.
    assert result.errors == []
    assert [orjson.loads(o) for o in outputs(result) if o is not None] == [1, 2, 3]


def test_output_that_cannot_be_encoded() -> None:
    result = process_batch(f"{HERE}:unencodable", [b'"fine"', b'"opaque"', b"3"], LIMIT)
    check_shape(result, 3)
    assert reasons(result) == {1: "encode_error"}


def test_unknown_transform_raises() -> None:
    from transforms import UnknownTransformError

    with pytest.raises(UnknownTransformError, match="no_such_function"):
        process_batch(f"{HERE}:no_such_function", [b"1"], LIMIT)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.none(),
            st.binary(max_size=40),
            st.builds(
                sensor,
                st.text(max_size=8),
                st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=8),
            ),
        ),
        max_size=25,
    )
)
def test_batch_shape_property(values: list[bytes | None]) -> None:
    result = process_batch("sensor-features", values, 64)
    check_shape(result, len(values))
    for index, value in enumerate(values):
        if not value:
            assert reasons(result)[index] == "empty"
        elif len(value) > 64:
            assert reasons(result)[index] == "too_large"


# --- the pool ---------------------------------------------------------------------------------


@pytest.fixture
def blas_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool sets OMP_NUM_THREADS & co. in os.environ; undo that after the test."""
    for name in worker.BLAS_THREAD_VARS:
        monkeypatch.setenv(name, os.environ.get(name, "1"))


@pytest.mark.usefixtures("blas_env")
async def test_pool_runs_a_batch() -> None:
    pool = WorkerPool("identity", 1, LIMIT)
    try:
        pids = await pool.start()
        assert len(pids) == 1
        assert pids[0] != os.getpid()
        assert pool.alive == 1
        values: list[bytes | None] = [orjson.dumps({"k": i}) for i in range(10)]
        values.append(b"{bad")
        result = await pool.run(values)
        check_shape(result, 11, values)
        assert result.pid == pids[0]
        assert reasons(result) == {10: "invalid_json"}
        assert result.outputs is None  # identity: the inputs are not shipped back
        assert outputs(result, values)[:10] == values[:10]
        assert pool.restarts == 0
    finally:
        await pool.close()
    assert pool.alive == 0
    with pytest.raises(PoolError):
        await pool.run([b"1"])


@pytest.mark.usefixtures("blas_env")
async def test_a_pool_that_failed_to_start_closes_cleanly() -> None:
    """The service closes its pool on the way out of a failed start: that must not raise
    over the start's own error (a traceback instead of one line)."""
    pool = WorkerPool(f"{HERE}:no_such_transform", 2, LIMIT)
    with pytest.raises(PoolError, match="no_such_transform"):
        await pool.start()
    await pool.close()
    assert pool.alive == 0


async def _run_with_killers(
    culprits: set[int], size: int, workers: int = 1
) -> tuple[WorkerPool, BatchResult]:
    pool = WorkerPool(f"{HERE}:die_on_flag", workers, LIMIT, max_attempts=2)
    try:
        await pool.start()
        values: list[bytes | None] = [
            orjson.dumps({"i": i, "die": i in culprits}) for i in range(size)
        ]
        result = await pool.run(values)
        # The pool still works after all those restarts.
        after = await pool.run([b'{"i": 99}'])
        assert after.errors == []
        assert outputs(after) == [orjson.dumps({"i": 99})]
        # A worker killed by the last try is replaced by its thread after the batch is
        # answered: give it the time a start takes.
        for _ in range(600):  # up to 30 s
            if pool.alive == workers:
                break
            await asyncio.sleep(0.05)
        assert pool.alive == workers
    finally:
        await pool.close()
    return pool, result


def _check_only_the_culprits_failed(result: BatchResult, culprits: set[int], size: int) -> None:
    check_shape(result, size)
    assert reasons(result) == dict.fromkeys(culprits, "worker_crash")
    for i, output in enumerate(outputs(result)):
        if i not in culprits:
            assert output is not None
            assert orjson.loads(output) == {"i": i, "die": False}


@pytest.mark.usefixtures("blas_env")
async def test_pool_single_record_that_kills_the_worker() -> None:
    pool, result = await _run_with_killers({0}, size=1)
    assert outputs(result) == [None]
    assert reasons(result) == {0: "worker_crash"}
    assert "died" in result.errors[0][2]
    assert pool.restarts >= pool.max_attempts  # every try killed a worker


# Records queued behind the culprit must not be blamed for its crashes: the culprit first,
# in the middle and last, two culprits, and two workers.
@pytest.mark.usefixtures("blas_env")
@pytest.mark.parametrize(
    ("workers", "size", "culprits"),
    [
        (1, 4, {0}),
        (1, 4, {1}),
        (1, 4, {2}),
        (1, 4, {3}),
        (1, 8, {1, 6}),
        (2, 8, {5}),
    ],
)
async def test_pool_isolates_records_that_kill_the_worker(
    workers: int, size: int, culprits: set[int]
) -> None:
    pool, result = await _run_with_killers(culprits, size, workers)
    assert pool.restarts > 0
    _check_only_the_culprits_failed(result, culprits, size)


@pytest.mark.usefixtures("blas_env")
async def test_a_hanging_record_in_a_full_batch_is_isolated_in_a_few_deadlines() -> None:
    """500 records, one hangs: the first try overruns, the probe names the record when it
    overruns again, and the rest goes on. Without the probe, halving took ~12 deadlines."""
    deadline = 1.0
    pool = WorkerPool("tests.chaos.chaos_transforms:misbehave", 1, LIMIT, batch_timeout=deadline)
    values: list[bytes | None] = [
        orjson.dumps({"sensor_id": "s", "seq": i, "hang": i == 321}) for i in range(500)
    ]
    try:
        await pool.start()
        started = time.monotonic()
        result = await pool.run(values)
        elapsed = time.monotonic() - started
    finally:
        await pool.close()
    assert reasons(result) == {321: "worker_timeout"}
    good = [o for o in result.materialize(values) if o is not None]
    assert [orjson.loads(o)["seq"] for o in good] == [i for i in range(500) if i != 321]
    # Two deadlines and a worker's restart; halving would take ~12 deadlines. The bound
    # leaves room for restarts on a loaded machine without letting halving pass.
    assert elapsed < 6 * deadline, elapsed


@pytest.mark.usefixtures("blas_env")
async def test_closing_the_pool_ends_a_hung_worker_at_once() -> None:
    pool = WorkerPool("tests.chaos.chaos_transforms:misbehave", 1, LIMIT, batch_timeout=60)
    await pool.start()
    pid = pool.pids()[0]
    job = asyncio.ensure_future(
        pool.run([orjson.dumps({"sensor_id": "s", "seq": 0, "hang": True})])
    )
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await pool.close()
    assert time.monotonic() - started < 8
    assert pool.alive == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    job.cancel()
