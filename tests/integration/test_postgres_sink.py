"""The PostgreSQL sink against a real PostgreSQL (tests/postgres.py starts one).

Each test writes to tables of its own, so tests do not see each other's rows.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from stream.bench.sink import sensor_row
from stream.metrics import Metrics, SinkMetrics
from stream.sink.errors import SchemaError, SinkAuthError, SinkFenced, SinkUnavailable
from stream.sink.position import Position
from stream.sink.postgres import PostgresSink, SinkConfig
from stream.sink.rows import Row, generic_row
from stream.sink.schema import Table, check_tables, init_tables, offsets_table, result_table
from tests.helpers import STREAM
from tests.postgres import Server
from transforms.builtin import sensor_features

pytestmark = pytest.mark.postgres


def sensor_rows(count: int, topic: str = "in", partition: int = 0, start: int = 0) -> list[Row]:
    events = [
        {"sensor_id": f"s-{i % 7}", "seq": i, "ts": 1.7e9 + i, "values": [float(i % 5), 2.0, 9.5]}
        for i in range(start, start + count)
    ]
    outputs = sensor_features(events)
    return [
        sensor_row(None, orjson.dumps(out), topic, partition, start + i)
        for i, out in enumerate(outputs)
    ]


@pytest.fixture
def group() -> str:
    """A consumer group of the test's own (the offsets table is shared)."""
    return f"g-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def table_name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


async def connect(dsn: str) -> Any:
    return await asyncpg.connect(dsn)


@pytest.fixture
async def typed(postgres_dsn: str, table_name: str) -> AsyncIterator[Table]:
    table = result_table("sensor-features", table_name)
    conn = await connect(postgres_dsn)
    try:
        await init_tables(conn, table)
    finally:
        await conn.close()
    yield table
    conn = await connect(postgres_dsn)  # a new one: a test may have restarted the server
    try:
        await conn.execute(f'DROP TABLE "{table_name}"')
    finally:
        await conn.close()


@pytest.fixture
async def sink(postgres_dsn: str, typed: Table) -> AsyncIterator[PostgresSink]:
    made = PostgresSink(SinkConfig(postgres_dsn, typed, pool_max=3, retry_deadline=60.0))
    await made.start()
    yield made
    await made.close()


async def fetch(dsn: str, query: str, *args: Any) -> list[Any]:
    conn = await connect(dsn)
    try:
        rows: list[Any] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()


async def count(dsn: str, table: str) -> int:
    rows = await fetch(
        dsn,
        "SELECT count(*), count(DISTINCT (source_topic, source_partition, source_offset)) "
        f'FROM "{table}"',
    )
    total, distinct = rows[0]
    assert total == distinct, "a source offset was written twice"
    return int(total)


class Recorder:
    """A SinkObserver that keeps what it is told."""

    def __init__(self) -> None:
        self.rows = 0
        self.errors: list[str] = []

    def written(self, rows: int, seconds: float) -> None:
        assert seconds >= 0
        self.rows += rows

    def error(self, reason: str) -> None:
        self.errors.append(reason)


_CLAIMS: dict[tuple[int, str, int], int] = {}


async def at(sink: PostgresSink, group: str, partition: int, next_offset: int) -> Position:
    """A write's position under this sink's claim of the partition (claimed once), as
    the engine's sink stage makes it."""
    key = (id(sink), group, partition)
    if key not in _CLAIMS:
        _CLAIMS[key] = (await sink.claim(group, "in", partition)).generation
    return Position(group, next_offset, _CLAIMS[key])


# ---- schema ----------------------------------------------------------------------------------


async def test_init_is_idempotent_and_check_names_what_is_missing(
    postgres_dsn: str, table_name: str
) -> None:
    table = result_table("identity", table_name)
    conn = await connect(postgres_dsn)
    try:
        with pytest.raises(SchemaError, match=table_name):
            await check_tables(conn, table)
        created = await init_tables(conn, table)
        assert table_name in created
        assert await init_tables(conn, table) == []
        await check_tables(conn, table)
        # Concurrent inits (two `stream db init`s at once) do not collide.
        other = result_table("identity", table_name + "_b")
        conns = [await connect(postgres_dsn) for _ in range(3)]
        await asyncio.gather(*(init_tables(c, other) for c in conns))
        for c in conns:
            await c.close()
        await check_tables(conn, other)
        columns = await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0",
            table_name,
        )
        assert [c[0] for c in columns][:5] == [
            "source_topic",
            "source_partition",
            "source_offset",
            "key",
            "value",
        ]
        await conn.execute(f'DROP TABLE "{table_name}", "{table_name}_b"')
    finally:
        await conn.close()


