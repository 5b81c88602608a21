"""A case's process group: started until its ready line, sampled from /proc while it
runs (CPU time and resident memory of the service and its workers together), stopped
with everything it forked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import IO

import numpy as np

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


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


@dataclass(frozen=True, slots=True)
class Started:
    process: subprocess.Popen[bytes]
    ready_at: float  # wall-clock time (time.time()) its ready line was read


async def start(command: list[str], ready: str, env: dict[str, str]) -> Started:
    """Start ``command`` in a new process group and wait (up to 120 s) for ``ready`` on
    its stderr; its stderr is drained from then on. ``env`` is added to ours."""
    process = subprocess.Popen(  # noqa: S603, ASYNC220 - our own command; returns at once
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "STREAM_STATS_INTERVAL": "0", **env},
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
            ready_at = time.time()
            # Keep draining its stderr so that it never blocks on a full pipe.
            loop.run_in_executor(None, _drain, process.stderr)
            return Started(process, ready_at)
    stop_group(process)
    raise RuntimeError("the case did not start:\n" + b"".join(log[-20:]).decode())


def stop_group(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM to the group, SIGKILL after ``timeout``, then to any worker left behind."""
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


def _drain(stream: IO[bytes]) -> None:
    for _ in iter(stream.readline, b""):
        pass
