"""Find a real Schema Registry for the tests, in this order:

1. ``SCHEMA_REGISTRY_URL`` if set (a Confluent-compatible registry someone else runs);
2. a testcontainers registry (the ``apicurio/apicurio-registry`` image) if a Docker
   engine answers;
3. the project's local script (``deploy/registry/registry.sh``) on a port of the tests'
   own.

Whatever this module starts, it stops. Never a mock.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.broker import _free_port, docker_answers

ROOT = Path(__file__).resolve().parent.parent
REGISTRY_SCRIPT = ROOT / "deploy" / "registry" / "registry.sh"
REGISTRY_IMAGE = os.environ.get("STREAM_TEST_REGISTRY_IMAGE", "apicurio/apicurio-registry:3.0.9")
API = "/apis/ccompat/v7"


@dataclass(frozen=True)
class LocalRegistry:
    """A registry started with the script on its own port: a test may stop and start it."""

    port: int
    data_dir: str = ""  # keep schemas in a file here across restarts (default: in memory)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    def script(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(REGISTRY_SCRIPT), command],
            env={
                **os.environ,
                "REGISTRY_PORT": str(self.port),
                "REGISTRY_MANAGEMENT_PORT": str(_free_port()),
                "REGISTRY_DATA_DIR": self.data_dir,
            },
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def start(self) -> None:
        done = self.script("start")
        if done.returncode != 0:
            raise RuntimeError(f"the local schema registry did not start:\n{done.stderr}")

    def stop(self) -> None:
        self.script("stop")


@contextlib.contextmanager
def local_registry(port: int | None = None, data_dir: str = "") -> Iterator[LocalRegistry]:
    registry = LocalRegistry(port or _free_port(), data_dir)
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


@contextlib.contextmanager
def _container_registry() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = _free_port()
    container = DockerContainer(REGISTRY_IMAGE).with_bind_ports(8080, port)
    with container:
        wait_for_logs(container, "Installed features", timeout=180)
        yield f"http://127.0.0.1:{port}{API}"


@contextlib.contextmanager
def schema_registry() -> Iterator[str]:
    configured = os.environ.get("SCHEMA_REGISTRY_URL")
    if configured:
        yield configured.rstrip("/")
    elif docker_answers():
        with _container_registry() as url:
            yield url
    else:
        with local_registry() as registry:
            yield registry.url