async def test_a_table_of_another_shape_is_named(postgres_dsn: str, table_name: str) -> None:
    conn = await connect(postgres_dsn)
    try:
        await init_tables(conn, result_table("identity", table_name))
        with pytest.raises(SchemaError, match=r"no column\(s\) sensor_id"):
            await check_tables(conn, result_table("sensor-features", table_name))
        await conn.execute(f'DROP TABLE "{table_name}"')
    finally:
        await conn.close()


# ---- rows land -------------------------------------------------------------------------------


async def test_typed_rows_land_with_their_values(
    sink: PostgresSink, postgres_dsn: str, typed: Table
) -> None:
    rows = sensor_rows(50, topic="sensors", partition=3, start=100)
    assert await sink.write("sensors", 3, rows) == []
    got = await fetch(postgres_dsn, f'SELECT * FROM "{typed.name}" ORDER BY source_offset')
    assert len(got) == 50
    for want, have in zip(rows, got, strict=True):
        assert tuple(have) == want
    first = got[0]
    assert (first["source_topic"], first["source_partition"], first["source_offset"]) == (
        "sensors",
        3,
        100,
    )
    assert first["sensor_id"] == "s-2"
    assert first["seq"] == 100
    assert first["n"] == 3
    assert math.isclose(first["mean"], (0.0 + 2.0 + 9.5) / 3)
    assert isinstance(first["peak_bins"], list)
    assert isinstance(first["anomaly"], bool)


async def test_generic_rows_land_as_jsonb(postgres_dsn: str, table_name: str) -> None:
    table = result_table("identity", table_name)
    conn = await connect(postgres_dsn)
    await init_tables(conn, table)
    made = PostgresSink(SinkConfig(postgres_dsn, table))
    await made.start()
    try:
        values = [{"a": i, "nested": {"b": [1, 2.5, None]}, "s": "é"} for i in range(10)]
        rows = [
            generic_row(b"k%d" % i if i % 2 else None, orjson.dumps(v), "in", 1, i)
            for i, v in enumerate(values)
        ]
        assert await made.write("in", 1, rows) == []
        got = await conn.fetch(
            f"SELECT key, value->>'a' AS a, value FROM \"{table_name}\" ORDER BY source_offset"
        )
        assert [r["key"] for r in got] == [b"k%d" % i if i % 2 else None for i in range(10)]
        assert [orjson.loads(r["value"]) for r in got] == values
        assert [r["a"] for r in got] == [str(i) for i in range(10)]
    finally:
        await made.close()
        await conn.execute(f'DROP TABLE "{table_name}"')
        await conn.close()


async def test_replay_adds_no_duplicates(
    sink: PostgresSink, postgres_dsn: str, typed: Table
) -> None:
    rows = sensor_rows(300)
    await sink.write("in", 0, rows[:200])
    await sink.write("in", 0, rows[100:])  # overlaps: 100..199 again
    await sink.write("in", 0, rows)  # all again
    assert await count(postgres_dsn, typed.name) == 300


async def test_batches_of_many_partitions_at_once(
    sink: PostgresSink, postgres_dsn: str, typed: Table, group: str
) -> None:
    batches = [
        (p, sensor_rows(200, partition=p, start=b * 200)) for p in range(4) for b in range(5)
    ]
    positions = [await at(sink, group, p, rows[-1][2] + 1) for p, rows in batches]
    results = await asyncio.gather(
        *(
            sink.write("in", p, rows, position=position)
            for (p, rows), position in zip(batches, positions, strict=True)
        )
    )
    assert all(r == [] for r in results)
    got = await fetch(
        postgres_dsn, f'SELECT source_partition, count(*) FROM "{typed.name}" GROUP BY 1'
    )
    assert dict((r[0], r[1]) for r in got) == {p: 1000 for p in range(4)}
    # Per partition, writes ran in call order: the stored offset is the last batch's.
    for p in range(4):
        assert await sink.stored_offset(group, "in", p) == 1000


# ---- exactly-once ----------------------------------------------------------------------------


