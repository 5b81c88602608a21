"""At start, `stream run` (and `stream produce`) with Avro or Protobuf checks that
--schema-registry-url answers as a Confluent-compatible registry: the bare address of the
real Apicurio registry (its API is under /apis/ccompat/v7) stops the start with one line
and exit 2, naming what was tried, what came back and where the API is; the right
address starts. Without the check, the bare address started and dead-lettered every
record as unknown_schema."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from stream.config import ConfigError, RunSettings
from stream.formats.setup import prepare
from tests.helpers import ROOT, STREAM, Service, Topics, start_service
from tests.registry import API, REGISTRY_SCRIPT
from transforms import resolve

pytestmark = pytest.mark.broker


def bare(url: str) -> str:
    """The registry's address without its Confluent-compatible API's path."""
    assert url.endswith(API), url  # the fixtures run Apicurio Registry
    return url.removesuffix(API)


def stream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREAM, *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def test_the_bare_apicurio_address_is_refused_with_the_path_to_append(
    schema_registry_url: str,
) -> None:
    address = bare(schema_registry_url)
    run = stream(
        "run",
        "--bootstrap-servers",
        "127.0.0.1:1",  # never reached: the registry is checked first
        "--input-format",
        "avro",
        "--schema-registry-url",
        address,
    )
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"stream run: error: --schema-registry-url {address} does not ")
    assert f"GET {address}/subjects: not found (HTTP 404), not a JSON list" in line
    assert line.endswith(f"; append {API} (Apicurio Registry's API answers at {address}{API})")
    # stream produce --format avro checks it too (before any event is made)
    produce = stream(
        "produce", "--format", "avro", "--count", "1", "--schema-registry-url", address
    )
    assert produce.returncode == 2, produce.stderr
    assert f"append {API}" in produce.stderr


def test_an_address_that_is_no_registry_says_what_came_back(schema_registry_url: str) -> None:
    """A path that is not the API: what came back, and no hint (not a bare address)."""
    address = bare(schema_registry_url) + "/apis"
    settings = RunSettings(output_format="protobuf", schema_registry_url=address)
    with pytest.raises(ConfigError) as caught:
        prepare(settings, resolve("sensor-features"))
    message = str(caught.value)
    assert f"GET {address}/subjects: " in message
    assert "not a JSON list of subjects" in message
    assert "\n" not in message
    assert API not in message


async def test_the_right_address_starts(
    schema_registry_url: str, topics: Topics, services: list[Service]
) -> None:
    service = start_service(
        topics,
        "--input-format",
        "avro",
        "--transform",
        "identity",
        "--schema-registry-url",
        schema_registry_url,
    )
    services.append(service)
    await asyncio.to_thread(service.wait_for, " started: ")
    assert await asyncio.to_thread(service.terminate) == 0, service.log()


def test_fetching_the_registry_prints_no_terminal_escape_codes(tmp_path: Path) -> None:
    """`make registry` in a fresh clone fetches the server with Maven first, which writes
    colour codes even in batch mode and off a terminal: none reach the user."""
    fetched = subprocess.run(
        ["bash", str(REGISTRY_SCRIPT), "fetch"],
        env={**os.environ, "REGISTRY_HOME_DIR": str(tmp_path)},
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert b"\x1b" not in fetched.stdout + fetched.stderr, fetched.stderr
    assert b"fetching Apicurio Registry" in fetched.stderr
    assert list(tmp_path.glob("apicurio-registry-*/apicurio-registry-app-*-runner.jar"))
