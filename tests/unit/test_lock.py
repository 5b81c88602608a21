"""The lock files: every package pinned with hashes, in step with pyproject.toml, and what
make, CI and the image install from."""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "requirements.lock"
DEV = ROOT / "requirements-dev.lock"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)\s*(;[^\\]*)?\\?$")


@cache
def pins(path: Path) -> dict[str, tuple[str, int, str]]:
    """name -> (version, number of hashes, marker) of every requirement in a lock file."""
    found: dict[str, tuple[str, int, str]] = {}
    name = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = PIN.match(stripped)
        if match:
            name = canonicalize_name(match.group(1))
            marker = (match.group(4) or "").lstrip(";").strip()
            assert name not in found or found[name][2] != marker, f"{path.name}: {name} twice"
            found[name] = (match.group(3), 0, marker)
        elif stripped.startswith("--hash=sha256:"):
            version, hashes, marker = found[name]
            found[name] = (version, hashes + 1, marker)
        else:
            pytest.fail(f"{path.name}: unexpected line {line!r}")
    return found


def test_the_locks_have_no_host_names_and_pin_everything_by_hash() -> None:
    for path in (RUNTIME, DEV):
        text = path.read_text(encoding="utf-8")
        assert "://" not in text, f"{path.name} names an index"
        assert pins(path), path.name
        for name, (_, hashes, _) in pins(path).items():
            assert hashes >= 1, f"{path.name}: {name} has no hash"


def applies(requirement: Requirement, extra: str = "") -> bool:
    if requirement.marker is None:
        return True
    return requirement.marker.evaluate({"extra": extra, "python_version": "3.11"})


@pytest.mark.parametrize(
    ("path", "requirements"),
    [
        (RUNTIME, PROJECT["dependencies"]),
        (DEV, PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]),
    ],
)
def test_every_dependency_is_locked_within_its_bounds(path: Path, requirements: list[str]) -> None:
    """Fails when pyproject.toml changed and `make lock` was not run."""
    locked = pins(path)
    for text in requirements:
        requirement = Requirement(text)
        if not applies(requirement, "dev"):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{path.name} lacks {name}: run `make lock`"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{path.name}: {name}=={version} is outside {requirement.specifier}: run `make lock`"
        )


def test_the_image_gets_the_versions_the_tests_ran_with() -> None:
    dev = pins(DEV)
    for name, (version, _, _) in pins(RUNTIME).items():
        assert name in dev, name
        assert dev[name][0] == version, f"{name}: {version} in the image, {dev[name][0]} in dev"


def test_no_dev_tool_in_the_runtime_lock() -> None:
    runtime = pins(RUNTIME)
    for name in ("pytest", "mypy", "ruff", "hypothesis"):
        assert name not in runtime


def test_markers_parse() -> None:
    for path in (RUNTIME, DEV):
        for _, _, marker in pins(path).values():
            if marker:
                Marker(marker)


def test_make_installs_from_the_lock_and_test_unit_needs_no_apt() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements-dev.lock" in makefile
    assert re.search(r"^\$\(STAMP\): pyproject.toml requirements-dev.lock", makefile, re.M)
    assert re.search(r"^lock: .*## ", makefile, re.M)
    test_unit = re.search(r"^test-unit: (.*)##", makefile, re.M)
    assert test_unit is not None
    assert "deps" not in test_unit.group(1).split()
    test = re.search(r"^test: (.*)##", makefile, re.M)
    assert test is not None
    assert {"$(STAMP)", "deps"} <= set(test.group(1).split())
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci


def test_the_tests_that_need_promtool_are_outside_tests_unit() -> None:
    for path in (ROOT / "tests" / "unit").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name == Path(__file__).name:
            continue
        assert 'which("promtool")' not in text, path.name
        assert "from tests.prometheus import" not in text, path.name


async def test_the_private_attributes_our_code_reads_exist() -> None:
    """pyproject.toml bounds aiokafka and prometheus_client because stream/kafka.py and
    stream/metrics.py read these; a release that renames one fails here first."""
    from aiokafka import AIOKafkaProducer
    from prometheus_client import CollectorRegistry, Histogram

    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", request_timeout_ms=1234)
    try:
        assert producer._request_timeout_ms == 1234
    finally:
        await producer.stop()  # never started: releases what the constructor made
    histogram = Histogram("h", "h", buckets=(1.0, 2.0), registry=CollectorRegistry())
    assert list(histogram._upper_bounds) == [1.0, 2.0, float("inf")]
    assert len(histogram._buckets) == 3
    histogram._sum.inc(2.5)
    assert histogram._sum.get() == 2.5