async def test_rows_and_offset_in_one_transaction(
    sink: PostgresSink, postgres_dsn: str, typed: Table, group: str
) -> None:
    assert await sink.stored_offset(group, "in", 0) is None
    rows = sensor_rows(20)
    await sink.write("in", 0, rows, position=await at(sink, group, 0, 20))
    assert await sink.stored_offset(group, "in", 0) == 20
    assert await sink.stored_offset("other-group", "in", 0) is None
    more = sensor_rows(5, start=20)
    await sink.write("in", 0, more, position=await at(sink, group, 0, 25))
    assert await sink.stored_offset(group, "in", 0) == 25
    assert await count(postgres_dsn, typed.name) == 25
    # An empty batch moves the offset alone (a partition past transaction markers).
    assert await sink.write("in", 0, [], position=await at(sink, group, 0, 27)) == []
    assert await sink.stored_offset(group, "in", 0) == 27
    sink.forget("in", 0)
    assert (
        await sink.write("in", 0, sensor_rows(3, start=27), position=await at(sink, group, 0, 30))
        == []
    )
    assert await sink.stored_offset(group, "in", 0) == 30
    assert await count(postgres_dsn, typed.name) == 28
    stored = await fetch(
        postgres_dsn, f'SELECT * FROM "{offsets_table(typed)}" WHERE group_id = $1', group
    )
    assert [(r["topic"], r["partition"], r["next_offset"]) for r in stored] == [("in", 0, 30)]


async def test_a_stale_owner_can_neither_move_the_offset_back_nor_write_rows(
    sink: PostgresSink, postgres_dsn: str, typed: Table, group: str
) -> None:
    """Two owners of one partition (a paused process and its successor, in two
    processes): once the new owner claimed the partition, the old one's writes are
    refused whole, whatever offset they carry (issue 20, item 3)."""
    old = await sink.claim(group, "in", 0)
    await sink.write("in", 0, sensor_rows(10), position=Position(group, 10, old.generation))
    successor = PostgresSink(SinkConfig(postgres_dsn, typed))
    await successor.start()
    try:
        new = await successor.claim(group, "in", 0)
        assert (new.next_offset, new.generation > old.generation) == (10, True)
        later = sensor_rows(10, start=10)
        await successor.write("in", 0, later, position=Position(group, 20, new.generation))
        for stale_offset in (15, 5, 40):  # a late write, behind or ahead
            with pytest.raises(SinkFenced, match="another owner claimed"):
                await sink.write(
                    "in",
                    0,
                    sensor_rows(5, start=20),
                    position=Position(group, stale_offset, old.generation),
                )
        assert await successor.stored_offset(group, "in", 0) == 20
        assert await count(postgres_dsn, typed.name) == 20  # none of the stale rows
        # The new owner's offset never moves back either (a replay after a rewind).
        await successor.write("in", 0, later[:3], position=Position(group, 13, new.generation))
        assert await successor.stored_offset(group, "in", 0) == 20
    finally:
        await successor.close()


async def test_a_write_cancelled_midway_leaves_neither_rows_nor_offset(
    sink: PostgresSink, postgres_dsn: str, typed: Table, group: str
) -> None:
    rows = sensor_rows(2000) * 1  # one big batch: its COPY takes a while
    big = rows * 60  # 120,000 rows, offsets repeat: still one transaction
    task = asyncio.create_task(sink.write("in", 0, big, position=await at(sink, group, 0, 2000)))
    await asyncio.sleep(0.15)
    assert not task.done(), "the write finished before it could be cancelled"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await count(postgres_dsn, typed.name) == 0
    assert await sink.stored_offset(group, "in", 0) is None
    # The sink goes on: the same batch again lands whole.
    assert await sink.write("in", 0, rows, position=await at(sink, group, 0, 2000)) == []
    assert await count(postgres_dsn, typed.name) == 2000
    assert await sink.stored_offset(group, "in", 0) == 2000


# ---- refused rows ----------------------------------------------------------------------------


async def test_refused_rows_are_returned_and_the_rest_written(
    sink: PostgresSink, postgres_dsn: str, typed: Table, group: str
) -> None:
    rows = sensor_rows(100)
    bad = list(rows)
    bad[7] = (*rows[7][:8], math.nan, *rows[7][9:])  # std NaN: the table's check refuses it
    bad[42] = (*rows[42][:5], 2**70, *rows[42][6:])  # seq out of bigint's range
    bad[99] = (*rows[99][:6], -5, *rows[99][7:])  # n must be > 0
    refused = await sink.write("in", 0, bad, position=await at(sink, group, 0, 100))
    assert [r.index for r in refused] == [7, 42, 99]
    assert "check constraint" in refused[0].message
    assert "out of range" in refused[1].message or "int" in refused[1].message.lower()
    got = await fetch(postgres_dsn, f'SELECT source_offset FROM "{typed.name}"')
    assert sorted(r[0] for r in got) == [i for i in range(100) if i not in (7, 42, 99)]
    # The offset went with the good rows, in the same transaction.
    assert await sink.stored_offset(group, "in", 0) == 100


