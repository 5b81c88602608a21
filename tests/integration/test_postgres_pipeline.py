"""The PostgreSQL sink end to end: `stream run --sink postgres` on a real broker and a real
PostgreSQL, as users run it (tables made by `stream db init`).

Each test writes to a table of its own (named after its topics) under a group of its own,
so tests do not see each other's rows or offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from stream.config import ProduceSettings
from stream.produce import demo_events, produce
from tests.dashboard import dashboard_metric_names
from tests.helpers import (
    FAST_REJOIN,
    STREAM,
    Service,
    Topics,
    end_offsets,
    feed_demo,
    get,
    metrics_url,
    read_topic,
    send,
    start_service,
    wait_caught_up,
)
from tests.postgres import Server
from tests.prometheus import samples
from transforms import resolve

pytestmark = pytest.mark.broker


def table_of(topics: Topics) -> str:
    """The test's own table: its topics' name, as an SQL identifier."""
    return "r_" + topics.group.removeprefix("g-").replace("-", "_")


def db_init(dsn: str, table: str, transform: str = "sensor-features") -> None:
    done = subprocess.run(
        [STREAM, "db", "init", "--postgres-table", table, "--transform", transform],
        env={**os.environ, "STREAM_POSTGRES_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{table}: created" in done.stdout, done.stdout


@pytest.fixture
async def table(topics: Topics, postgres_dsn: str) -> AsyncIterator[str]:
    name = table_of(topics)
    db_init(postgres_dsn, name)
    yield name
    conn = await asyncpg.connect(postgres_dsn)  # a new one: a test may restart the server
    try:
        await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        await conn.execute("DELETE FROM stream_offsets WHERE group_id = $1", topics.group)
    finally:
        await conn.close()


async def fetch(dsn: str, query: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[Any] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()


async def row_count(dsn: str, table: str) -> int:
    rows = await fetch(dsn, f'SELECT count(*) FROM "{table}"')
    return int(rows[0][0])


async def wait_rows(dsn: str, table: str, count: int, service: Service, wait: float = 180) -> int:
    """Until the table holds ``count`` rows (or ``wait`` seconds pass); the rows it holds."""
    deadline = time.monotonic() + wait
    have = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            have = await row_count(dsn, table)
        if have >= count or service.process.poll() is not None:
            break
        await asyncio.sleep(0.25)
    return have


async def positions(dsn: str, table: str) -> list[tuple[int, int]]:
    """Every row's (source_partition, source_offset), duplicates kept."""
    rows = await fetch(
        dsn,
        f'SELECT source_partition, source_offset FROM "{table}"',
    )
    return [(int(r[0]), int(r[1])) for r in rows]


async def input_positions(topics: Topics) -> set[tuple[int, int]]:
    ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
    return {(p, o) for p, end in ends.items() for o in range(end)}


async def assert_each_input_once(dsn: str, table: str, topics: Topics) -> None:
    """Every input record is one row: no position missing, none twice, none unknown."""
    have = await positions(dsn, table)
    want = await input_positions(topics)
    assert len(have) == len(set(have)), "a source position has more than one row"
    missing = sorted(want - set(have))
    assert missing == [], f"{len(missing)} inputs have no row, e.g. {missing[:5]}"
    assert set(have) == want


async def stored_offsets(dsn: str, topics: Topics) -> dict[int, int]:
    rows = await fetch(
        dsn,
        "SELECT partition, next_offset FROM stream_offsets WHERE group_id = $1 AND topic = $2",
        topics.group,
        topics.input,
    )
    return {int(r[0]): int(r[1]) for r in rows}


def sink_options(dsn: str, table: str, *sinks: str) -> tuple[str, ...]:
    return (
        "--sink",
        ",".join(sinks) or "postgres",
        "--postgres-table",
        table,
        "--postgres-dsn",
        dsn,
        "--workers",
        "2",
    )


async def feed_at(topics: Topics, count: int, rate: float, seed: int) -> None:
    """Produce ``count`` demo events at ``rate`` per second (the service runs meanwhile)."""
    settings = ProduceSettings(
        bootstrap_servers=topics.bootstrap,
        input_topic=topics.input,
        count=count,
        seed=seed,
        keys=32,
        rate=rate,
        quiet=True,
    )
    sent, _ = await produce(settings, demo_events(settings))
    assert sent == count


# ---- 1. end to end --------------------------------------------------------------------------


