"""The `stream` command: a thin layer that parses options and calls the service.

Bad input ends in one line on stderr and a non-zero exit (2 for usage and
configuration, 1 for a runtime failure), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, NoReturn

import orjson

from stream import __version__
from stream.config import (
    GROUPS,
    BenchSettings,
    DbSettings,
    LagSettings,
    ProduceSettings,
    RunSettings,
    TopicsSettings,
    TrySettings,
)
from stream.errors import StreamError
from stream.options import (
    ConfigError,
    env_name,
    flag_name,
    load,
    option_env,
    option_fields,
    shown_default,
)

EXIT_RUNTIME = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage block."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _add_options(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """The options of ``cls`` as flags, one --help section per group."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"TOML file of options (env: {env_name('config')})",
    )
    fields = option_fields(cls)
    named = [g for g in GROUPS if any(f.metadata["group"] == g for f in fields)]
    sections: dict[str, argparse._ArgumentGroup] = {}
    if any(not f.metadata["group"] for f in fields):
        sections[""] = parser.add_argument_group(f"{parser.prog} options")
    for name in named:
        sections[name] = parser.add_argument_group(name)
    for f in fields:
        _add_option(sections[f.metadata["group"]], cls, f)


def _add_option(
    section: argparse._ArgumentGroup, cls: type[Any], f: dataclasses.Field[Any]
) -> None:
    meta = f.metadata
    default = shown_default(f)
    shown = f" (default: {default})" if default else ""
    help_text = f"{meta['help']}{shown} [env: {option_env(cls, f.name)}]"
    choices = getattr(meta["parse"], "choices", None)
    if f.type == "bool":
        # --flag and --no-flag, so a flag can also undo the environment or config file.
        yes, no = flag_name(f.name), "--no-" + flag_name(f.name)[2:]
        pair = section.add_mutually_exclusive_group()
        pair.add_argument(
            yes,
            dest=f.name,
            action="store_const",
            const="true",
            default=argparse.SUPPRESS,
            help=f"{help_text}; {no} turns it off",
        )
        pair.add_argument(
            no,
            dest=f.name,
            action="store_const",
            const="false",
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
        return
    section.add_argument(
        flag_name(f.name),
        dest=f.name,
        metavar=meta["metavar"] or ("{" + ",".join(choices) + "}" if choices else None),
        default=argparse.SUPPRESS,
        help=help_text,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stream",
        description="A Kafka stream processor: input topic -> worker processes -> output topic.",
        epilog="Every option also reads STREAM_<OPTION>; precedence: flag > environment > "
        "--config file > default.",
    )
    parser.add_argument("--version", action="version", version=f"stream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    commands: list[tuple[str, str, type[Any]]] = [
        ("run", "run the service until SIGTERM/SIGINT", RunSettings),
        (
            "produce",
            "send demo events (or JSON lines from a file) to the input topic",
            ProduceSettings,
        ),
        ("topics", "create or describe the input, output and dead-letter topics", TopicsSettings),
        (
            "lag",
            "a consumer group's committed offset, end offset and lag per partition",
            LagSettings,
        ),
        (
            "bench",
            "benchmark the service against baselines on the configured broker",
            BenchSettings,
        ),
        (
            "try",
            "run JSON lines or an Avro container file through a transform, in this process "
            "(no broker)",
            TrySettings,
        ),
        ("db", "create the PostgreSQL sink's tables (idempotent)", DbSettings),
    ]
    for name, help_text, settings in commands:
        usage = f"stream {name}{' {create,describe}' if name == 'topics' else ''} [options]"
        command = sub.add_parser(name, help=help_text, formatter_class=_Formatter, usage=usage)
        if name == "topics":
            command.add_argument("action", choices=["create", "describe"])
        if name == "db":
            command.add_argument("action", choices=["init"])
        _add_options(command, settings)

    sub.add_parser("transforms", help="list the built-in transforms")
    return parser


def _settings(cls: type[Any], args: argparse.Namespace) -> Any:
    """The command's settings from its flags, the environment and the config file, resolved
    (files named by options checked and read) when the class has that step."""
    given = {f.name: getattr(args, f.name) for f in option_fields(cls) if hasattr(args, f.name)}
    settings = load(cls, given, config_file=getattr(args, "config", None))
    resolve = getattr(settings, "resolve", None)
    return resolve() if resolve is not None else settings


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every retry and rebalance step at INFO; its warnings are enough, and
    # while the broker is away, once per kind of message per interval.
    aiokafka = logging.getLogger("aiokafka")
    aiokafka.setLevel(max(logging.WARNING, root.level))
    handler.addFilter(RepeatFilter(prefix="aiokafka"))


_STARTING = re.compile(r"Coordinator(NotAvailable|LoadInProgress)|NotCoordinator")


class RepeatFilter(logging.Filter):
    """Let one record per (logger, message template) through per interval; say how many
    were held back when the next one passes."""

    def __init__(self, prefix: str, interval: float = 10.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.interval = interval
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        if record.levelno >= logging.ERROR and _STARTING.search(record.getMessage()):
            # A broker that is starting its group coordinator says so; that is normal,
            # not an error (aiokafka retries, and the service waits for its assignment).
            record.levelno, record.levelname = logging.INFO, "INFO"
        key = (record.name, str(record.msg))
        if len(self._seen) > 1000:
            self._seen.clear()
        last, held = self._seen.get(key, (0.0, 0))
        if record.created - last < self.interval:
            self._seen[key] = (last, held + 1)
            return False
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self.interval:g}s)"
        self._seen[key] = (record.created, 0)
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


