"""The README's tutorial, run as written: each marked block's commands, in order, in a
folder that stands for a fresh clone, against the session's real broker, PostgreSQL
and Schema Registry. Each command must exit 0, and the lines the README shows after a
block must appear in what its last command printed.

The README speaks of the local servers (`make broker`, `make db`, `make registry` on
their usual ports) and of names a reader would choose; the harness maps those to the
session's servers and to names of this run's own (topics, groups, ports, the
table), so nothing collides with other tests or with servers a developer runs. Those
three `make` targets are not run: the session's servers stand in for them (their
scripts have tests of their own).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.readme_tutorial import ROOT, Block, long_running, pattern, tutorial

pytestmark = pytest.mark.broker

# What a fresh clone holds that the tutorial uses; `.venv` is the session's own.
CLONE = (
    ".venv",
    "Makefile",
    "pyproject.toml",
    "requirements.lock",
    "requirements-dev.lock",
    "deploy",
    "stream",
    "tests",
    "transforms",
)
SERVED_BY_THE_SESSION = ("make broker", "make db", "make registry")
README_TOPICS = (
    *("input_topic", "output_topic", "celsius-out", "enriched"),
    *("avro-readings", "avro-features"),
    *("readings", "minutes"),
)
COMMAND_TIMEOUT = 90.0
OUTPUT_WAIT = 60.0  # for what a running service has yet to write


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Background:
    """A long-running command, as a reader runs it in a terminal of its own."""

    command: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: re.Pattern[str] | str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(_found(text, line) for line in list(self.lines)):
                return
            if self.process.poll() is not None:
                time.sleep(0.3)  # the pump's last lines
                if any(_found(text, line) for line in self.lines):
                    return
                break
            time.sleep(0.1)
        raise AssertionError(
            f"{self.command!r}: no {text!r} within {timeout:g}s:\n" + "\n".join(self.lines)
        )

    def stop(self) -> None:
        """Ctrl-C, as a reader stops it; SIGKILL if it does not end."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if self.reader is not None:
            self.reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


def _found(text: re.Pattern[str] | str, line: str) -> bool:
    return bool(text.search(line)) if isinstance(text, re.Pattern) else text in line


@dataclass
class Tutorial:
    """One run of the tutorial: its folder, environment and names."""

    folder: Path
    bootstrap: str
    registry_url: str
    dsn: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    ports: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    running: list[Background] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ports = {p: str(_free_port()) for p in ("9400", "9401", "8080")}
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
        inherited.pop("VIRTUAL_ENV", None)
        venv_bin = str(ROOT / ".venv" / "bin")
        path = os.pathsep.join(
            p for p in inherited.get("PATH", "").split(os.pathsep) if p != venv_bin
        )
        self.env = {
            **inherited,
            "PATH": path,  # `stream` is on it once the README's setup activates .venv
            "PYTHONUNBUFFERED": "1",
            "STREAM_BOOTSTRAP_SERVERS": self.bootstrap,
            "STREAM_INPUT_TOPIC": self.topic("input_topic"),
            "STREAM_OUTPUT_TOPIC": self.topic("output_topic"),
            "STREAM_GROUP_ID": f"stream-{self.run}",
            "STREAM_METRICS_PORT": self.ports["9400"],
            "STREAM_WORKERS": "1",  # two cores for everything
            "STREAM_STATS_INTERVAL": "0",
            "STREAM_POSTGRES_TABLE": self.table("sensor_features"),
        }

    def topic(self, name: str) -> str:
        return f"{name}-{self.run}"

    def table(self, name: str) -> str:
        return f"{name}_{self.run}"

    def adapt(self, text: str) -> str:
        """A README command or output line, with the session's servers and this run's
        names in place of the local ones."""
        text = text.replace("http://127.0.0.1:8081/apis/ccompat/v7", self.registry_url)
        text = text.replace("postgresql://stream:stream@127.0.0.1:5432/stream", self.dsn)
        for readme, ours in self.ports.items():
            text = re.sub(rf"(?<![\d.]){readme}(?!\d)", ours, text)
        text = re.sub(r"\bsensor_features\b", self.table("sensor_features"), text)
        for name in README_TOPICS:
            text = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", self.topic(name), text)
        return re.sub(r"(--group-id |group=)([\w-]+)", rf"\g<1>\g<2>-{self.run}", text)

    def shell(self, command: str, expected: tuple[str, ...] = ()) -> None:
        """Run one command; with ``expected``, retry while a service is still working
        towards those lines."""
        words = command.split()
        if words[0] == "export":
            for assignment in command.split()[1:]:
                name, _, value = assignment.partition("=")
                self.env[name] = value
            return
        if command == "source .venv/bin/activate":
            venv = self.folder / ".venv"
            self.env["VIRTUAL_ENV"] = str(venv)
            self.env["PATH"] = f"{venv / 'bin'}{os.pathsep}{self.env['PATH']}"
            return
        if words[0] == "make":  # never remake the install: the session's .venv is under test
            command = "make -o .venv/.installed " + " ".join(words[1:])
        patterns = [pattern(line) for line in expected]
        deadline = time.monotonic() + (OUTPUT_WAIT if self.running and patterns else 0)
        while True:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=self.folder,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
            printed = (done.stdout + done.stderr).splitlines()
            missing = [p.pattern for p in patterns if not any(p.search(x) for x in printed)]
            if done.returncode == 0 and not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{command!r} exited {done.returncode}"
                    + (f", without {missing}" if missing else "")
                    + ":\n"
                    + "\n".join(printed[-40:])
                )
            time.sleep(1.0)

    def start(self, command: str, ready: str, expected: tuple[str, ...]) -> None:
        words = command.split()
        if words[0] == "make":
            command = "make -o .venv/.installed " + " ".join(words[1:])
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches it and its children, not us
        )
        background = Background(command, process)
        self.running.append(background)
        background.reader = threading.Thread(target=background.pump, daemon=True)
        background.reader.start()
        background.wait_for(ready, OUTPUT_WAIT)
        for line in expected:
            background.wait_for(pattern(line), OUTPUT_WAIT)

    def block(self, block: Block) -> None:
        for i, raw in enumerate(block.commands):
            command = self.adapt(raw)
            last = i == len(block.commands) - 1
            expected = tuple(self.adapt(x) for x in block.expected) if last else ()
            if any(raw == s or raw.startswith(s + " ") for s in SERVED_BY_THE_SESSION):
                continue
            ready = long_running(raw)
            if ready is None:
                self.shell(command, expected)
            else:
                self.start(command, ready, expected)

    def stop_all(self) -> None:
        while self.running:
            self.running.pop().stop()


async def _execute(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _drop_topics(bootstrap: str, run: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if run in t]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


def test_every_tutorial_block_runs_as_written(
    tmp_path: Path, bootstrap: str, schema_registry_url: str, postgres_dsn: str
) -> None:
    blocks = tutorial()
    assert len(blocks) >= 10
    for name in CLONE:
        (tmp_path / name).symlink_to(ROOT / name)
    run = Tutorial(tmp_path, bootstrap, schema_registry_url, postgres_dsn)
    section = ""
    try:
        for block in blocks:
            if block.section != section:
                run.stop_all()  # the reader stops one part's services before the next
                section = block.section
            try:
                run.block(block)
            except AssertionError as exc:
                raise AssertionError(f"README line {block.line} ({section}): {exc}") from None
    finally:
        run.stop_all()
        asyncio.run(_drop_topics(bootstrap, run.run))
        asyncio.run(_execute(postgres_dsn, f"DROP TABLE IF EXISTS {run.table('sensor_features')}"))