async def test_exactly_once_rows_hold_the_transforms_values_and_the_offsets(
    topics: Topics, services: list[Service], postgres_dsn: str, table: str
) -> None:
    count = 3000
    events = await feed_demo(topics, count, seed=3)
    options = sink_options(postgres_dsn, table, "postgres")
    service = start_service(
        topics, "--transform", "sensor-features", "--guarantee", "exactly-once", *options
    )
    services.append(service)
    assert await wait_rows(postgres_dsn, table, count, service) == count, service.log()
    assert await wait_caught_up(topics), service.log()
    assert service.terminate() == 0, service.log()

    await assert_each_input_once(postgres_dsn, table, topics)
    # The values: the transform run in-process on the same events, matched by (sensor, seq).
    expected = {
        (out["sensor_id"], out["seq"]): out for out in resolve("sensor-features").fn(events)
    }
    rows = await fetch(postgres_dsn, f'SELECT * FROM "{table}"')
    assert len(rows) == count
    for row in rows:
        want = expected.pop((row["sensor_id"], row["seq"]))
        assert row["source_topic"] == topics.input
        assert row["n"] == want["n"]
        assert row["ts"] == pytest.approx(want["ts"])
        for name in ("mean", "std", "min", "max", "zscore"):
            assert row[name] == pytest.approx(want[name], abs=1e-9), name
        assert list(row["peak_bins"]) == want["peak_bins"]
        assert row["anomaly"] is want["anomaly"]
    assert expected == {}, "every event has its row"
    # The database holds each partition's next offset: the end of the input.
    ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
    assert await stored_offsets(postgres_dsn, topics) == ends
    # Nothing went to Kafka's output topic with the PostgreSQL sink alone.
    assert await read_topic(topics.bootstrap, topics.output, 0) == []  # it has stopped


async def test_kafka_and_postgres_at_least_once_every_input_is_a_row_and_a_record(
    topics: Topics, services: list[Service], postgres_dsn: str, table: str
) -> None:
    count = 3000
    await feed_demo(topics, count, seed=4)
    options = sink_options(postgres_dsn, table, "kafka", "postgres")
    service = start_service(topics, "--transform", "sensor-features", *options)
    services.append(service)
    records = await read_topic(topics.bootstrap, topics.output, count, wait=180)
    assert await wait_rows(postgres_dsn, table, count, service) == count, service.log()
    assert await wait_caught_up(topics), service.log()
    # Every sink series the dashboard reads is exported by a service with a sink.
    status, body = await asyncio.to_thread(get, metrics_url(service))
    assert status == 200
    exported = samples(body.decode())
    sink_names = {name for name in dashboard_metric_names() if name.startswith("stream_sink_")}
    assert len(sink_names) >= 4, sink_names
    assert sorted(sink_names - exported.keys()) == []
    assert exported["stream_sink_rows_written_total"] >= count
    assert exported["stream_sink_write_duration_seconds_count"] > 0
    assert service.terminate() == 0, service.log()

    await assert_each_input_once(postgres_dsn, table, topics)
    assert len(records) == count
    # The same outputs in both sinks: the Kafka record of each (sensor, seq) is its row.
    outputs = {}
    for record in records:
        value = orjson.loads(record.value)
        assert record.key.decode() == value["sensor_id"]
        outputs[(value["sensor_id"], value["seq"])] = value
    assert len(outputs) == count
    rows = await fetch(postgres_dsn, f'SELECT sensor_id, seq, n, mean, std FROM "{table}"')
    for row in rows:
        value = outputs.pop((row["sensor_id"], row["seq"]))
        assert (row["n"], row["mean"], row["std"]) == (value["n"], value["mean"], value["std"])
    assert outputs == {}
    # At-least-once stores each partition's next offset with its rows too (the start
    # when Kafka has no committed offset for the group, whichever guarantee ran).
    ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
    assert await stored_offsets(postgres_dsn, topics) == ends


# ---- 2. chaos: SIGKILL mid-stream -----------------------------------------------------------


async def kill_and_restart(
    topics: Topics,
    services: list[Service],
    *,
    dsn: str,
    table: str,
    count: int,
    options: tuple[str, ...],
    kills: int,
) -> None:
    """Feed ``count`` events at a steady rate while SIGKILLing the service (its process
    group) ``kills`` times at random row counts, restarting it each time; then let the
    last one finish."""
    rng = random.Random(os.environ.get("STREAM_CHAOS_SEED", "postgres-chaos"))
    moments = sorted(rng.uniform(0.1, 0.8) for _ in range(kills))
    feeding = asyncio.create_task(feed_at(topics, count, rate=count / 20, seed=21))
    try:
        service = start_service(topics, *options)
        services.append(service)
        for moment in moments:
            have = await wait_rows(dsn, table, int(moment * count), service, wait=120)
            assert have >= int(moment * count), service.log()
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            service.kill()
            service = start_service(topics, *options)
            services.append(service)
        await feeding
    finally:
        if not feeding.done():
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
    assert await wait_rows(dsn, table, count, service, wait=240) == count, service.log()
    assert await wait_caught_up(topics, wait=120), service.log()
    assert service.terminate() == 0, service.log()


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
async def test_sigkill_three_times_every_input_is_one_row(
    topics: Topics, services: list[Service], postgres_dsn: str, table: str, guarantee: str
) -> None:
    count = 4000
    options = (
        "--transform",
        "sensor-features",
        "--guarantee",
        guarantee,
        *FAST_REJOIN,
        *sink_options(postgres_dsn, table, "postgres"),
    )
    await kill_and_restart(
        topics, services, dsn=postgres_dsn, table=table, count=count, options=options, kills=3
    )
    assert len(services) == 4
    await assert_each_input_once(postgres_dsn, table, topics)
    if guarantee == "exactly-once":
        ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
        assert await stored_offsets(postgres_dsn, topics) == ends


