"""`stream bench`: measure designs against each other on one broker, in one run.

Every case runs as its own process group (the service, or a baseline from
:mod:`stream.bench.engines`) against the same pre-filled input topic, so the
ratios between cases hold on this machine and broker. Per case:

- throughput: outputs over the time from the first to the last output (output
  topics use LogAppendTime: the broker's clock, when it acknowledged them);
- latency: a fresh topic fed at a fixed rate (by default half the case's measured
  throughput); per key, the k-th output answers the k-th input, and its latency is
  its LogAppendTime minus the input's CreateTime;
- peak resident memory and CPU time per record of the whole process group (the
  service and its workers together), sampled from /proc while it runs.

The ``sink`` cases (with ``--postgres-dsn``) write to PostgreSQL instead: the service
with ``--sink postgres`` and the per-row design (one awaited INSERT per record). Their
throughput is rows over the time from the first to the last row written (each case's
table gets a ``written_at`` column defaulting to the database's clock); they have no
latency run.

The ``io`` group measures I/O-bound work: ``IO_REQUESTS`` GETs that a local server
answers after ``LOOKUP_DELAY`` seconds, through threads, processes and asyncio
(:mod:`stream.enrich.bench`, in a process of its own), then the service with
enrichment against that server, with a cold cache (every record its own URL) and with
99% cache hits (a URL per sensor, one sensor per 100 records), beside the same service
without enrichment on the same input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream import __version__
from stream.config import BenchSettings, ProduceSettings
from stream.errors import StreamError
from stream.produce import demo_events, produce

FORMATS = ("avro", "protobuf")  # the schema formats, each a case beside sensor-features

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

IO_REQUESTS = 1000  # GETs per client in the io baselines
LOOKUP_DELAY = 0.05  # seconds the lookup server takes to answer
LOOKUP_CONCURRENCY = 100  # --enrich-concurrency of the enrichment cases
LOOKUP_SENSORS = 100  # records per distinct sensor in the io group's input (99% cache hits)


@dataclass(frozen=True)
class Case:
    name: str
    payload: str  # "sensor", "matrix", "sensor-avro" / "sensor-protobuf" (sensor events
    # framed), or "lookup" (sensor events, a sensor per 100)
    command: list[str]  # after the common connection options are added
    group: str  # what the case belongs to in the table
    service: bool = True
    sink: bool = False  # writes rows to PostgreSQL, counted from its table
    enrich: str = ""  # --enrich-url path on the lookup server, if the case enriches


@dataclass
class Result:
    name: str
    group: str
    records: int = 0
    seconds: float = 0.0
    records_per_s: float = 0.0
    mb_per_s: float = 0.0
    cpu_us_per_record: float = 0.0
    peak_rss_mb: float = 0.0
    offered_rate: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    ratio_to_naive: float | None = None
    ratio_to_ceiling: float | None = None
    error: str = ""


# ---- measuring a process group ---------------------------------------------------------------


def group_usage(pgid: int) -> tuple[float, int]:
    """(CPU seconds, resident bytes) of every live process in a process group."""
    cpu, rss = 0.0, 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) != pgid:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
        rss += int(fields[21]) * PAGE
    return cpu, rss


class Sampler:
    """Samples a process group's CPU and memory every 0.1 s, with wall-clock times."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.samples: list[tuple[float, float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            cpu, rss = group_usage(self.pgid)
            self.samples.append((time.time(), cpu, rss))
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def cpu_between(self, start: float, end: float) -> float:
        times = [s[0] for s in self.samples]
        cpus = [s[1] for s in self.samples]
        if len(times) < 2:
            return 0.0
        return float(np.interp(end, times, cpus) - np.interp(start, times, cpus))

    @property
    def peak_rss(self) -> int:
        return max((s[2] for s in self.samples), default=0)


# ---- the bench ------------------------------------------------------------------------------