# ---- commands ------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    settings: RunSettings = _settings(RunSettings, args)
    setup_logging(settings.log_level, settings.log_format)
    from stream.engine import serve  # noqa: PLC0415 - keeps `stream --help` fast

    asyncio.run(serve(settings))
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    settings: ProduceSettings = _settings(ProduceSettings, args)
    from stream.produce import demo_events, file_events, produce  # noqa: PLC0415

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
            from stream.formats.setup import demo_encoder  # noqa: PLC0415

            encode = demo_encoder(settings, settings.topic or settings.input_topic)
        events = demo_events(settings, encode=encode)
        count, seconds = asyncio.run(produce(settings, events))
        what = f"{settings.kind} events ({settings.keys} keys, seed {settings.seed})"
        if settings.format != "json":
            what += f" in {settings.format}"
    topic = settings.topic or settings.input_topic
    rate = count / seconds if seconds > 0 else 0.0
    print(f"sent {count} {what} to {topic} in {seconds:.2f}s ({rate:,.0f}/s)")  # noqa: T201
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    settings: TopicsSettings = _settings(TopicsSettings, args)
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
    settings: LagSettings = _settings(LagSettings, args)
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
    settings: BenchSettings = _settings(BenchSettings, args)
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
    settings: TrySettings = _settings(TrySettings, args)
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
    settings: DbSettings = _settings(DbSettings, args)
    from stream.sink.admin import db_init  # noqa: PLC0415 - asyncpg only when needed

    for line in asyncio.run(db_init(settings)):
        print(line)  # noqa: T201
    return 0


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
    "topics": cmd_topics,
    "lag": cmd_lag,
    "bench": cmd_bench,
    "db": cmd_db,
    "transforms": cmd_transforms,
    "try": cmd_try,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (the console script exits with it)."""
    # User transforms given as package.module:function are looked up from here, as
    # `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    prog = f"stream {args.command}"
    from transforms import UnknownTransformError  # noqa: PLC0415

    try:
        return COMMANDS[args.command](args)
    except StreamError as exc:
        _say(prog, exc)
        return exc.exit_code
    except UnknownTransformError as exc:
        _say(prog, exc)
        return EXIT_USAGE
    except OSError as exc:
        _say(prog, exc)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130


def _say(prog: str, exc: BaseException) -> None:
    text = str(exc) or type(exc).__name__
    sys.stderr.write(f"{prog}: error: {text}\n")


if __name__ == "__main__":
    sys.exit(main())