# ---- 3. the database goes away and comes back -----------------------------------------------


async def test_postgres_stopped_for_20s_mid_stream_nothing_lost_or_doubled(
    topics: Topics, services: list[Service], postgres: Server, postgres_dsn: str, table: str
) -> None:
    count = 3000
    options = sink_options(postgres_dsn, table, "postgres")
    service = start_service(
        topics, "--transform", "sensor-features", "--guarantee", "exactly-once", *options
    )
    services.append(service)
    service.wait_for("assigned partitions")
    # Fed for 25 s: the 20 s outage starts after ~4 s (500 rows), input arrives throughout.
    feeding = asyncio.create_task(feed_at(topics, count, rate=count / 25, seed=31))
    try:
        assert await wait_rows(postgres_dsn, table, 500, service) >= 500, service.log()
        await asyncio.to_thread(postgres.stop)
        try:
            await asyncio.sleep(20)
            assert service.process.poll() is None, service.log()
        finally:
            await asyncio.to_thread(postgres.start)
        await feeding
    finally:
        if not feeding.done():
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
    assert await wait_rows(postgres_dsn, table, count, service) == count, service.log()
    assert await wait_caught_up(topics), service.log()
    assert service.process.poll() is None, "the service kept running through the outage"
    assert "retrying" in service.log()
    assert service.terminate() == 0, service.log()
    await assert_each_input_once(postgres_dsn, table, topics)
    ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
    assert await stored_offsets(postgres_dsn, topics) == ends


# ---- 4. a row the database refuses ----------------------------------------------------------


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
async def test_refused_row_is_a_dead_letter_and_the_rest_is_written(
    topics: Topics, services: list[Service], postgres_dsn: str, guarantee: str
) -> None:
    name = table_of(topics)
    db_init(postgres_dsn, name, transform="identity")
    try:
        good = [(f"k{i}".encode(), orjson.dumps({"id": i, "note": f"fine {i}"})) for i in range(60)]
        # Valid JSON, but jsonb has no place for the NUL character.
        bad = (b"k-nul", b'{"id": -1, "note": "a\\u0000b"}')
        await send(topics.bootstrap, topics.input, [*good[:30], bad, *good[30:]])
        service = start_service(
            topics,
            "--transform",
            "identity",
            "--guarantee",
            guarantee,
            *sink_options(postgres_dsn, name, "postgres"),
        )
        services.append(service)
        dead = await read_topic(topics.bootstrap, topics.dlq, 1, wait=120)
        assert await wait_rows(postgres_dsn, name, len(good), service) == len(good)
        assert await wait_caught_up(topics), service.log()
        assert service.terminate() == 0, service.log()

        assert len(dead) == 1
        letter = dead[0]
        headers = {key: value.decode() for key, value in letter.headers}
        assert (letter.key, letter.value) == bad
        assert headers["stream.error.reason"] == "sink_refused"
        assert "unsupported Unicode escape sequence" in headers["stream.error.message"]
        rows = await fetch(postgres_dsn, f'SELECT key, value FROM "{name}"')
        assert sorted(bytes(r["key"]) for r in rows) == sorted(k for k, _ in good)
        assert all(orjson.loads(r["value"])["id"] >= 0 for r in rows)
    finally:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
            await conn.execute("DELETE FROM stream_offsets WHERE group_id = $1", topics.group)
        finally:
            await conn.close()


# ---- 5. start-up errors ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def with_password(dsn: str, password: str) -> str:
    scheme, rest = dsn.split("://", 1)
    credentials, where = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}:{password}@{where}"


def with_port(dsn: str, port: int) -> str:
    head, tail = dsn.rsplit("@", 1)
    host_port, database = tail.split("/", 1)
    return f"{head}@{host_port.rsplit(':', 1)[0]}:{port}/{database}"


@pytest.mark.parametrize("case", ["unreachable", "wrong password", "missing table"])
async def test_start_up_errors_are_one_line_and_exit_1(
    topics: Topics, postgres_dsn: str, case: str
) -> None:
    secret = "Not-The-Password-7391"  # noqa: S105 - a wrong one, on purpose
    table = table_of(topics)
    if case == "unreachable":
        dsn, expect = with_password(with_port(postgres_dsn, free_port()), secret), "unreachable"
    elif case == "wrong password":
        dsn, expect = with_password(postgres_dsn, secret), "refused the connection"
    else:
        table += "_never_created"
        dsn, expect = postgres_dsn, f"{table} missing"
    done = await asyncio.to_thread(
        subprocess.run,
        [
            STREAM,
            "run",
            *topics.options(),
            "--group-id",
            topics.group,
            "--metrics-port",
            "0",
            "--sink",
            "postgres",
            "--postgres-table",
            table,
            "--connect-timeout",
            "5",
        ],
        env={**os.environ, "STREAM_POSTGRES_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1, done.stderr
    assert expect in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    assert secret not in done.stderr
    assert dsn not in done.stderr
