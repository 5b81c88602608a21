"""The designs `stream bench` compares our service against, each a small program.

Run as ``python -m stream.bench.engines ENGINE ...`` by the benchmark, in a process
group of its own so that its CPU time and memory can be measured like the
service's. Each consumes the input topic in a consumer group, writes one output
per input under the input's key, and commits; none has a dead-letter topic or the
service's other duties, so they are fast baselines, not products.

- ``ceiling``: raw bytes in, the same bytes out, no decoding: the client's I/O ceiling.
- ``naive``: one ``run_in_executor`` call on a process pool per record, then one
  ``send()`` per result (the per-message design of most tutorials).
- ``batched``: batches of records to an executor that is ``inline`` (on the event
  loop), a ``thread`` pool or a ``process`` pool: the classic executor comparison.
- ``per-row``: the per-row database design: each record transformed on the event loop,
  then one awaited ``INSERT`` into the sink's table on one connection (DSN from
  ``$STREAM_POSTGRES_DSN``, table from ``--table``), offsets committed per fetch.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from stream import worker
from stream.config import RunSettings
from stream.kafka import KafkaClients, Sent, make_producer, start_client

_MAX_BYTES = 1 << 20


def warm_up(spec: str) -> int:
    """Load the transform (and numpy) in an executor's process before the clock starts;
    returns that process's pid."""
    worker.load_transform(spec)
    return os.getpid()


def _one(spec: str, value: bytes | None) -> bytes | None:
    """The naive design's unit of work: one record, decoded, transformed and encoded."""
    return _batch(spec, [value])[0]


def _batch(spec: str, values: list[bytes | None]) -> list[bytes | None]:
    return worker.process_batch(spec, values, _MAX_BYTES).materialize(values)


async def run(args: argparse.Namespace) -> None:
    settings = RunSettings(
        bootstrap_servers=args.bootstrap_servers,
        input_topic=args.input_topic,
        output_topic=args.output_topic,
        group_id=args.group_id,
        workers=args.workers,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    executor: Executor | None = None
    if args.engine == "naive" or args.executor == "process":
        for name in worker.BLAS_THREAD_VARS:
            os.environ.setdefault(name, "1")
        executor = ProcessPoolExecutor(
            args.workers,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=worker.init_worker,
        )
    elif args.executor == "thread":
        executor = ThreadPoolExecutor(args.workers)
    clients = KafkaClients(settings)
    consumer = await clients.consumer()
    producer = await clients.producer()
    raw = make_producer(settings, linger_ms=5)  # the naive design sends record by record
    await start_client(raw, settings)
    assigned = asyncio.Event()

    async def on_assigned(_: set[Any]) -> None:
        assigned.set()

    async def on_revoked(_: set[Any]) -> None:
        return None

    consumer.subscribe(settings.input_topic, on_assigned, on_revoked)
    if executor is not None:  # start the workers before the clock starts
        await asyncio.gather(
            *(loop.run_in_executor(executor, warm_up, args.transform) for _ in range(8))
        )
    step = _STEPS[args.engine if args.engine != "batched" else f"batched-{args.executor}"]
    previous: tuple[list[asyncio.Future[Any]], dict[Any, int]] | None = None
    announced = False
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100, max_records=args.batch * 8)
            if assigned.is_set() and not announced:
                sys.stderr.write("engine ready\n")
                sys.stderr.flush()
                announced = True
            futures: list[asyncio.Future[Any]] = []
            offsets: dict[Any, int] = {}
            for tp, records in fetched.items():
                futures += await step(
                    args, executor, raw if args.engine == "naive" else producer, list(records)
                )
                offsets[tp] = records[-1].offset + 1
            # Pipelined: while this round's records are on their way, commit the last one's.
            if previous is not None:
                await asyncio.gather(*previous[0])
                if previous[1]:
                    await consumer.commit(previous[1])
            previous = (futures, offsets)
        if previous is not None:
            await asyncio.gather(*previous[0])
            if previous[1]:
                await consumer.commit(previous[1])
    finally:
        await consumer.stop()
        await producer.stop()
        await raw.stop()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


Step = Callable[[argparse.Namespace, Executor | None, Any, list[Any]], Any]


