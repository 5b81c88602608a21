"""Find a real Schema Registry for the tests, in this order:

1. ``SCHEMA_REGISTRY_URL`` if set (a Confluent-compatible registry someone else runs);
2. a testcontainers registry (the ``apicurio/apicurio-registry`` image) if a Docker
   engine answers;
3. the project's local script (``deploy/registry/registry.sh``) on a port of the tests'
   own, its schemas in a database file so that a test may stop and start it (an outage,
   not a registry that forgot every id).

Whatever this module starts, it stops. Never a mock. Below that, the tests' own client
of a registry: plain HTTP for subjects and schemas, fastavro and protoc for bodies.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from tests.broker import _free_port, docker_answers

ROOT = Path(__file__).resolve().parent.parent
REGISTRY_SCRIPT = ROOT / "deploy" / "registry" / "registry.sh"
REGISTRY_IMAGE = os.environ.get("STREAM_TEST_REGISTRY_IMAGE", "apicurio/apicurio-registry:3.0.9")
API = "/apis/ccompat/v7"
CT = "application/vnd.schemaregistry.v1+json"


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


@dataclass(frozen=True)
class Registry:
    """The session's registry: its URL, and its script handle when a test may stop it."""

    url: str
    local: LocalRegistry | None = None


@contextlib.contextmanager
def schema_registry() -> Iterator[Registry]:
    configured = os.environ.get("SCHEMA_REGISTRY_URL")
    if configured:
        yield Registry(configured.rstrip("/"))
    elif docker_answers():
        with _container_registry() as url:
            yield Registry(url)
    else:
        with restartable_registry() as registry:
            yield Registry(registry.url, registry)


@contextlib.contextmanager
def restartable_registry() -> Iterator[LocalRegistry]:
    """A registry from the script that keeps its schemas in a database file: stopped and
    started again, it still knows every id."""
    with (
        tempfile.TemporaryDirectory(prefix="stream-registry-") as data,
        local_registry(data_dir=data) as registry,
    ):
        yield registry


# --- the tests' own client: plain HTTP, fastavro, protoc ----------------------------------


def http(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": CT}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return json.loads(answer.read())


def register(url: str, subject: str, text: str, schema_type: str) -> int:
    body: dict[str, Any] = {"schema": text}
    if schema_type != "AVRO":
        body["schemaType"] = schema_type
    return int(http("POST", f"{url}/subjects/{subject}/versions", body)["id"])


def fetch(url: str, schema_id: int) -> dict[str, Any]:
    found: dict[str, Any] = http("GET", f"{url}/schemas/ids/{schema_id}")
    return found


def unframe(value: bytes) -> tuple[int, bytes]:
    assert value[0] == 0
    (schema_id,) = struct.unpack(">I", value[1:5])
    return schema_id, value[5:]


def avro_read(url: str, value: bytes) -> Any:
    schema_id, body = unframe(value)
    schema = parse_schema(json.loads(fetch(url, schema_id)["schema"]))
    return schemaless_reader(io.BytesIO(body), schema, None)


def avro_frame(schema_id: int, text: str, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(b"\x00" + struct.pack(">I", schema_id))
    schemaless_writer(buffer, parse_schema(json.loads(text)), record)
    return buffer.getvalue()


def proto_class(text: str) -> Any:
    import grpc_tools
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "t.proto"), "w") as handle:
            handle.write(text)
        out = os.path.join(folder, "t.pb")
        args = ["protoc", f"-I{folder}", f"-I{include}", f"--descriptor_set_out={out}"]
        assert protoc.main([*args, os.path.join(folder, "t.proto")]) == 0
        with open(out, "rb") as handle:
            files = descriptor_pb2.FileDescriptorSet.FromString(handle.read())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    main = files.file[-1]
    name = f"{main.package}.{main.message_type[0].name}" if main.package else ""
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def proto_read(url: str, value: bytes) -> Any:
    schema_id, rest = unframe(value)
    assert rest[0] == 0  # message-index list [0]: the file's first message
    schema = fetch(url, schema_id)
    assert schema["schemaType"] == "PROTOBUF"
    return proto_class(schema["schema"]).FromString(rest[1:])
