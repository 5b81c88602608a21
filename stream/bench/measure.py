"""Measuring one case: its throughput on the pre-filled input, then its latency at a
share of that throughput on a fresh topic.

Throughput is outputs over the time they took, by the broker's clock (output topics use
LogAppendTime: when the broker acknowledged each output). Latency is, per key, the k-th
output's arrival at a ``read_committed`` consumer minus the k-th input's CreateTime
(``arrivals``, in a process of its own): an exactly-once output counts its
transaction's commit. The throughput's time starts at one of:

- the first output (``Case.timed_from == "first output"``, most cases): outputs after
  the first over the time from the first to the last. Start-up (workers, the first
  fetch) is left out, which is fair while a case's first output comes as early as the
  rest would;
- the case's ready line (``"ready"``: the io group): every output over the time from
  the moment the service logged "assigned partitions" to the last output. With a cold
  cache every record waits for its own lookup, so the first outputs come late and the
  rest in a burst; from the first output, the rate read above the bound that the
  lookups in flight allow (issue 12). From the ready line, the lookups' work counts.
  The ready time is this machine's clock and the outputs' times the broker's: they are
  taken as one clock, as the CPU sampling already does (the bench runs beside its
  broker);
- the ready line, for input records (``"input end"``: the windows group): the input's
  records over the time from the ready line to the last output. A windows case writes
  one output per key and closed window, as event time passes, so its outputs' count
  cannot time it; its input ends with an event per partition past the last window,
  which closes every window left, so its last output is written when the work on the
  input is done. The case runs until its group has committed the input's end (polled
  with the admin client), so that every output is readable; the commit itself is not
  timed, so quix-streams' 5 s commit interval costs it no idle tail. The stateless
  exactly-once case, which the windows are set beside, is timed from its ready line to
  its last output too (``Case.ready_too``), beside its own first-to-last-output rate,
  so that their ratio is of one clock.

The sink cases count rows by the database's clock (a ``written_at`` column) and have
no latency run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.bench.cases import Case
from stream.bench.process import Sampler, start, stop_group
from stream.bench.topics import BenchTopics, read_all
from stream.config import BenchSettings
from stream.errors import StreamError


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
    reference: str = "ceiling"  # the case --compare judges this one against
    timed_from: str = "first output"  # or "ready", "input end": how its throughput is timed
    outputs: int = 0  # records in its output topic (the windows cases: windows closed)
    # Input records over the time from the ready line to the last output: the "input end"
    # cases, and their stateless reference (one output per input record).
    ready_records_per_s: float | None = None


def timed_span(stamps: list[float], ready_at: float | None) -> tuple[float, int, float]:
    """(start, records done after it, seconds) of outputs finished at ``stamps`` (seconds):
    from the first output when ``ready_at`` is None, else from ``ready_at`` (or the first
    output, if the clocks put it earlier)."""
    ordered = sorted(stamps)
    if ready_at is None:
        start, done = ordered[0], len(ordered) - 1
    else:
        start, done = min(ready_at, ordered[0]), len(ordered)
    return start, done, max(1e-3, ordered[-1] - start)


class CaseRunner:
    """Runs cases one at a time against their inputs; a failure is the case's error."""

    def __init__(
        self,
        settings: BenchSettings,
        topics: BenchTopics,
        payload_bytes: dict[str, float],
        lookup_base: str = "",
    ) -> None:
        self.s = settings
        self.topics = topics
        self.payload_bytes = payload_bytes  # mean bytes per input record, by payload name
        self.lookup_base = lookup_base  # the lookup server's http://host:port, if it runs

    def say(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    async def run(self, case: Case, input_topic: str, count: int, label: str) -> Result:
        """Throughput (rows/s for a sink case), then latency; ``label`` prefixes progress."""
        result = Result(case.name, case.group, reference=case.reference, timed_from=case.timed_from)
        self.say(f"{label} {case.name}: throughput")
        try:
            if case.sink:
                await self.sink_throughput(case, input_topic, count, result)
                self.say(f"{label} {case.name}: {result.records_per_s:,.0f} rows/s")
            elif case.timed_from == "input end":
                await self.input_end_throughput(case, input_topic, result)
                self.say(
                    f"{label} {case.name}: {result.records_per_s:,.0f} input records/s "
                    f"({result.outputs:,} outputs)"
                )
            else:
                await self.throughput(case, input_topic, count, result)
                self.say(f"{label} {case.name}: {result.records_per_s:,.0f} records/s; latency")
                if case.latency:
                    await self.latency(case, result)
        except (RuntimeError, OSError, StreamError) as exc:
            result.error = str(exc)
            self.say(f"{label} {case.name}: failed: {exc}")
        return result

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

    def env(self) -> dict[str, str]:
        """The DSN for the sink cases, by environment (a flag's value is visible to all)."""
        return {"STREAM_POSTGRES_DSN": self.s.postgres_dsn} if self.s.postgres_dsn else {}

    def sink_table(self, case: Case) -> str:
        return f"bench_{self.topics.run_id}_{slug(case.name).replace('-', '_')}"

    def group_id(self, case: Case, suffix: str = "") -> str:
        return f"bench-{self.topics.run_id}-{slug(case.name)}{suffix}"

    async def throughput(self, case: Case, input_topic: str, count: int, result: Result) -> None:
        output = self.topics.name(f"{slug(case.name)}-out")
        await self.topics.create(output, output + ".dlq", log_append_time=True)
        group = self.group_id(case)
        command = self.command(case, input_topic, output, group)
        started = await start(command, _ready_line(case), self.env())
        sampler = Sampler(started.process.pid)
        sampler.start()
        try:
            await self.topics.wait_outputs(output, count, self.s.case_seconds)
        finally:
            await sampler.stop()
            await asyncio.to_thread(stop_group, started.process)
        records = await read_all(self.s, output)
        if len(records) < 2:
            raise RuntimeError(f"{case.name}: only {len(records)} outputs")
        ready_at = started.ready_at if case.timed_from == "ready" else None
        stamps = [r.timestamp / 1000 for r in records]
        self._record(case, result, len(records), timed_span(stamps, ready_at), sampler)
        if case.ready_too:
            _, done, seconds = timed_span(stamps, started.ready_at)
            result.ready_records_per_s = done / seconds

    async def input_end_throughput(self, case: Case, input_topic: str, result: Result) -> None:
        """Input records over the time from the ready line to the last output (a windows
        case: its input's last events close every window). It runs until its group has
        committed the input's end, so that every output is readable, or ``--case-seconds``
        passed (an error: the input was not done)."""
        output = self.topics.name(f"{slug(case.name)}-out")
        await self.topics.create(output, output + ".dlq", log_append_time=True)
        group = self.group_id(case)
        started = await start(
            self.command(case, input_topic, output, group), _ready_line(case), self.env()
        )
        sampler = Sampler(started.process.pid)
        sampler.start()
        try:
            committed = await self.topics.wait_committed(group, input_topic, self.s.case_seconds)
        finally:
            await sampler.stop()
            await asyncio.to_thread(stop_group, started.process)
        if not committed.complete:
            raise RuntimeError(
                f"{case.name}: {committed.records:,} input records committed in "
                f"--case-seconds {self.s.case_seconds:g}, not all: give it more time"
            )
        records = await read_all(self.s, output)
        if not records:
            raise RuntimeError(f"{case.name}: no outputs")
        result.outputs = len(records)
        last = max(r.timestamp for r in records) / 1000
        span = (started.ready_at, committed.records, max(1e-3, last - started.ready_at))
        self._record(case, result, committed.records, span, sampler)
        result.ready_records_per_s = result.records_per_s

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
            output = self.topics.name(f"{slug(case.name)}-out")
            await self.topics.create(output, output + ".dlq")
            table_option = ["--postgres-table", name] if case.service else ["--table", name]
            command = [*self.command(case, input_topic, output, self.group_id(case)), *table_option]
            started = await start(command, _ready_line(case), self.env())
            sampler = Sampler(started.process.pid)
            sampler.start()
            try:
                deadline = time.monotonic() + self.s.case_seconds
                while time.monotonic() < deadline:
                    if await conn.fetchval(f"SELECT count(*) FROM {quote(name)}") >= count:  # noqa: S608
                        break
                    await asyncio.sleep(0.2)
            finally:
                await sampler.stop()
                await asyncio.to_thread(stop_group, started.process)
            rows, first, last = await conn.fetchrow(
                "SELECT count(*), extract(epoch FROM min(written_at))::float8, "  # noqa: S608
                f"extract(epoch FROM max(written_at))::float8 FROM {quote(name)}"
            )
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {quote(name)}")
            await conn.close()
        if rows < 2:
            raise RuntimeError(f"{case.name}: only {rows} rows written")
        self._record(case, result, rows, (first, rows - 1, max(1e-3, last - first)), sampler)

    def _record(
        self,
        case: Case,
        result: Result,
        records: int,
        span: tuple[float, int, float],
        sampler: Sampler,
    ) -> None:
        start_at, done, seconds = span
        result.records = records
        result.seconds = seconds
        result.records_per_s = done / seconds
        result.mb_per_s = result.records_per_s * self.payload_bytes[case.payload.name] / 1e6
        cpu = sampler.cpu_between(start_at, start_at + seconds)
        result.cpu_us_per_record = cpu / done * 1e6
        result.peak_rss_mb = sampler.peak_rss / 1e6

    async def latency(self, case: Case, result: Result) -> None:
        rate = self.s.rate or max(1.0, result.records_per_s * self.s.load)
        count = max(50, int(rate * self.s.latency_seconds))
        result.offered_rate = rate
        input_topic = self.topics.name(f"{slug(case.name)}-lat-in")
        output = self.topics.name(f"{slug(case.name)}-lat-out")
        await self.topics.create(input_topic)
        await self.topics.create(output, output + ".dlq", log_append_time=True)
        command = self.command(case, input_topic, output, self.group_id(case, "-lat"))
        # Not imported with the package: `python -m stream.bench.arrivals` runs it.
        from stream.bench.arrivals import Arrivals  # noqa: PLC0415

        arrivals = Arrivals(self.s, output, self.s.partitions, count, 60)
        try:
            await arrivals.start()
            started = await start(command, _ready_line(case), self.env())
            try:
                await asyncio.sleep(0.5)
                await self.topics.fill(input_topic, case.payload, count, rate=rate)
                seen = await arrivals.result()
            finally:
                await asyncio.to_thread(stop_group, started.process)
        finally:
            await arrivals.stop()
        sent = _per_key(await read_all(self.s, input_topic))
        latencies = []
        for key, times in seen.items():
            latencies += [(out - inp) / 1000 for inp, out in zip(sent[key], times, strict=False)]
        if not latencies:
            raise RuntimeError(f"{case.name}: no outputs in the latency run")
        ms = np.array(latencies) * 1000
        result.latency_ms = {
            "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()),
        }


def _ready_line(case: Case) -> str:
    return "assigned partitions" if case.service else "engine ready"


def _per_key(records: list[Any]) -> dict[bytes | None, list[int]]:
    """Each key's record timestamps, in offset order."""
    out: dict[bytes | None, list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        out[r.key].append(r.timestamp)
    return out


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")
