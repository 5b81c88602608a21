"""What the broker suites share: topics of a test's own, feeding and reading them, the
group's offsets, and the `stream run` process as users and supervisors start it.

Test modules import these from here, never from each other or from ``conftest``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.config import ProduceSettings, TopicsSettings
from stream.kafka import create_topics
from stream.produce import demo_events, produce

ROOT = Path(__file__).resolve().parent.parent
STREAM = str(Path(sys.executable).with_name("stream"))

FAST_REJOIN = ("--session-timeout-ms", "6000")  # a killed member leaves the group in ~6 s
MISBEHAVE = "tests.chaos.chaos_transforms:misbehave"  # poison, hang and exit on cue
SLOW = "tests.chaos.chaos_transforms:slow"  # about 1 ms per record


# --- topics and their records ----------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    bootstrap: str
    input: str
    output: str
    dlq: str
    group: str
    partitions: int

    def input_options(self) -> list[str]:
        """For commands that read only the input topic (produce, lag)."""
        return ["--bootstrap-servers", self.bootstrap, "--input-topic", self.input]

    def options(self) -> list[str]:
        return [
            "--bootstrap-servers",
            self.bootstrap,
            "--input-topic",
            self.input,
            "--output-topic",
            self.output,
            "--dlq-topic",
            self.dlq,
        ]


async def make_topics(bootstrap: str, partitions: int = 4) -> Topics:
    name = f"t-{uuid.uuid4().hex[:10]}"
    topics = Topics(
        bootstrap, f"{name}-in", f"{name}-out", f"{name}-in.dlq", f"g-{name}", partitions
    )
    settings = TopicsSettings(
        bootstrap_servers=bootstrap,
        input_topic=topics.input,
        output_topic=topics.output,
        dlq_topic=topics.dlq,
    )
    await create_topics(settings, partitions, 1)
    return topics


async def drop_topics(made: Topics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=made.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([made.input, made.output, made.dlq])
    finally:
        await admin.close()


async def send(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> None:
    """Produce (key, value) records and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def feed_demo(
    topics: Topics, count: int, seed: int = 1, keys: int = 32, first_seq_from: int = 0
) -> list[Any]:
    """Produce ``count`` demo events with `stream produce`'s code; the events, decoded."""
    settings = ProduceSettings(
        bootstrap_servers=topics.bootstrap,
        input_topic=topics.input,
        count=count,
        seed=seed,
        keys=keys,
        quiet=True,
    )
    sent, _ = await produce(settings, demo_events(settings, first_seq_from))
    assert sent == count
    return [orjson.loads(e.value) for e in demo_events(settings, first_seq_from)]


async def read_topic(bootstrap: str, topic: str, expect: int, wait: float = 60.0) -> list[Any]:
    """Every record of a topic (read_committed): wait until ``expect`` arrived, then read on
    to the topic's end offsets (its last stable offsets) as they are at that moment, so the
    answer holds everything written so far, duplicates too, without a quiet period to sit
    out. Whatever arrived when ``wait`` seconds pass, if that comes first."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + wait
        while not consumer.assignment():  # every partition, once the metadata is in
            assert time.monotonic() < deadline, f"no partitions of {topic!r}"
            await asyncio.sleep(0.05)
        parts = sorted(consumer.assignment())

        async def more() -> None:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)

        while len(records) < expect and time.monotonic() < deadline:
            await more()
        if len(records) >= expect:
            ends = await consumer.end_offsets(parts)
            deadline = max(deadline, time.monotonic() + 10)  # the rest is already written
            while time.monotonic() < deadline:
                behind = [tp for tp in parts if await consumer.position(tp) < ends[tp]]
                if not behind:
                    break
                await more()
    finally:
        await consumer.stop()
    return records


async def committed_offsets(bootstrap: str, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def wait_caught_up(topics: Topics, wait: float = 120.0) -> bool:
    """Wait until the group has committed every input offset (the run is done)."""
    deadline = time.monotonic() + wait
    ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
    want = {p: o for p, o in ends.items() if o}
    while time.monotonic() < deadline:
        committed = await committed_offsets(topics.bootstrap, topics.group)
        if all(committed.get(p, -1) >= o for p, o in want.items()):
            return True
        await asyncio.sleep(0.25)
    return False


# --- the service as a process -------------------------------------------------------------


@dataclass
class Service:
    """A `stream run` process, as a user or a supervisor starts it."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.process.poll() is not None and not any(text in x for x in self.lines):
                time.sleep(0.2)  # let the pump finish reading
                if not any(text in x for x in self.lines):
                    break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the service's log:\n" + "\n".join(self.lines))

    def terminate(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.close()
        return code

    def kill(self) -> None:
        """SIGKILL the service and its workers (its whole process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.close()

    def close(self) -> None:
        if self.pump is not None:
            self.pump.join(10)
        if self.process.stderr is not None:
            self.process.stderr.close()

    def log(self) -> str:
        return "\n".join(self.lines)


def start_service(topics: Topics, *extra: str, env: dict[str, str] | None = None) -> Service:
    process = subprocess.Popen(
        [
            STREAM,
            "run",
            *topics.options(),
            "--group-id",
            topics.group,
            "--metrics-port",
            "0",
            "--stats-interval",
            "0",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # so a test can signal its whole process group
    )
    service = Service(process)
    service.pump = threading.Thread(target=service._pump, daemon=True)
    service.pump.start()
    return service


def get(url: str) -> tuple[int, bytes]:
    """HTTP GET: (status, body), for 4xx/5xx answers too."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def scrape_until(url: str, holds: Callable[[str], bool], wait: float = 30.0) -> str:
    """The exposition at ``url`` once ``holds`` is true of it (or the last one read when
    ``wait`` seconds pass): for a test to wait for a refresh, not sleep through one."""
    deadline = time.monotonic() + wait
    while True:
        status, body = await asyncio.to_thread(get, url)
        assert status == 200, body
        text = body.decode()
        if holds(text) or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.2)


def metrics_url(service: Service) -> str:
    """The /metrics address a service printed in its start line."""
    line = service.wait_for("metrics=http://")
    return line.split("metrics=", 1)[1].strip()


def worker_pids(service: Service) -> list[int]:
    """The service's worker pids still alive: from its start line and its restarts."""
    line = service.wait_for("started:")
    found = re.search(r"\(pids ([\d,]+)\)", line)
    assert found, line
    pids = [int(p) for p in found.group(1).split(",")]
    pids += [int(p) for p in re.findall(r"restarted as pid (\d+)", service.log())]
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def rss_of_group(pgid: int) -> int:
    """Resident memory of every process in a process group, in bytes."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:  # field 5 of /proc/pid/stat: the process group
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total