async def test_jsonb_with_a_nul_character_is_refused(postgres_dsn: str, table_name: str) -> None:
    table = result_table("identity", table_name)
    conn = await connect(postgres_dsn)
    await init_tables(conn, table)
    made = PostgresSink(SinkConfig(postgres_dsn, table))
    await made.start()
    try:
        rows = [generic_row(None, b'{"a": %d}' % i, "in", 0, i) for i in range(8)]
        rows[3] = generic_row(None, b'{"a": "x\\u0000y"}', "in", 0, 3)
        refused = await made.write("in", 0, rows)
        assert [r.index for r in refused] == [3]
        assert "\\u0000" in refused[0].message
        assert await count(postgres_dsn, table_name) == 7
    finally:
        await made.close()
        await conn.execute(f'DROP TABLE "{table_name}"')
        await conn.close()


# ---- the database goes away ------------------------------------------------------------------


async def test_database_restart_mid_stream_loses_and_duplicates_nothing(
    postgres: Server, postgres_dsn: str, typed: Table, group: str
) -> None:
    if postgres.port is None:
        pytest.fail("this test stops and starts the database: run it with the local server")
    seen = Recorder()
    sink = PostgresSink(SinkConfig(postgres_dsn, typed, pool_max=3, retry_deadline=60.0), seen)
    await sink.start()
    back = asyncio.Event()
    written: dict[int, int] = {0: 0, 1: 0}

    async def writer(p: int) -> None:
        # Batches of 500 until the database has been back for a while.
        while True:
            rows = sensor_rows(500, partition=p, start=written[p])
            refused = await sink.write(
                "in", p, rows, position=await at(sink, group, p, written[p] + 500)
            )
            assert refused == []
            written[p] += 500
            if back.is_set() and written[p] >= after_back[p] + 2000:
                return

    after_back = {0: 0, 1: 0}
    try:
        writing = asyncio.gather(writer(0), writer(1))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(postgres.stop)
        await asyncio.sleep(3.0)
        stalled = dict(written)
        await asyncio.sleep(0.5)
        assert written == stalled, "writes cannot finish while the database is down"
    finally:
        await asyncio.to_thread(postgres.start)
    after_back.update(written)
    back.set()
    await asyncio.wait_for(writing, 60)
    await sink.close()
    assert seen.errors.count("connection") > 0  # writes were retried, not lucky
    total = await count(postgres_dsn, typed.name)
    assert total == written[0] + written[1]
    got = await fetch(
        postgres_dsn,
        f'SELECT source_partition, max(source_offset) FROM "{typed.name}" GROUP BY 1',
    )
    assert {r[0]: r[1] + 1 for r in got} == written
    check = PostgresSink(SinkConfig(postgres_dsn, typed))
    await check.start()
    for p in range(2):
        assert await check.stored_offset(group, "in", p) == written[p]
    await check.close()


async def test_the_retry_deadline_ends_in_one_clear_error(
    postgres: Server, postgres_dsn: str, typed: Table
) -> None:
    if postgres.port is None:
        pytest.fail("this test stops and starts the database: run it with the local server")
    made = PostgresSink(SinkConfig(postgres_dsn, typed, retry_deadline=1.5))
    await made.start()
    try:
        await asyncio.to_thread(postgres.stop)
        try:
            with pytest.raises(SinkUnavailable, match=r"did not answer for 1.5s") as caught:
                await made.write("in", 0, sensor_rows(10))
            assert "\n" not in str(caught.value)
        finally:
            await asyncio.to_thread(postgres.start)
        assert await made.write("in", 0, sensor_rows(10)) == []  # and it recovers
    finally:
        await made.close()


# ---- start-up errors -------------------------------------------------------------------------


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_unreachable_database_is_one_line(typed: Table) -> None:
    dsn = f"postgresql://stream:secret-pw@127.0.0.1:{unused_port()}/stream"
    made = PostgresSink(SinkConfig(dsn, typed, connect_timeout=3))
    with pytest.raises(SinkUnavailable, match="is unreachable") as caught:
        await made.start()
    assert "\n" not in str(caught.value)
    assert "secret-pw" not in str(caught.value)


