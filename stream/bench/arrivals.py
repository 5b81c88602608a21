"""When each output became visible to a ``read_committed`` consumer, measured in a
process of its own (``python -m stream.bench.arrivals``).

Exactly-once outputs are written when they are sent but readable only once their
transaction commits, so the broker's LogAppendTime would leave the commit out of their
latency; the time a consumer can read them counts it, for both guarantees. The consumer
runs in its own process: in the bench's, the producer filling the input at the offered
rate (it makes its events on the loop) would hold it back and add its own delay.

The parent writes the settings, topic, count and time limit (pickled) on stdin; the
child says ``ready`` once it follows the topic from its start, then prints, as JSON,
each key's arrival times (this machine's clock, ms) in order, when ``count`` records
came or the time ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
import sys
import time
from typing import Any

from stream.config import KafkaSettings
from stream.kafka import CommittedReader

Seen = dict[bytes | None, list[float]]


async def follow(
    settings: KafkaSettings,
    topic: str,
    partitions: int,
    count: int,
    seconds: float,
    *,
    ready: Any = None,
) -> Seen:
    """Each key's arrival times until ``count`` records came or ``seconds`` passed. The
    partitions are those the topic was created with: just after its creation, metadata
    may list none."""
    seen: Seen = {}
    got = 0
    async with CommittedReader(settings, topic, range(partitions), fetch_max_wait_ms=5) as reader:
        if ready is not None:
            ready()
        deadline = time.monotonic() + seconds
        while got < count and time.monotonic() < deadline:
            fetched = await reader.fetch(timeout_ms=100)
            now = time.time() * 1000
            for part in fetched.values():
                for record in part:
                    seen.setdefault(record.key, []).append(now)
                got += len(part)
    return seen


class Arrivals:
    """The child process, from the bench's side."""

    def __init__(
        self, settings: KafkaSettings, topic: str, partitions: int, count: int, seconds: float
    ) -> None:
        self.args = (settings, topic, partitions, count, seconds)
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        process = self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stream.bench.arrivals",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(pickle.dumps(self.args))
        process.stdin.close()
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError("the arrivals consumer did not start")

    async def result(self) -> Seen:
        """Waits for the child to finish (``count`` records, or its time limit)."""
        assert self._process is not None
        assert self._process.stdout is not None
        out = await self._process.stdout.read()
        await self._process.wait()
        rows: list[list[Any]] = json.loads(out or b"[]")
        return {(bytes.fromhex(k) if k is not None else None): v for k, v in rows}

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()


def main() -> None:
    settings, topic, partitions, count, seconds = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - our parent

    def ready() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    seen = asyncio.run(follow(settings, topic, partitions, count, seconds, ready=ready))
    rows = [(k.hex() if k is not None else None, v) for k, v in seen.items()]
    sys.stdout.write(json.dumps(rows))


if __name__ == "__main__":
    main()