class Bench:
    def __init__(self, settings: BenchSettings) -> None:
        self.s = settings
        self.cpus = os.cpu_count() or 1
        self.run_id = uuid.uuid4().hex[:8]
        self.topics: list[str] = []
        self.matrix_size = settings.matrix_size
        self.lookup_base = ""  # the lookup server's http://host:port, while it runs

    def say(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    # -- topics --

    def topic(self, name: str) -> str:
        full = f"bench-{self.run_id}-{name}"
        self.topics.append(full)
        return full

    async def create(self, *names: str, log_append_time: bool = False) -> None:
        from stream.bench.topics import new_topic  # noqa: PLC0415
        from stream.kafka import admin_client  # noqa: PLC0415

        configs = {"message.timestamp.type": "LogAppendTime"} if log_append_time else {}
        self.topics += [name for name in names if name not in self.topics]
        async with admin_client(self.s) as admin:
            await admin.create_topics(
                [new_topic(name, self.s.partitions, 1, configs) for name in names]
            )

    async def cleanup(self) -> None:
        from stream.kafka import admin_client  # noqa: PLC0415

        if not self.topics:
            return
        async with admin_client(self.s) as admin:
            with contextlib.suppress(Exception):
                await admin.delete_topics(self.topics)

    async def fill(self, topic: str, payload: str, count: int, rate: float = 0.0) -> int:
        """Demo events of a payload into ``topic``; a ``sensor-<format>`` payload is sensor
        events in that format, their schema registered under ``<topic>-value``."""
        values = max(8, self.s.payload // 20)  # a float in JSON is about 20 bytes
        kind, _, fmt = payload.partition("-")
        lookup = payload == "lookup"
        settings = ProduceSettings(
            bootstrap_servers=self.s.bootstrap_servers,
            input_topic=topic,
            kind="sensor" if lookup else kind,
            count=count,
            rate=rate,
            seed=self.s.seed,
            values=values,
            matrix_size=self.matrix_size,
            keys=max(1, count // LOOKUP_SENSORS) if lookup else 64,
            quiet=True,
            format=fmt or "json",  # type: ignore[arg-type]
            schema_registry_url=self.s.schema_registry_url if fmt else "",
        )
        if not fmt:
            sent, _ = await produce(settings, demo_events(settings))
            return sent
        from stream.formats.setup import demo_encoder  # noqa: PLC0415 - formats only when used

        encode = await asyncio.to_thread(demo_encoder, settings, topic)
        sent, _ = await produce(settings, demo_events(settings, encode=encode))
        return sent

    # -- cases --

    def cases(self) -> list[Case]:
        service = [sys.executable, "-m", "stream.cli", "run"]
        engine = [sys.executable, "-m", "stream.bench.engines"]
        all_cores = str(self.cpus)
        cases = [
            Case("ceiling", "sensor", [*engine, "ceiling"], "baselines", service=False),
            Case(
                "naive",
                "sensor",
                [*engine, "naive", "--transform", "sensor-features", "--workers", all_cores],
                "baselines",
                service=False,
            ),
            Case("identity", "sensor", [*service, "--transform", "identity"], "pipeline"),
            Case(
                "sensor-features",
                "sensor",
                [*service, "--transform", "sensor-features"],
                "pipeline",
            ),
        ]
        if self.s.quick:
            return cases
        cases += self.format_cases(service)
        # Right after its at-least-once twin, before the matrix cases load the broker
        # with gigabytes: the two guarantees are compared on the same footing.
        cases.append(
            Case(
                "sensor-features, exactly-once",
                "sensor",
                [*service, "--transform", "sensor-features", "--guarantee", "exactly-once"],
                "guarantees",
            )
        )
        sensor = ["--transform", "sensor-features"]
        cases += [
            Case("sink-per-row", "sensor", [*engine, "per-row", *sensor], "sink", False, True),
            Case(
                "sensor-features-postgres",
                "sensor",
                [*service, *sensor, "--sink", "postgres"],
                "sink",
                sink=True,
            ),
        ]
        matrix = ["--transform", "matrix-inverse"]
        cases += [
            Case("matrix-inverse", "matrix", [*service, *matrix], "pipeline"),
            Case(
                "matrix-inverse, 1 worker",
                "matrix",
                [*service, *matrix, "--workers", "1"],
                "scaling",
            ),
        ]
        for executor in ("inline", "thread", "process"):
            cases.append(
                Case(
                    f"matrix-inverse, batched {executor}",
                    "matrix",
                    [*engine, "batched", "--executor", executor, *matrix, "--workers", all_cores],
                    "executors",
                    service=False,
                )
            )
        features = [*service, "--transform", "sensor-features"]
        enrich = [*features, "--enrich-concurrency", str(LOOKUP_CONCURRENCY)]
        cases += [
            Case("lookups: no enrichment", "lookup", features, "io"),
            Case(
                "lookups: enrich, cold cache",
                "lookup",
                enrich,
                "io",
                enrich="/sensors/{sensor_id}-{seq}",  # every record its own URL
            ),
            Case(
                "lookups: enrich, 99% cache hits",
                "lookup",
                enrich,
                "io",
                enrich="/sensors/{sensor_id}",  # one sensor per LOOKUP_SENSORS records
            ),
        ]
        wanted = {c.strip() for c in self.s.cases.split(",") if c.strip()}
        if not self.s.schema_registry_url and (not wanted or "formats" in wanted):
            self.say(
                "formats cases skipped: they need a Schema Registry "
                "(--schema-registry-url or STREAM_BENCH_SCHEMA_REGISTRY_URL)"
            )
        chosen = [c for c in cases if not wanted or c.name in wanted or c.group in wanted]
        if not self.s.postgres_dsn and any(c.sink for c in chosen):
            self.say("sink cases skipped: give --postgres-dsn (or STREAM_BENCH_POSTGRES_DSN)")
            chosen = [c for c in chosen if not c.sink]
        return chosen

    def sink_table(self, case: Case) -> str:
        return f"bench_{self.run_id}_{_slug(case.name).replace('-', '_')}"

    def format_cases(self, service: list[str]) -> list[Case]:
        """sensor-features with Avro or Protobuf in and out, input pre-filled in that
        format: their cost per record against the JSON case beside them."""
        url = self.s.schema_registry_url
        if not url:
            return []
        return [
            Case(
                f"sensor-features-{fmt}",
                f"sensor-{fmt}",
                [
                    *service,
                    "--transform",
                    "sensor-features",
                    "--input-format",
                    fmt,
                    "--output-format",
                    fmt,
                    "--schema-registry-url",
                    url,
                ],
                "formats",
            )
            for fmt in FORMATS
        ]

    def command(self, case: Case, input_topic: str, output_topic: str, group: str) -> list[str]:
        common = [
            "--bootstrap-servers",
            self.s.bootstrap_servers,
            "--input-topic",
            input_topic,
            "--output-topic",
            output_topic,
            "--group-id",
            group,
        ]
        if case.enrich:
            common += ["--enrich-url", self.lookup_base + case.enrich]
        if case.service:
            dlq = output_topic + ".dlq"
            return [*case.command, *common, "--dlq-topic", dlq, "--metrics-port", "0"]
        return [*case.command, *common]

    async def start(self, command: list[str], ready: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(  # noqa: S603, ASYNC220 - our own command; returns at once
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, "STREAM_STATS_INTERVAL": "0", **self.sink_env()},
        )
        assert process.stderr is not None
        deadline = time.monotonic() + 120
        loop = asyncio.get_running_loop()
        log: list[bytes] = []
        while time.monotonic() < deadline:
            line = await loop.run_in_executor(None, process.stderr.readline)
            if not line:
                break
            log.append(line)
            if ready.encode() in line:
                # Keep draining its stderr so that it never blocks on a full pipe.
                loop.run_in_executor(None, _drain, process.stderr)
                return process
        self.stop_group(process)
        raise RuntimeError("the case did not start:\n" + b"".join(log[-20:]).decode())

    def sink_env(self) -> dict[str, str]:
        """The DSN for the sink cases, by environment (a flag's value is visible to all)."""
        return {"STREAM_POSTGRES_DSN": self.s.postgres_dsn} if self.s.postgres_dsn else {}

    def stop_group(self, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # any worker left behind

    async def throughput(self, case: Case, input_topic: str, count: int, result: Result) -> None:
        from stream.bench.topics import read_all  # noqa: PLC0415

        output = self.topic(f"{_slug(case.name)}-out")
        await self.create(output, output + ".dlq", log_append_time=True)
        group = f"bench-{self.run_id}-{_slug(case.name)}"
        ready = "assigned partitions" if case.service else "engine ready"
        process = await self.start(self.command(case, input_topic, output, group), ready)
        sampler = Sampler(process.pid)
        sampler.start()
        try:
            await _wait_outputs(self.s, output, count, self.s.case_seconds)
        finally:
            await sampler.stop()
            await asyncio.to_thread(self.stop_group, process)
        records = await read_all(self.s, output)
        if len(records) < 2:
            raise RuntimeError(f"{case.name}: only {len(records)} outputs")
        stamps = sorted(r.timestamp for r in records)
        first, last = stamps[0] / 1000, stamps[-1] / 1000
        seconds = max(1e-3, last - first)
        done = len(records) - 1  # records finished after the first one
        result.records = len(records)
        result.seconds = seconds
        result.records_per_s = done / seconds
        result.mb_per_s = result.records_per_s * self.payload_bytes[case.payload] / 1e6
        result.cpu_us_per_record = sampler.cpu_between(first, last) / done * 1e6
        result.peak_rss_mb = sampler.peak_rss / 1e6

    async def sink_throughput(
        self, case: Case, input_topic: str, count: int, result: Result
    ) -> None:
        """Rows/s of a case writing to PostgreSQL: rows over the time from the first row
        written to the last, by the database's clock."""
        from stream.sink.postgres import SinkConfig, connect  # noqa: PLC0415
        from stream.sink.schema import init_tables, quote, result_table  # noqa: PLC0415

        name = self.sink_table(case)
        table = result_table("sensor-features", name)
        conn = await connect(SinkConfig(self.s.postgres_dsn, table))
        try:
            await init_tables(conn, table)
            await conn.execute(
                f"ALTER TABLE {quote(name)} ADD COLUMN written_at timestamptz "
                "NOT NULL DEFAULT clock_timestamp()"
            )
            output = self.topic(f"{_slug(case.name)}-out")
            await self.create(output, output + ".dlq")
            group = f"bench-{self.run_id}-{_slug(case.name)}"
            table_option = ["--postgres-table", name] if case.service else ["--table", name]
            command = [*self.command(case, input_topic, output, group), *table_option]
            ready = "assigned partitions" if case.service else "engine ready"
            process = await self.start(command, ready)
            sampler = Sampler(process.pid)
            sampler.start()
            try:
                deadline = time.monotonic() + self.s.case_seconds
                while time.monotonic() < deadline:
                    if await conn.fetchval(f"SELECT count(*) FROM {quote(name)}") >= count:  # noqa: S608
                        break
                    await asyncio.sleep(0.2)
            finally:
                await sampler.stop()
                await asyncio.to_thread(self.stop_group, process)
            rows, first, last = await conn.fetchrow(
                "SELECT count(*), extract(epoch FROM min(written_at))::float8, "  # noqa: S608
                f"extract(epoch FROM max(written_at))::float8 FROM {quote(name)}"
            )
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {quote(name)}")
            await conn.close()
        if rows < 2:
            raise RuntimeError(f"{case.name}: only {rows} rows written")
        seconds = max(1e-3, last - first)
        done = rows - 1  # rows written after the first one
        result.records = rows
        result.seconds = seconds
        result.records_per_s = done / seconds
        result.mb_per_s = result.records_per_s * self.payload_bytes[case.payload] / 1e6
        result.cpu_us_per_record = sampler.cpu_between(first, last) / done * 1e6
        result.peak_rss_mb = sampler.peak_rss / 1e6

    async def latency(self, case: Case, result: Result) -> None:
        from stream.bench.topics import read_all  # noqa: PLC0415

        rate = self.s.rate or max(1.0, result.records_per_s * self.s.load)
        count = max(50, int(rate * self.s.latency_seconds))
        result.offered_rate = rate
        input_topic = self.topic(f"{_slug(case.name)}-lat-in")
        output = self.topic(f"{_slug(case.name)}-lat-out")
        await self.create(input_topic)
        await self.create(output, output + ".dlq", log_append_time=True)
        group = f"bench-{self.run_id}-{_slug(case.name)}-lat"
        ready = "assigned partitions" if case.service else "engine ready"
        process = await self.start(self.command(case, input_topic, output, group), ready)
        try:
            await asyncio.sleep(0.5)
            await self.fill(input_topic, case.payload, count, rate=rate)
            await _wait_outputs(self.s, output, count, 60)
        finally:
            await asyncio.to_thread(self.stop_group, process)
        inputs = await read_all(self.s, input_topic)
        outputs = await read_all(self.s, output)
        sent: dict[bytes | None, list[int]] = defaultdict(list)
        for r in sorted(inputs, key=lambda r: (r.partition, r.offset)):
            sent[r.key].append(r.timestamp)
        latencies = []
        for key, stamps in _per_key(outputs).items():
            latencies += [(out - inp) / 1000 for inp, out in zip(sent[key], stamps, strict=False)]
        if not latencies:
            raise RuntimeError(f"{case.name}: no outputs in the latency run")
        ms = np.array(latencies) * 1000
        result.latency_ms = {
            "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()),
        }

    async def io_baselines(self) -> tuple[list[dict[str, Any]], str]:
        """The io group's clients (threads, processes, asyncio), in a process of their own:
        (their rows, or an error)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stream.enrich.bench",
            "--requests",
            str(IO_REQUESTS),
            "--delay",
            str(LOOKUP_DELAY),
            "--json",
            "--no-loop-cost",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            return [], err.decode(errors="replace")[-2000:] or f"exit {process.returncode}"
        rows: list[dict[str, Any]] = json.loads(out)["io"]
        return rows, ""

    async def run(self) -> dict[str, Any]:
        cases = self.cases()
        with contextlib.ExitStack() as stack:
            io: list[dict[str, Any]] = []
            io_error = ""
            if any(c.group == "io" for c in cases):
                self.say(f"io: {IO_REQUESTS:,} requests through threads, processes, asyncio")
                io, io_error = await self.io_baselines()
                if any(c.enrich for c in cases):
                    from stream.enrich.bench import SlowServer  # noqa: PLC0415 - aiohttp

                    self.lookup_base = stack.enter_context(SlowServer(LOOKUP_DELAY))
            report = await self._run(cases)
        if io or io_error:
            report["io"] = io
            report["io_error"] = io_error
            report["io_settings"] = {
                "requests": IO_REQUESTS,
                "delay": LOOKUP_DELAY,
                "concurrency": LOOKUP_CONCURRENCY,
                "records_per_sensor": LOOKUP_SENSORS,
            }
        return report

    async def _run(self, cases: list[Case]) -> dict[str, Any]:
        self.payload_bytes: dict[str, float] = {}
        inputs: dict[str, str] = {}
        try:
            counts: dict[str, int] = {}
            for payload in sorted({c.payload for c in cases}):
                topic = self.topic(f"{payload}-in")
                await self.create(topic)
                # A ~1 ms matrix record is ~100x a sensor event's bytes and CPU: fewer do.
                counts[payload] = self.s.count if payload != "matrix" else self.s.count // 20
                self.say(f"filling {topic} with {counts[payload]:,} {payload} events")
                await self.fill(topic, payload, counts[payload])
                inputs[payload] = topic
                self.payload_bytes[payload] = await _mean_size(self.s, topic)
            results = []
            for number, case in enumerate(cases, 1):
                result = Result(case.name, case.group)
                self.say(f"[{number}/{len(cases)}] {case.name}: throughput")
                try:
                    if case.sink:
                        await self.sink_throughput(
                            case, inputs[case.payload], counts[case.payload], result
                        )
                        self.say(
                            f"[{number}/{len(cases)}] {case.name}: {result.records_per_s:,.0f} "
                            "rows/s"
                        )
                    else:
                        await self.throughput(
                            case, inputs[case.payload], counts[case.payload], result
                        )
                        self.say(
                            f"[{number}/{len(cases)}] {case.name}: "
                            f"{result.records_per_s:,.0f} records/s; latency"
                        )
                        await self.latency(case, result)
                except (RuntimeError, OSError, StreamError) as exc:
                    result.error = str(exc)
                    self.say(f"[{number}/{len(cases)}] {case.name}: failed: {exc}")
                results.append(result)
        finally:
            await self.cleanup()
        _ratios(results)
        return {
            "version": __version__,
            "run_id": self.run_id,  # its topics were named bench-<run_id>-..., and deleted
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {
                "cpus": self.cpus,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "settings": {
                "count": self.s.count,
                "partitions": self.s.partitions,
                "payload_bytes": self.payload_bytes,
                "matrix_size": self.matrix_size,
                "load": self.s.load,
                "quick": self.s.quick,
            },
            "results": [asdict(r) for r in results],
            "sink_ratios": _sink_ratios(results),
        }


def _per_key(records: list[Any]) -> dict[bytes | None, list[int]]:
    out: dict[bytes | None, list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        out[r.key].append(r.timestamp)
    return out


def _drain(stream: Any) -> None:
    for _ in iter(stream.readline, b""):
        pass


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


async def _wait_outputs(settings: BenchSettings, topic: str, count: int, seconds: float) -> None:
    """Until ``count`` records are in the topic (markers included), or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await _output_count(settings, topic) >= count:
            return
        await asyncio.sleep(0.2)


async def _output_count(settings: BenchSettings, topic: str) -> int:
    from stream.bench.topics import topic_end_offsets  # noqa: PLC0415

    return sum((await topic_end_offsets(settings, topic)).values())


async def _mean_size(settings: BenchSettings, topic: str) -> float:
    from stream.bench.topics import read_all  # noqa: PLC0415

    records = await read_all(settings, topic, limit=2000)
    return float(np.mean([len(r.value) for r in records])) if records else 0.0


def _ratios(results: list[Result]) -> None:
    by_name = {r.name: r for r in results if not r.error}
    naive, ceiling = by_name.get("naive"), by_name.get("ceiling")
    for r in results:
        if r.error:
            continue
        if naive is not None and naive.records_per_s:
            r.ratio_to_naive = r.records_per_s / naive.records_per_s
        if ceiling is not None and ceiling.records_per_s:
            r.ratio_to_ceiling = r.records_per_s / ceiling.records_per_s


def _sink_ratios(results: list[Result]) -> dict[str, float]:
    """The PostgreSQL sink's rows/s against the per-row design and against the same
    transform with the Kafka sink (records/s), when those cases ran."""
    by_name = {r.name: r.records_per_s for r in results if not r.error and r.records_per_s}
    sink = by_name.get("sensor-features-postgres")
    if sink is None:
        return {}
    ratios = {}
    if "sink-per-row" in by_name:
        ratios["to_per_row"] = sink / by_name["sink-per-row"]
    if "sensor-features" in by_name:
        ratios["to_kafka_sink"] = sink / by_name["sensor-features"]
    return ratios


def table(report: dict[str, Any]) -> str:
    head = (
        f"{'case':<34}{'records/s':>11}{'MB/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'RSS MB':>8}{'CPU us/rec':>11}{'x naive':>9}{'x ceiling':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        if r["error"]:
            lines.append(f"{r['name']:<34}failed: {r['error'][:80]}")
            continue
        lat = r["latency_ms"]

        def ratio(value: float | None) -> str:
            return f"{value:.2f}" if value is not None else "-"

        lines.append(
            f"{r['name']:<34}{r['records_per_s']:>11,.0f}{r['mb_per_s']:>7.1f}"
            f"{lat.get('p50', 0):>8.1f}{lat.get('p99', 0):>8.1f}{lat.get('max', 0):>8.1f}"
            f"{r['peak_rss_mb']:>8.0f}{r['cpu_us_per_record']:>11.1f}"
            f"{ratio(r['ratio_to_naive']):>9}{ratio(r['ratio_to_ceiling']):>10}"
        )
    sink = report.get("sink_ratios") or {}
    if sink:
        parts = []
        if "to_per_row" in sink:
            parts.append(f"{sink['to_per_row']:.1f}x the per-row design")
        if "to_kafka_sink" in sink:
            parts.append(f"{sink['to_kafka_sink']:.2f}x the Kafka sink (sensor-features)")
        lines.append("PostgreSQL sink (sensor-features-postgres, rows/s): " + ", ".join(parts))
    return "\n".join(lines + io_table(report))


# The two-row table: the same three designs for CPU-bound and for I/O-bound work.
CPU_ROW = {
    "threads": "matrix-inverse, batched thread",
    "processes": "matrix-inverse, batched process",
    "async": "matrix-inverse, batched inline",  # on the event loop
}
IO_ROW = {"threads": "threads(10)", "processes": "processes(10)", "async": "asyncio+aiohttp(100)"}


def io_table(report: dict[str, Any]) -> list[str]:
    """The io group's lines under the main table: every client, the threads / processes /
    async table beside the CPU-bound row, and the issue's targets (empty without io)."""
    settings = report.get("io_settings")
    if not settings:
        return []
    delay_ms = settings["delay"] * 1000
    lines = ["", f"I/O-bound: {settings['requests']:,} GETs, each answered after {delay_ms:g} ms"]
    if report["io_error"]:
        lines.append(f"  the clients failed: {report['io_error'][-300:]}")
    clients = {r["case"]: r for r in report["io"]}
    base = clients.get("threads(10)")
    for r in report["io"]:
        times = f"{base['seconds'] / r['seconds']:6.1f}x" if base and r["seconds"] else "     -"
        lines.append(
            f"  {r['case']:<24}{r['seconds']:8.2f} s{r['per_second']:9,.0f} req/s {times} "
            f"threads(10)  client CPU {r['cpu_seconds'] / r['requests'] * 1e3:5.2f} ms/req  "
            f"errors {r['errors']}"
        )
    service = {r["name"]: r for r in report["results"] if not r["error"]}

    def cell(row: dict[str, Any] | None, key: str) -> str:
        return f"{row[key]:,.0f}" if row else "-"

    head = f"{'':<34}{'threads':>12}{'processes':>12}{'async':>12}"
    lines += ["", head, "-" * len(head)]
    lines.append(
        f"{'CPU: matrix-inverse, records/s':<34}"
        + "".join(f"{cell(service.get(name), 'records_per_s'):>12}" for name in CPU_ROW.values())
    )
    lines.append(
        f"{'I/O: GETs of ' + format(delay_ms, 'g') + ' ms, requests/s':<34}"
        + "".join(f"{cell(clients.get(name), 'per_second'):>12}" for name in IO_ROW.values())
    )
    lines.append("  CPU: batches on a thread pool, a process pool, the event loop itself")
    lines.append("  I/O: 10 threads, 10 processes, 100 requests in flight on one event loop")
    lines += ["", "targets:"]
    lines += [f"  {text}" for text in io_targets(report)]
    return lines


def io_targets(report: dict[str, Any]) -> list[str]:
    """The issue's three targets for I/O-bound work, each measured or '-' (not run)."""
    settings = report["io_settings"]
    clients = {r["case"]: r["per_second"] for r in report["io"]}
    service = {r["name"]: r["records_per_s"] for r in report["results"] if not r["error"]}
    allowed = settings["concurrency"] / settings["delay"]  # lookups in flight / seconds each

    def verdict(value: float | None, target: float, unit: str) -> str:
        if value is None:
            return "- (not run)"
        return f"{value:,.2f}{unit} ({'met' if value >= target else 'missed'})"

    threads, asyncio_ = clients.get(IO_ROW["threads"]), clients.get(IO_ROW["async"])
    plain = service.get("lookups: no enrichment")
    warm = service.get("lookups: enrich, 99% cache hits")
    cold = service.get("lookups: enrich, cold cache")
    return [
        "async >= 5x threads(10) on the GETs: "
        + verdict(asyncio_ / threads if asyncio_ and threads else None, 5.0, "x"),
        "99% cache hits >= 0.9x the service without enrichment: "
        + verdict(warm / plain if warm and plain else None, 0.9, "x"),
        f"cold cache >= 80% of the {allowed:,.0f} records/s that "
        f"{settings['concurrency']} lookups in flight allow: "
        + verdict(cold / allowed if cold is not None else None, 0.8, "x"),
    ]


def chart(report: dict[str, Any], path: str) -> bool:
    """A PNG of throughput and latency per case, if matplotlib is installed."""
    try:
        import matplotlib as mpl  # noqa: PLC0415

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    results = [r for r in report["results"] if not r["error"]]
    names = [r["name"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.5 * len(names) + 2))
    rates = [r["records_per_s"] for r in results]
    left.barh(names, rates, color="#3b7dd8")
    left.set_xscale("log")
    left.set_xlabel("records/s, log scale (higher is better)")
    left.invert_yaxis()
    for y, rate in enumerate(rates):
        left.text(rate, y, f" {rate:,.0f}", va="center", fontsize=8)
    for key, color in (("p50", "#6bbf59"), ("p99", "#e0a030"), ("max", "#d05050")):
        right.scatter([r["latency_ms"].get(key, 0) for r in results], names, label=key, c=color)
    right.set_xscale("log")
    right.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    right.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    right.set_xlabel("end-to-end latency, ms, log scale (at half each case's throughput)")
    right.invert_yaxis()
    right.legend()
    cpus = report["machine"]["cpus"]
    fig.suptitle(f"stream bench, {cpus} CPUs, {report['settings']['count']:,} records per case")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def matrix_size_for(target_seconds: float = 0.001) -> int:
    """The matrix size n at which one matrix-inverse record costs about ``target`` CPU
    seconds (decode, invert, encode), measured here in one process."""
    import orjson  # noqa: PLC0415

    from stream.worker import process_batch  # noqa: PLC0415

    rng = np.random.default_rng(0)
    best = 8
    for n in (8, 12, 16, 24, 32, 40, 48, 64, 80, 96):
        values: list[bytes | None] = [
            orjson.dumps({"id": i, "matrix": (rng.normal(size=(n, n)) + n * np.eye(n)).tolist()})
            for i in range(50)
        ]
        process_batch("matrix-inverse", values, 1 << 24)  # warm
        started = time.process_time()
        process_batch("matrix-inverse", values, 1 << 24)
        per_record = (time.process_time() - started) / len(values)
        best = n
        if per_record >= target_seconds:
            break
    return best


async def bench(settings: BenchSettings) -> dict[str, Any]:
    runner = Bench(settings)
    if not settings.matrix_size:
        runner.matrix_size = matrix_size_for()
        runner.say(f"matrix-inverse: n = {runner.matrix_size} costs about 1 ms per record here")
    return await runner.run()


def save(report: dict[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(report, indent=2), encoding="utf-8")
