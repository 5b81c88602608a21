"""Find a real Kafka broker for the tests, in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` if set (a broker someone else runs);
2. a testcontainers broker (the official ``apache/kafka`` image) if a Docker engine answers;
3. the project's local broker script (``deploy/kafka/broker.sh``) on a port of the tests' own.

Whatever this module starts, it stops. Never a mock. A test that kills a broker gets
one of its own (``own_broker``): free ports, throwaway state.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROKER_SCRIPT = ROOT / "deploy" / "kafka" / "broker.sh"
TEST_PORT = int(os.environ.get("STREAM_TEST_KAFKA_PORT", "19092"))
KAFKA_IMAGE = os.environ.get("STREAM_TEST_KAFKA_IMAGE", "apache/kafka:4.4.0")


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """Distinct ports nothing listens on (held together while they are picked)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


@contextlib.contextmanager
def _container_broker() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = _free_port()
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
    }
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, port)
    for key, value in env.items():
        container = container.with_env(key, value)
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=120)
        yield f"127.0.0.1:{port}"


def script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run deploy/kafka/broker.sh (by default for the tests' own port)."""
    return subprocess.run(
        ["bash", str(BROKER_SCRIPT), *args],
        env={**os.environ, "KAFKA_PORT": str(TEST_PORT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@contextlib.contextmanager
def _local_broker() -> Iterator[str]:
    already = script("status").returncode == 0
    if not already:
        started = script("start")
        if started.returncode != 0:
            raise RuntimeError(f"the local Kafka broker did not start:\n{started.stderr}")
    try:
        yield f"127.0.0.1:{TEST_PORT}"
    finally:
        if not already:
            script("stop")


@dataclass(frozen=True)
class OwnBroker:
    """A broker of a test's own from the script (free ports, state in a folder of its
    own), which the test may kill and start again."""

    port: int
    controller_port: int
    run_dir: str

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def script(self, command: str) -> subprocess.CompletedProcess[str]:
        return script(
            command,
            env={
                "KAFKA_PORT": str(self.port),
                "KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "KAFKA_RUN_DIR": self.run_dir,
            },
        )

    def start(self) -> None:
        done = self.script("start")
        if done.returncode != 0:
            raise RuntimeError(f"the test's own Kafka broker did not start:\n{done.stderr}")


@contextlib.contextmanager
def own_broker() -> Iterator[OwnBroker]:
    with tempfile.TemporaryDirectory(prefix="stream-broker-") as folder:
        port, controller_port = free_ports(2)
        broker = OwnBroker(port, controller_port, folder)
        try:
            broker.start()
            yield broker
        finally:
            broker.script("stop")


@contextlib.contextmanager
def kafka_broker() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
    elif docker_answers():
        with _container_broker() as address:
            yield address
    else:
        with _local_broker() as address:
            yield address
