"""Switching the delivery guarantee of a group that writes to PostgreSQL (issue 20,
item 2): clean restarts replay nothing in either guarantee, whatever the group ran
before. The engine runs in-process (the CLI is not what is tested) on a real broker and
a real PostgreSQL; the outputs also go to Kafka, where a replay would show as a
duplicate."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from stream.config import RunSettings
from stream.config.service import Guarantee
from stream.engine import Engine
from tests.helpers import STREAM, Topics, feed_demo, read_topic, wait_caught_up

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

PER_RUN = 200


@pytest.fixture
async def table(topics: Topics, postgres_dsn: str) -> AsyncIterator[str]:
    name = "s_" + topics.group.removeprefix("g-").replace("-", "_")
    done = await asyncio.to_thread(
        subprocess.run,
        [STREAM, "db", "init", "--postgres-table", name],
        env={**os.environ, "STREAM_POSTGRES_DSN": postgres_dsn},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    yield name
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        await conn.execute("DELETE FROM stream_offsets WHERE group_id = $1", topics.group)
    finally:
        await conn.close()


async def run_until_caught_up(topics: Topics, dsn: str, table: str, guarantee: Guarantee) -> None:
    """One run of the service: start, process everything, stop cleanly."""
    engine = Engine(
        RunSettings(
            bootstrap_servers=topics.bootstrap,
            input_topic=topics.input,
            output_topic=topics.output,
            dlq_topic=topics.dlq,
            group_id=topics.group,
            guarantee=guarantee,
            sink="kafka,postgres",
            postgres_dsn=dsn,
            postgres_table=table,
            workers=1,
            metrics_port=0,
            stats_interval=0,
        )
    )
    task = asyncio.create_task(engine.run())
    try:
        await asyncio.wait_for(engine.assigned.wait(), 60)  # the group's coordinator is up
        assert await wait_caught_up(topics, wait=90), f"{guarantee}: did not catch up"
    finally:
        engine.stop()
        await asyncio.wait_for(task, 60)


async def rows(dsn: str, table: str) -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(f'SELECT source_partition, source_offset FROM "{table}"'))
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "order",
    [
        ("exactly-once", "at-least-once", "at-least-once", "exactly-once"),
        ("at-least-once", "exactly-once", "at-least-once", "exactly-once"),
    ],
    ids=["eos-alo-alo-eos", "alo-eos-alo-eos"],
)
async def test_switching_the_guarantee_replays_nothing(
    order: tuple[Guarantee, ...], topics: Topics, postgres_dsn: str, table: str
) -> None:
    produced = 0
    for run, guarantee in enumerate(order):
        await feed_demo(topics, PER_RUN, seed=run + 1, first_seq_from=produced)
        produced += PER_RUN
        await run_until_caught_up(topics, postgres_dsn, table, guarantee)
        outputs = await read_topic(topics.bootstrap, topics.output, produced, wait=30)
        seen = [(r.partition, r.key, orjson.loads(r.value)["seq"]) for r in outputs]
        assert len(seen) == len(set(seen)), f"run {run + 1} ({guarantee}) replayed records"
        assert len(seen) == produced
        written = await rows(postgres_dsn, table)
        assert len(written) == produced