async def test_wrong_password_is_one_line(postgres_dsn: str, typed: Table) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(postgres_dsn)
    dsn = postgres_dsn.replace(f":{parts.password}@", ":wrong-secret@")
    made = PostgresSink(SinkConfig(dsn, typed))
    with pytest.raises(SinkAuthError, match="password authentication failed") as caught:
        await made.start()
    assert "\n" not in str(caught.value)
    assert "wrong-secret" not in str(caught.value)


async def test_missing_table_is_one_line(postgres_dsn: str) -> None:
    made = PostgresSink(SinkConfig(postgres_dsn, result_table("sensor-features", "no_such_t")))
    with pytest.raises(SchemaError, match="no_such_t missing") as caught:
        await made.start()
    assert "stream db init" in str(caught.value)
    assert "\n" not in str(caught.value)


# ---- the `stream db init` command ------------------------------------------------------------


def stream_db(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREAM, "db", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_db_init_creates_the_tables_once(
    postgres_dsn: str, table_name: str, tmp_path: Path
) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(postgres_dsn + "\n")
    first = stream_db("init", "--postgres-table", table_name, "--postgres-dsn-file", str(dsn_file))
    assert first.returncode == 0, first.stderr
    assert f"{table_name}: created" in first.stdout
    again = stream_db(
        "init", "--postgres-table", table_name, env={"STREAM_POSTGRES_DSN": postgres_dsn}
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"{table_name}: exists", "stream_offsets: exists"]
    generic = stream_db(
        "init",
        "--transform",
        "identity",
        "--postgres-table",
        table_name + "_g",
        env={"STREAM_POSTGRES_DSN": postgres_dsn},
    )
    assert generic.returncode == 0, generic.stderr

    async def drop() -> None:
        conn = await connect(postgres_dsn)
        try:
            types = await conn.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = $1::regclass AND attname IN ('value', 'peak_bins')",
                table_name + "_g",
            )
            assert [tuple(t) for t in types] == [("value", "jsonb")]
            await conn.execute(f'DROP TABLE "{table_name}", "{table_name}_g"')
        finally:
            await conn.close()

    asyncio.run(drop())


def test_db_init_errors_are_one_line_without_the_password(postgres_dsn: str) -> None:
    from urllib.parse import urlsplit

    password = urlsplit(postgres_dsn).password
    wrong = postgres_dsn.replace(f":{password}@", ":not-the-pw@")
    refused = stream_db("init", env={"STREAM_POSTGRES_DSN": wrong})
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "password authentication failed" in refused.stderr
    assert "not-the-pw" not in refused.stderr
    port = unused_port()
    away = stream_db(
        "init",
        "--connect-timeout",
        "3",
        env={"STREAM_POSTGRES_DSN": f"postgresql://u:pw-x@127.0.0.1:{port}/d"},
    )
    assert away.returncode == 1
    assert away.stderr.startswith("stream db: error: PostgreSQL at 127.0.0.1:")
    assert away.stderr.count("\n") == 1
    assert "pw-x" not in away.stderr
    missing = stream_db("init")
    assert missing.returncode == 2
    assert "needs --postgres-dsn" in missing.stderr


async def test_metrics_count_rows_refusals_and_connections(postgres_dsn: str, typed: Table) -> None:
    metrics = Metrics("sensor-features", "in", "out", "in.dlq", sinks=["postgres"])
    observer = SinkMetrics(metrics, "postgres")
    made = PostgresSink(SinkConfig(postgres_dsn, typed, pool_min=2, pool_max=2), observer)
    await made.start()
    observer.watch_pool(made.pool_connections)
    try:
        rows = sensor_rows(10)
        rows[4] = (*rows[4][:6], 0, *rows[4][7:])  # n = 0 breaks a check
        refused = await made.write("in", 0, rows)
        assert [r.index for r in refused] == [4]

        def sample(name: str, **labels: str) -> float | None:
            return metrics.registry.get_sample_value(name, {"sink": "postgres", **labels})

        assert sample("stream_sink_rows_written_total") == 9
        assert sample("stream_sink_errors_total", reason="sink_refused") == 1
        assert sample("stream_sink_write_duration_seconds_count") == 1
        assert sample("stream_sink_pool_connections", state="idle") == 2
        assert sample("stream_sink_pool_connections", state="in_use") == 0
    finally:
        await made.close()
    assert made.pool_connections() == (0, 0)