async def _ceiling(
    args: argparse.Namespace, _executor: Executor | None, producer: Any, records: list[Any]
) -> list[asyncio.Future[Any]]:
    return _futures(
        await producer.send(args.output_topic, [(r.key, r.value, None, None) for r in records])
    )


async def _naive(
    args: argparse.Namespace, executor: Executor | None, producer: Any, records: list[Any]
) -> list[asyncio.Future[Any]]:
    loop = asyncio.get_running_loop()
    outputs = await asyncio.gather(
        *(loop.run_in_executor(executor, _one, args.transform, r.value) for r in records)
    )
    futures = []
    for record, output in zip(records, outputs, strict=True):
        if output is not None:
            futures.append(await producer.send(args.output_topic, output, key=record.key))
    return futures


async def _batched(
    args: argparse.Namespace, executor: Executor | None, producer: Any, records: list[Any]
) -> list[asyncio.Future[Any]]:
    loop = asyncio.get_running_loop()
    chunks = [records[i : i + args.batch] for i in range(0, len(records), args.batch)]
    if executor is None:  # inline, on the event loop
        results = [_batch(args.transform, [r.value for r in chunk]) for chunk in chunks]
    else:
        results = await asyncio.gather(
            *(
                loop.run_in_executor(executor, _batch, args.transform, [r.value for r in chunk])
                for chunk in chunks
            )
        )
    out = [
        (r.key, value, None, None)
        for chunk, values in zip(chunks, results, strict=True)
        for r, value in zip(chunk, values, strict=True)
        if value is not None
    ]
    return _futures(await producer.send(args.output_topic, out))


def _futures(sent: list[Sent]) -> list[asyncio.Future[Any]]:
    return [s.future for s in sent]


_STEPS: dict[str, Step] = {
    "ceiling": _ceiling,
    "naive": _naive,
    "batched-inline": _batched,
    "batched-thread": _batched,
    "batched-process": _batched,
}


async def per_row(args: argparse.Namespace) -> None:
    """The per-row design: one awaited INSERT per record, on one connection."""
    import asyncpg  # noqa: PLC0415 - only this engine needs the database

    from stream.sink.rows import RowError, row_builder  # noqa: PLC0415
    from stream.sink.schema import quote, result_table  # noqa: PLC0415

    settings = RunSettings(
        bootstrap_servers=args.bootstrap_servers,
        input_topic=args.input_topic,
        output_topic=args.output_topic,
        group_id=args.group_id,
    )
    table = result_table(args.transform, args.table)
    columns = table.column_names
    marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
    insert = (
        f"INSERT INTO {quote(table.name)} ({', '.join(columns)}) "  # noqa: S608 - checked
        f"VALUES ({marks}) ON CONFLICT DO NOTHING"
    )
    build = row_builder(args.transform)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    conn = await asyncpg.connect(os.environ["STREAM_POSTGRES_DSN"])
    consumer = await KafkaClients(settings).consumer()
    assigned = asyncio.Event()

    async def on_assigned(_: set[Any]) -> None:
        assigned.set()

    async def on_revoked(_: set[Any]) -> None:
        return None

    consumer.subscribe(settings.input_topic, on_assigned, on_revoked)
    announced = False
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100, max_records=args.batch)
            if assigned.is_set() and not announced:
                sys.stderr.write("engine ready\n")
                sys.stderr.flush()
                announced = True
            offsets: dict[Any, int] = {}
            for tp, records in fetched.items():
                for r in records:
                    output = _one(args.transform, r.value)
                    if output is None:
                        continue
                    try:
                        row = build(r.key, output, tp.topic, tp.partition, r.offset)
                    except RowError:
                        continue
                    await conn.execute(insert, *row)
                offsets[tp] = records[-1].offset + 1
            if offsets:
                await consumer.commit(offsets)
    finally:
        await consumer.stop()
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream.bench.engines")
    parser.add_argument("engine", choices=["ceiling", "naive", "batched", "per-row"])
    parser.add_argument("--executor", choices=["inline", "thread", "process"], default="process")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--transform", default="identity")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--table", default="", help="per-row: the sink's table")
    args = parser.parse_args(argv)
    asyncio.run(per_row(args) if args.engine == "per-row" else run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
