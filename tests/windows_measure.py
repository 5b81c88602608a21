"""Restore time and memory at many open windows, on a real broker: a measurement, not a
test (minutes long, so out of ``make test``). Reports; asserts only that the run worked.

    export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092
    python -m tests.windows_measure --keys 1000000
    python -m tests.windows_measure --keys 10000 --per-key 100

It produces ``keys * per-key`` events (one per window: ``per-key`` consecutive 1-minute
windows of each key, a grace of a day, so none closes), runs ``stream run --window``
until the group has committed them all and reads the resident memory of the service and
its workers; then starts it again and times the restore (the service's own "restored N
windows from M changelog records in X s" lines, and the wall time until it is ready).
The same input through the stateless service (the identity transform, exactly once,
another group) gives the memory to compare with.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import replace

from stream.produce import Event
from tests.helpers import (
    Service,
    Topics,
    drop_topics,
    get,
    make_topics,
    rss_of_group,
    start_service,
    wait_caught_up,
)
from tests.windows_broker import T0, base_url, drop_changelog, event, feed, windowed

MINUTE = 60_000
RESTORED = re.compile(r"restored (\d+) windows from (\d+) changelog records in ([\d.]+)s")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def events(keys: int, per_key: int) -> Iterator[Event]:
    for window in range(per_key):
        for key in range(keys):
            yield event(f"key-{key:07d}", T0 + window * MINUTE + key % 1000, float(key % 97))


async def steady_rss(service: Service, settle: float = 3.0) -> int:
    await asyncio.sleep(settle)
    return rss_of_group(service.process.pid)


async def caught_up(topics: Topics, service: Service, wait: float = 1200) -> None:
    """Wait until the group has committed all its input; the service must not stop."""
    deadline = time.monotonic() + wait
    while not await wait_caught_up(topics, 2):
        assert service.process.poll() is None, "the service stopped:\n" + service.log()
        assert time.monotonic() < deadline, "not caught up:\n" + service.log()


async def until_ready(service: Service, wait: float = 300) -> float:
    """Seconds from now until /readyz answers 200."""
    started = time.monotonic()
    base = base_url(service)
    while time.monotonic() - started < wait:
        status, _ = await asyncio.to_thread(get, base + "/readyz")
        if status == 200:
            return time.monotonic() - started
        assert service.process.poll() is None, service.log()
        await asyncio.sleep(0.05)
    raise AssertionError("never ready:\n" + service.log())


async def measure(bootstrap: str, keys: int, per_key: int, partitions: int) -> None:
    topics = await make_topics(bootstrap, partitions)
    stateless = replace(topics, group=topics.group + "-stateless", output=topics.output)
    options = windowed("tumbling:1m", "--grace", "1d", "--max-windows", str(keys * per_key + 10))
    try:
        started = time.monotonic()
        sent = await feed(topics, events(keys, per_key))
        say(f"produced {sent} events in {time.monotonic() - started:.1f}s")

        started = time.monotonic()
        service = start_service(topics, *options)
        await caught_up(topics, service)
        say(f"windowed run: caught up in {time.monotonic() - started:.1f}s")
        stateful = await steady_rss(service)
        assert service.terminate() == 0, service.log()

        started = time.monotonic()
        service = start_service(topics, *options)
        ready = await until_ready(service)
        since_start = time.monotonic() - started
        lines = [m for line in service.lines if (m := RESTORED.search(line))]
        restored = await steady_rss(service)
        assert service.terminate() == 0, service.log()
        windows = sum(int(m.group(1)) for m in lines)
        records = sum(int(m.group(2)) for m in lines)
        slowest = max(float(m.group(3)) for m in lines)
        say(
            f"restore: {windows} windows from {records} changelog records over {len(lines)} "
            f"partitions; slowest partition {slowest:.1f}s; ready {ready:.1f}s after the "
            f"start line was awaited ({since_start:.1f}s after the process started)"
        )

        started = time.monotonic()
        service = start_service(stateless, "--guarantee", "exactly-once")
        await caught_up(stateless, service)
        say(f"stateless run: caught up in {time.monotonic() - started:.1f}s")
        base = await steady_rss(service)
        assert service.terminate() == 0, service.log()
        mb = 1 << 20
        say(
            f"RSS (service and workers): stateless {base / mb:.0f} MiB; windowed after "
            f"processing {stateful / mb:.0f} MiB (+{(stateful - base) / mb:.0f}); after the "
            f"restore {restored / mb:.0f} MiB (+{(restored - base) / mb:.0f})"
        )
    finally:
        await drop_changelog(topics)
        await drop_topics(topics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--per-key", type=int, default=1, help="open windows per key")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        sys.exit("set KAFKA_BOOTSTRAP_SERVERS to a running broker")
    asyncio.run(measure(bootstrap, args.keys, args.per_key, args.partitions))


if __name__ == "__main__":
    main()
