"""`stream bench`: measure designs against each other on one broker, in one run.

Every case runs as its own process group (the service, or a baseline from
:mod:`stream.bench.engines`) against the same pre-filled input topic, so the
ratios between cases hold on this machine and broker. Per case:

- throughput: outputs over the time from the first to the last output (output
  topics use LogAppendTime: the broker's clock, when it acknowledged them); the io
  group's cases from the service's ready line instead (:mod:`stream.bench.measure`);
- latency: a fresh topic fed at a fixed rate (by default half the case's measured
  throughput); per key, the k-th output answers the k-th input, and its latency is
  the time a ``read_committed`` consumer here received it minus the input's CreateTime
  (so an exactly-once output's latency includes its transaction's commit);
- peak resident memory and CPU time per record of the whole process group (the
  service and its workers together), sampled from /proc while it runs.

The ``sink`` cases (with ``--postgres-dsn``) write to PostgreSQL instead: the service
with ``--sink postgres`` and the per-row design (one awaited INSERT per record). Their
throughput is rows over the time from the first to the last row written (each case's
table gets a ``written_at`` column defaulting to the database's clock); they have no
latency run.

The ``io`` group measures I/O-bound work: ``IO_REQUESTS`` GETs that a local server
answers after ``LOOKUP_DELAY`` seconds, through threads, processes and asyncio
(:mod:`stream.bench.enrich_io`, in a process of its own), then the service with
enrichment against that server, with a cold cache (every record its own URL) and with
99% cache hits (a URL per sensor, one sensor per 100 records), beside the same service
without enrichment on the same input.

The ``guarantees`` group runs sensor-features under exactly-once, and both guarantees on
larger events (``--values`` readings each); the report sets each exactly-once case
beside its at-least-once twin. The ``windows`` group (right after sensor-features,
exactly-once) runs our windowed aggregation and the same in quix-streams
(:mod:`stream.bench.quix_windows`) on one input of 10,000 sensors over five minutes of
event time, each timed from its ready line to its last output; the report sets ours
against both (:mod:`stream.bench.windows`). The parts: :mod:`stream.bench.cases` (the catalogue),
:mod:`stream.bench.measure` (one case), :mod:`stream.bench.report` (table, targets,
JSON), :mod:`stream.bench.compare` (a run against a previous results file).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import numpy as np

from stream.bench.cases import (
    IO_REQUESTS,
    LOOKUP_CONCURRENCY,
    LOOKUP_DELAY,
    LOOKUP_SENSORS,
    Case,
    Payload,
    catalogue,
    choose,
)
from stream.bench.measure import CaseRunner, Result
from stream.bench.report import assemble
from stream.bench.topics import BenchTopics
from stream.config import BenchSettings


class Bench:
    """One run: the chosen cases (:mod:`stream.bench.cases`), their inputs filled once,
    each case measured in turn (:mod:`stream.bench.measure`), every topic deleted at the
    end, and the report assembled (:mod:`stream.bench.report`)."""

    def __init__(self, settings: BenchSettings, matrix_size: int) -> None:
        self.s = settings
        self.cpus = os.cpu_count() or 1
        self.run_id = uuid.uuid4().hex[:8]
        self.matrix_size = matrix_size

    def say(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def cases(self) -> list[Case]:
        chosen, notes = choose(catalogue(self.s, self.cpus), self.s)
        for note in notes:
            self.say(note)
        return chosen

    async def run(self) -> dict[str, Any]:
        cases = self.cases()
        lookup_base = ""
        with contextlib.ExitStack() as stack:
            io: list[dict[str, Any]] = []
            io_error = ""
            if any(c.group == "io" for c in cases):
                self.say(f"io: {IO_REQUESTS:,} requests through threads, processes, asyncio")
                io, io_error = await io_baselines()
                if any(c.enrich for c in cases):
                    from stream.bench.slow_server import SlowServer  # noqa: PLC0415

                    lookup_base = stack.enter_context(SlowServer(LOOKUP_DELAY))
            report = await self.measure(cases, lookup_base)
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

    async def measure(self, cases: list[Case], lookup_base: str) -> dict[str, Any]:
        """Fill each input once, run every case against it, delete the topics."""
        topics = BenchTopics(self.s, self.run_id, self.matrix_size)
        payload_bytes: dict[str, float] = {}
        inputs: dict[str, str] = {}
        results: list[Result] = []
        try:
            payloads = {c.payload.name: c.payload for c in cases}
            for name in sorted(payloads):
                inputs[name] = await self.fill(topics, payloads[name])
                payload_bytes[name] = await topics.mean_size(inputs[name])
            runner = CaseRunner(self.s, topics, payload_bytes, lookup_base)
            for number, case in enumerate(cases, 1):
                count = case.payload.records(self.s.count)
                label = f"[{number}/{len(cases)}]"
                results.append(await runner.run(case, inputs[case.payload.name], count, label))
        finally:
            await topics.cleanup()
        readings = {p.name: p.values for p in payloads.values() if p.kind == "sensor"}
        return assemble(
            self.s,
            run_id=self.run_id,
            cpus=self.cpus,
            matrix_size=self.matrix_size,
            payload_bytes=payload_bytes,
            readings=readings,
            results=results,
        )

    async def fill(self, topics: BenchTopics, payload: Payload) -> str:
        topic = topics.name(f"{payload.name}-in")
        await topics.create(topic)
        count = payload.records(self.s.count)
        self.say(f"filling {topic} with {count:,} {payload.name} events")
        await topics.fill(topic, payload, count)
        return topic


async def io_baselines() -> tuple[list[dict[str, Any]], str]:
    """The io group's clients (threads, processes, asyncio), in a process of their own:
    (their rows, or an error)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stream.bench.enrich_io",
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
    matrix_size = settings.matrix_size
    if not matrix_size:
        matrix_size = matrix_size_for()
        sys.stderr.write(f"matrix-inverse: n = {matrix_size} costs about 1 ms per record here\n")
    return await Bench(settings, matrix_size).run()
