"""Scaling out on a real broker: instances of one group share the partitions, every
record comes out, and when one instance leaves another takes its partitions over.
Also what the deploy kit promises of a live service: every metric the Grafana
dashboard queries is exported, and the image's HEALTHCHECK command works."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.dashboard import dashboard_metric_names
from tests.helpers import (
    Service,
    Topics,
    end_offsets,
    feed_demo,
    get,
    metrics_url,
    read_topic,
    scrape_until,
    start_service,
    wait_caught_up,
)
from tests.prometheus import samples

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SECOND_ROUND_SEQ = 1_000_000  # second-round events number their keys from here


# ---- helpers --------------------------------------------------------------------------------


def assignments(service: Service, topic: str) -> list[set[int]]:
    """Every 'assigned partitions: ...' of the service's log, as partition numbers."""
    pattern = re.compile(re.escape(topic) + r"\[(\d+)\]")
    found = []
    for line in list(service.lines):
        if "assigned partitions:" in line:
            listed = line.split("assigned partitions:", 1)[1]
            found.append({int(p) for p in pattern.findall(listed)})
    return found


def current(service: Service, topic: str) -> set[int] | None:
    """The service's latest assignment, or None before its first."""
    seen = assignments(service, topic)
    return seen[-1] if seen else None


async def settle(
    check: Callable[[], bool], describe: Callable[[], str], seconds: float = 90
) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g}s: {describe()}")
        await asyncio.sleep(0.2)


def consumed(service: Service, topic: str) -> float:
    status, body = get(metrics_url(service))
    assert status == 200
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name == "stream_messages_consumed_total" and labels.get("topic") == topic:
                total += sample.value
    return total


def check_round(outputs: list[Any], inputs: list[Any], first_seq: int, end_seq: int) -> None:
    """Every input of a round (seqs first_seq <= seq < end_seq) came out: per key, the
    output's distinct seqs in that range are exactly first_seq .. first_seq + n - 1
    (at-least-once: duplicates are allowed, gaps and strangers are not)."""
    expected = Counter(e["sensor_id"] for e in inputs)
    assert all(first_seq <= e["seq"] < end_seq for e in inputs)
    got: dict[str, set[int]] = defaultdict(set)
    for record in outputs:
        value = orjson.loads(record.value)
        assert record.key.decode() == value["sensor_id"], "output keeps the input key"
        if first_seq <= value["seq"] < end_seq:
            got[value["sensor_id"]].add(value["seq"])
    wanted = {(e["sensor_id"], e["seq"]) for e in inputs}
    have = {(key, seq) for key, seqs in got.items() for seq in seqs}
    missing = wanted - have
    assert not missing, f"{len(missing)} records never came out, e.g. {sorted(missing)[:5]}"
    assert set(got) == set(expected), "outputs for keys that were not sent"
    for key, n in expected.items():
        assert sorted(got[key]) == list(range(first_seq, first_seq + n)), key


# ---- scale out ------------------------------------------------------------------------------


