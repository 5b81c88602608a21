"""What each subcommand does once its settings are parsed: ``stream run``, ``produce``,
``read``, ``topics``, ``lag``, ``bench``, ``try``, ``db``, ``transforms`` and
``lookup-demo``. Each body imports what it needs when it runs, so ``stream --help``
stays fast; each returns the exit code."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from stream.cli_args import settings_from
from stream.config import (
    BenchSettings,
    DbSettings,
    LagSettings,
    ProduceSettings,
    ReadSettings,
    RunSettings,
    TopicsSettings,
    TrySettings,
)
from stream.errors import EXIT_RUNTIME, StreamError
from stream.logs import setup_logging
from stream.options import ConfigError, option_env, option_fields


def cmd_run(args: argparse.Namespace) -> int:
    settings: RunSettings = settings_from(RunSettings, args)
    setup_logging(settings.log_level, settings.log_format)
    from stream.engine import serve  # noqa: PLC0415 - keeps `stream --help` fast

    asyncio.run(serve(settings))
    return 0


def _utc(seconds: float) -> str:
    """An event time as an ISO time in UTC, to the millisecond."""
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cmd_produce(args: argparse.Namespace) -> int:
    settings: ProduceSettings = settings_from(ProduceSettings, args)
    from stream.produce import demo_events, file_events, produce  # noqa: PLC0415

    spans = ""  # the demo events' event times, when --start-time and --event-interval say

    if settings.avro_file:
        from stream.produce import write_avro_file  # noqa: PLC0415

        written = write_avro_file(settings, settings.avro_file)
        print(  # noqa: T201
            f"wrote {written} sensor events ({settings.keys} keys, seed {settings.seed}) to "
            f"{settings.avro_file} (an Avro object container file)"
        )
        return 0
    if settings.file:
        if settings.file == "-":
            events = file_events(sys.stdin.buffer)
            count, seconds = asyncio.run(produce(settings, events))
        else:
            try:
                handle = open(settings.file, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise ConfigError(
                    f"--file: cannot open {settings.file!r}: {exc.strerror}"
                ) from None
            with handle:
                count, seconds = asyncio.run(produce(settings, file_events(handle)))
        what = f"lines from {settings.file}"
    else:
        encode: Callable[[Any], bytes] = orjson.dumps
        if settings.format != "json":
            from stream.produce import demo_encoder  # noqa: PLC0415

            encode = demo_encoder(settings, settings.topic or settings.input_topic)
        events = demo_events(settings, encode=encode)
        count, seconds = asyncio.run(produce(settings, events))
        what = f"{settings.kind} events ({settings.keys} keys, seed {settings.seed})"
        if settings.format != "json":
            what += f" in {settings.format}"
        interval, start = settings.event_interval_ms, settings.start_seconds
        if interval is not None and start is not None and count:
            last = start + (count - 1) * interval / 1000
            spans = f"; event times {_utc(start)} to {_utc(last)}"
    topic = settings.topic or settings.input_topic
    rate = count / seconds if seconds > 0 else 0.0
    print(f"sent {count} {what} to {topic} in {seconds:.2f}s ({rate:,.0f}/s){spans}")  # noqa: T201
    return 0


def cmd_read(args: argparse.Namespace) -> int:
    settings: ReadSettings = settings_from(ReadSettings, args)
    from stream.read import read  # noqa: PLC0415

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        tally = asyncio.run(read(settings, args.topic, write))
    except BrokenPipeError:  # `stream read ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    dead = f", {tally.dead_letters} of them dead letters" if tally.dead_letters else ""
    if settings.count and tally.records >= settings.count:
        sys.stderr.write(f"stopped after {tally.records} records (--count){dead}\n")
    else:
        sys.stderr.write(f"end of {args.topic}: {tally.records} records{dead}\n")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    settings: TopicsSettings = settings_from(TopicsSettings, args)
    from stream.kafka import TopicInfo, create_topics, describe_topics  # noqa: PLC0415

    if args.action == "create":
        created = asyncio.run(
            create_topics(settings, settings.partitions, settings.replication_factor)
        )
        for topic, state in created.items():
            print(f"{topic}: {state}")  # noqa: T201
        return 0
    for info in asyncio.run(describe_topics(settings)):
        if isinstance(info, TopicInfo):
            ends = " ".join(f"{p}:{o}" for p, o in sorted(info.end_offsets.items()))
            print(f"{info.name}: {info.partitions} partitions, end offsets {ends}")  # noqa: T201
        else:
            print(f"{info}: does not exist")  # noqa: T201
    return 0


def cmd_lag(args: argparse.Namespace) -> int:
    settings: LagSettings = settings_from(LagSettings, args)
    from stream.kafka import group_lag  # noqa: PLC0415

    rows = asyncio.run(group_lag(settings, settings.group_id))
    if settings.json:
        data = {
            "group": settings.group_id,
            "topic": settings.input_topic,
            "total_lag": sum(r.lag for r in rows),
            "partitions": [dataclasses.asdict(r) for r in rows],
        }
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())  # noqa: T201
        return 0
    if rows and all(r.committed is None for r in rows):
        # JSON says so with its nulls; a person asking for a table may have mistyped.
        held = sum(r.lag for r in rows)
        raise StreamError(
            f"group {settings.group_id} has no committed offsets on topic "
            f"{settings.input_topic} (does it exist? a service's group is its --group-id); "
            f"the topic holds {held} records"
        )
    table = [("TOPIC", "PARTITION", "COMMITTED", "END", "LAG")]
    for r in rows:
        committed = "-" if r.committed is None else str(r.committed)
        table.append((r.topic, str(r.partition), committed, str(r.end), str(r.lag)))
    table.append(("total", "", "", "", str(sum(r.lag for r in rows))))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells).rstrip())  # noqa: T201
    print(f"group {settings.group_id}")  # noqa: T201
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    settings: BenchSettings = settings_from(BenchSettings, args)
    if settings.quick:
        quick: dict[str, Any] = {"count": 20_000, "case_seconds": 10.0, "latency_seconds": 2.0}
        settings = dataclasses.replace(
            settings, **{k: v for k, v in quick.items() if k not in _given(args)}
        )
    setup_logging("warning")
    from stream import bench  # noqa: PLC0415
    from stream.bench.compare import load_results  # noqa: PLC0415

    # Both files are read before the run, so that a wrong path costs no run.
    previous = load_results(settings.compare) if settings.compare else None
    if settings.results:
        report = load_results(settings.results, "--results")
    else:
        report = asyncio.run(bench.bench(settings))
    print(bench.table(report))  # noqa: T201
    if settings.output:
        bench.save(report, settings.output)
        print(f"raw results: {settings.output}")  # noqa: T201
    if settings.chart:
        if bench.chart(report, settings.chart):
            print(f"chart: {settings.chart}")  # noqa: T201
        else:
            print("no chart: install the 'plot' extra (matplotlib)")  # noqa: T201
    failed = any(r["error"] for r in report["results"])
    if previous is not None and _bench_regressed(settings, previous, report):
        return 1
    return 1 if failed and not settings.results else 0


def _bench_regressed(
    settings: BenchSettings, previous: dict[str, Any], report: dict[str, Any]
) -> bool:
    """Print the comparison with the previous results file; say in one line (stderr)
    which cases regressed, if any."""
    from stream.bench.compare import compare, comparison_lines, regression_line  # noqa: PLC0415

    comparison = compare(
        previous, report, settings.compare_threshold, settings.compare_latency_threshold
    )
    current = settings.results or "this run"
    print("\n".join(comparison_lines(comparison, settings.compare, current)))  # noqa: T201
    line = regression_line(comparison, settings.compare)
    if line:
        sys.stderr.write(f"stream bench: {line}\n")
    return bool(line)


def _given(args: argparse.Namespace) -> set[str]:
    """Options set by flag or environment (so --quick does not override them)."""
    return {
        f.name
        for f in option_fields(BenchSettings)
        if hasattr(args, f.name) or option_env(BenchSettings, f.name) in os.environ
    }


def cmd_try(args: argparse.Namespace) -> int:
    settings: TrySettings = settings_from(TrySettings, args)
    if settings.window:
        from stream.trial_windows import try_windows  # noqa: PLC0415

        return try_windows(settings, sys.stdin.buffer, print)
    from stream.trial import Trial, report_lines, run_file  # noqa: PLC0415
    from transforms import resolve  # noqa: PLC0415

    transform = resolve(settings.transform)

    def trial_of(handle: BinaryIO, name: str) -> Trial:
        return run_file(
            transform,
            handle,
            name=name,
            input_format=settings.input_format,
            max_record_bytes=settings.max_record_bytes,
            max_array_length=settings.max_array_length,
            batch_max_records=settings.batch_max_records,
        )

    if settings.file == "-":
        trial = trial_of(sys.stdin.buffer, "stdin")
    else:
        try:
            handle = open(settings.file, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ConfigError(f"--file: cannot open {settings.file!r}: {exc.strerror}") from None
        with handle:
            trial = trial_of(handle, f"--file {settings.file!r}")
    unit = "record" if settings.input_format == "avro" else "line"
    for line in report_lines(trial, quiet=settings.quiet, unit=unit):
        print(line)  # noqa: T201
    return EXIT_RUNTIME if trial.dead_letters and not settings.allow_dead_letters else 0


def cmd_db(args: argparse.Namespace) -> int:
    settings: DbSettings = settings_from(DbSettings, args)
    from stream.sink.admin import db_init  # noqa: PLC0415 - asyncpg only when needed

    for line in asyncio.run(db_init(settings)):
        print(line)  # noqa: T201
    return 0


def cmd_lookup_demo(args: argparse.Namespace) -> int:
    from stream.config.lookup_demo import LookupDemoSettings  # noqa: PLC0415
    from stream.enrich.demo import serve  # noqa: PLC0415 - aiohttp only when used

    settings: LookupDemoSettings = settings_from(LookupDemoSettings, args)

    def announce(line: str) -> None:
        print(line, flush=True)  # noqa: T201

    return asyncio.run(serve(settings.host, settings.port, announce))


def cmd_transforms(_args: argparse.Namespace) -> int:
    from transforms import available  # noqa: PLC0415

    items = available()
    width = max(len(t.name) for t in items)
    for t in items:
        print(f"{t.name:<{width}}  {t.description}")  # noqa: T201
    print("\nor any package.module:function that takes a list of records")  # noqa: T201
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "produce": cmd_produce,
    "read": cmd_read,
    "topics": cmd_topics,
    "lag": cmd_lag,
    "bench": cmd_bench,
    "db": cmd_db,
    "transforms": cmd_transforms,
    "try": cmd_try,
    "lookup-demo": cmd_lookup_demo,
}
