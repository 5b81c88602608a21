"""Micro-benchmark of the PostgreSQL sink's write path.

Rows/s of the sink's batched write (COPY into a temporary table, INSERT ... ON CONFLICT DO
NOTHING, several partitions at once over the pool) against alternatives on the same
server, in one run: one awaited INSERT per row on one connection (the naive way),
``executemany`` of a conflict-ignoring INSERT per batch, one INSERT ... SELECT from
``json_populate_recordset`` per batch, and a plain COPY into the table
(the ceiling: no conflict handling, so no replay safety). Each case writes the same
sensor-feature rows into an empty table of its own, dropped at the end.

    python -m stream.bench.sink --dsn-file PATH [--rows 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson

from stream.sink.position import Position
from stream.sink.postgres import PostgresSink, SinkConfig, connect
from stream.sink.rows import Row, rows_for
from stream.sink.schema import Table, init_tables, quote, result_table
from transforms.builtin import SENSOR_FEATURES_SCHEMA, sensor_features

sensor_row: Final = rows_for(SENSOR_FEATURES_SCHEMA)
"""A row of sensor-features' typed table from one of its outputs."""


def bench_rows(count: int, partitions: int) -> list[Row]:
    """``count`` sensor-feature rows (64 readings each), spread over partitions."""
    events = [
        {"sensor_id": f"s-{i % 16}", "seq": i, "ts": 1.7e9 + i, "values": [float(i % 97)] * 64}
        for i in range(count)
    ]
    outputs = sensor_features(events)
    return [
        sensor_row(None, orjson.dumps(out), "bench", i % partitions, i // partitions)
        for i, out in enumerate(outputs)
    ]


async def bench_postgres(
    dsn: str, count: int = 20_000, batch: int = 500, partitions: int = 4, pool_max: int = 4
) -> dict[str, Any]:
    """Run every case once; returns {case: {"rows_per_s", "seconds"}} and the ratios to the
    naive case."""
    rows = bench_rows(count, partitions)
    table = result_table("sensor-features", f"stream_bench_{os.getpid()}")
    config = SinkConfig(dsn, table, pool_min=pool_max, pool_max=pool_max)
    conn = await connect(config)
    await init_tables(conn, table)
    results: dict[str, Any] = {}
    sink = PostgresSink(config)
    await sink.start()  # the pool is opened before the clock starts
    try:
        cases: dict[str, Callable[[], Awaitable[None]]] = {
            "sink": lambda: _sink(sink, rows, batch, partitions),
            "executemany ON CONFLICT": lambda: _executemany(conn, table, rows, batch),
            "json_populate_recordset": lambda: _json_recordset(conn, table, rows, batch),
            "COPY, no conflict handling": lambda: _copy(conn, table, rows, batch),
            "INSERT per row": lambda: _per_row(conn, table, rows),
        }
        for name, case in cases.items():
            await conn.execute(f"TRUNCATE {quote(table.name)}")
            started = time.perf_counter()
            await case()
            seconds = time.perf_counter() - started
            written = await conn.fetchval(f"SELECT count(*) FROM {quote(table.name)}")  # noqa: S608
            if written != count:
                raise AssertionError(f"{name}: {written} rows written, not {count}")
            results[name] = {"rows_per_s": count / seconds, "seconds": seconds}
    finally:
        await sink.close()
        await conn.execute(f"DROP TABLE IF EXISTS {quote(table.name)}")
        await conn.execute("DELETE FROM stream_offsets WHERE group_id = 'stream-bench'")
        await conn.close()
    naive = results["INSERT per row"]["rows_per_s"]
    return {
        "rows": count,
        "batch": batch,
        "partitions": partitions,
        "pool": pool_max,
        "cases": results,
        "ratio_to_insert_per_row": {k: v["rows_per_s"] / naive for k, v in results.items()},
    }


async def _sink(sink: PostgresSink, rows: list[Row], batch: int, partitions: int) -> None:
    """The service's way: each partition claimed, then written in batches, each with the
    partition's next offset in its transaction (both guarantees store it)."""

    async def partition(p: int) -> None:
        mine = [r for r in rows if r[1] == p]
        claim = await sink.claim("stream-bench", "bench", p)
        for i in range(0, len(mine), batch):
            part = mine[i : i + batch]
            position = Position("stream-bench", part[-1][2] + 1, claim.generation)
            await sink.write("bench", p, part, position=position)

    await asyncio.gather(*(partition(p) for p in range(partitions)))


async def _executemany(conn: Any, table: Table, rows: list[Row], batch: int) -> None:
    columns = table.column_names
    marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
    query = (
        f"INSERT INTO {quote(table.name)} ({', '.join(columns)}) "  # noqa: S608
        f"VALUES ({marks}) ON CONFLICT DO NOTHING"
    )
    for i in range(0, len(rows), batch):
        async with conn.transaction():
            await conn.executemany(query, rows[i : i + batch])


async def _json_recordset(conn: Any, table: Table, rows: list[Row], batch: int) -> None:
    """One statement per batch, the rows as one JSON parameter (no temporary table)."""
    columns = table.column_names
    names = ", ".join(columns)
    query = (
        f"INSERT INTO {quote(table.name)} ({names}) SELECT {names} "  # noqa: S608
        f"FROM json_populate_recordset(NULL::{quote(table.name)}, $1::json) "
        "ON CONFLICT DO NOTHING"
    )
    for i in range(0, len(rows), batch):
        records = [dict(zip(columns, row, strict=True)) for row in rows[i : i + batch]]
        await conn.execute(query, orjson.dumps(records).decode())


async def _copy(conn: Any, table: Table, rows: list[Row], batch: int) -> None:
    for i in range(0, len(rows), batch):
        await conn.copy_records_to_table(
            table.bare_name,
            schema_name=table.schema_name,
            records=rows[i : i + batch],
            columns=table.column_names,
        )


async def _per_row(conn: Any, table: Table, rows: list[Row]) -> None:
    columns = table.column_names
    marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
    query = f"INSERT INTO {quote(table.name)} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
    for row in rows:
        await conn.execute(query, *row)


def table(report: dict[str, Any]) -> str:
    """The report as a text table."""
    lines = [
        f"PostgreSQL sink: {report['rows']} sensor-feature rows, batches of {report['batch']}, "
        f"{report['partitions']} partitions, pool of {report['pool']}",
        f"{'case':<28} {'rows/s':>10} {'seconds':>8} {'x per-row':>10}",
    ]
    for name, result in report["cases"].items():
        ratio = report["ratio_to_insert_per_row"][name]
        lines.append(
            f"{name:<28} {result['rows_per_s']:>10,.0f} {result['seconds']:>8.2f} {ratio:>10.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream.bench.sink")
    parser.add_argument("--dsn-file", help="file holding the DSN (else $STREAM_POSTGRES_DSN)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--pool", type=int, default=4, help="the sink's connections")
    args = parser.parse_args(argv)
    if args.dsn_file:
        with open(args.dsn_file, encoding="utf-8") as handle:
            dsn = handle.read().strip()
    else:
        dsn = os.environ.get("STREAM_POSTGRES_DSN", "")
    if not dsn:
        parser.error("give --dsn-file or STREAM_POSTGRES_DSN")
    report = asyncio.run(bench_postgres(dsn, args.rows, args.batch, pool_max=args.pool))
    print(table(report))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