async def test_two_instances_share_the_partitions_and_one_takes_over(
    topics: Topics, services: list[Service]
) -> None:
    assert topics.partitions == 4
    everything = set(range(topics.partitions))
    options = ("--workers", "1", "--lag-interval", "1")
    first = start_service(topics, *options)
    services.append(first)
    second = start_service(topics, *options)
    services.append(second)
    pair = (first, second)

    # The group settles: each instance holds some partitions, none holds one twice,
    # together they hold all four.
    def shared() -> bool:
        a, b = current(first, topics.input), current(second, topics.input)
        if not a or not b:
            return False
        return not (a & b) and (a | b) == everything

    def logs() -> str:
        return "\n".join(f"--- instance {i}\n{s.log()}" for i, s in enumerate(pair, 1))

    await settle(shared, logs)
    held = [current(s, topics.input) for s in pair]

    events = await feed_demo(topics, 8_000)
    out = await read_topic(topics.bootstrap, topics.output, len(events), wait=120)
    assert len(out) >= len(events)
    check_round(out, events, 0, SECOND_ROUND_SEQ)
    assert await wait_caught_up(topics), "the group did not commit every input offset"
    # No rebalance meanwhile, and each instance did part of the work.
    assert [current(s, topics.input) for s in pair] == held
    counts = [await asyncio.to_thread(consumed, s, topics.input) for s in pair]
    assert all(c > 0 for c in counts), counts
    assert sum(counts) >= len(events), counts

    # One instance leaves cleanly; the other takes over all four partitions.
    assert first.terminate() == 0, first.log()
    assert "stopped:" in first.log()
    await settle(lambda: current(second, topics.input) == everything, logs)
    assert len(assignments(second, topics.input)) >= 2  # it was reassigned

    more = await feed_demo(topics, 2_000, seed=2, first_seq_from=SECOND_ROUND_SEQ)
    out = await read_topic(topics.bootstrap, topics.output, len(events) + len(more), wait=120)
    check_round(out, more, SECOND_ROUND_SEQ, 2 * SECOND_ROUND_SEQ)
    check_round(out, events, 0, SECOND_ROUND_SEQ)  # the first round is all still there
    assert await wait_caught_up(topics)
    assert await asyncio.to_thread(consumed, second, topics.input) >= counts[1] + len(more)
    assert second.terminate() == 0, second.log()
    # Nothing went to the dead-letter topic.
    dead = await end_offsets(topics.bootstrap, topics.dlq, topics.partitions)
    assert sum(dead.values()) == 0, dead


# ---- the deploy kit against a live service --------------------------------------------------


def healthcheck_code() -> str:
    """The Python snippet the image's HEALTHCHECK runs (CMD ["python", "-c", CODE])."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith("HEALTHCHECK"))
    argv = json.loads(line.split(" CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"]
    code: str = argv[2]
    return code


def run_healthcheck(port: int) -> int:
    env = {**os.environ, "STREAM_METRICS_PORT": str(port)}
    done = subprocess.run(
        [sys.executable, "-c", healthcheck_code()],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode


def dashboard_gaps(exported: dict[str, float], names: set[str]) -> list[str]:
    """What the dashboard reads that the exposition lacks: a series it does not export,
    or a histogram's ``_count`` with no observation yet. A sink's series carry its name as
    a label, so they exist only where a sink runs (the PostgreSQL pipeline test checks
    them); enrichment does not run here either."""
    optional = ("stream_enrich_", "stream_sink_")  # stages this service does not run
    gaps = sorted(n for n in names if n not in exported and not n.startswith("stream_sink_"))
    for name in sorted(names):
        if name.endswith("_bucket") and not name.startswith(optional):
            count = name.removesuffix("_bucket") + "_count"
            if exported.get(count, 0) <= 0:
                gaps.append(count)
    return gaps


async def test_dashboard_metrics_exist_and_the_image_healthcheck_works(
    topics: Topics, services: list[Service]
) -> None:
    service = start_service(topics, "--workers", "1", "--lag-interval", "1")
    services.append(service)
    url = metrics_url(service)
    service.wait_for("assigned partitions")
    events = await feed_demo(topics, 200)
    await read_topic(topics.bootstrap, topics.output, len(events), wait=60)
    names = dashboard_metric_names()
    assert len(names) >= 15, names
    # Until a lag refresh and a commit after the last record (read every 0.2 s).
    text = await scrape_until(url, lambda text: not dashboard_gaps(samples(text), names))
    exported = samples(text)
    missing = [gap for gap in dashboard_gaps(exported, names) if not gap.endswith("_count")]
    assert not missing, f"the dashboard queries metrics the service does not export: {missing}"
    # The histograms the dashboard reads have observations, not only zero buckets.
    assert dashboard_gaps(exported, names) == []
    assert exported["stream_messages_consumed_total"] >= len(events)

    # The image's HEALTHCHECK command, run against this service: 0 while it is alive,
    # non-zero where nothing answers.
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    assert await asyncio.to_thread(run_healthcheck, port) == 0
    assert service.terminate() == 0, service.log()
    assert await asyncio.to_thread(run_healthcheck, port) != 0
