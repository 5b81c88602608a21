"""Shared fixtures: the real servers for the session (Kafka, PostgreSQL, a Schema
Registry), fresh topics per test, and the services a test starts, stopped at its end.
The helpers they use live in :mod:`tests.helpers`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.broker import kafka_broker
from tests.helpers import Service, Topics, drop_topics, make_topics
from tests.postgres import Server, postgres_server
from tests.registry import LocalRegistry, Registry, restartable_registry, schema_registry


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    with kafka_broker() as address:
        yield address


@pytest.fixture(scope="session")
def postgres() -> Iterator[Server]:
    """A real PostgreSQL for the session (see tests/postgres.py)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_dsn(postgres: Server) -> str:
    return postgres.dsn


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A real Schema Registry for the session (see tests/registry.py)."""
    with schema_registry() as found:
        yield found


@pytest.fixture(scope="session")
def schema_registry_url(registry: Registry) -> str:
    """The session registry's Confluent-compatible base URL."""
    return registry.url


@pytest.fixture(scope="session")
def stoppable_registry(registry: Registry) -> Iterator[LocalRegistry]:
    """A registry a test may stop and start (an outage): the session's own when the
    script runs it, else one of its own. A test that stops it starts it again."""
    if registry.local is not None:
        yield registry.local
    else:
        with restartable_registry() as own:
            yield own


@pytest.fixture
async def topics(bootstrap: str) -> AsyncIterator[Topics]:
    made = await make_topics(bootstrap)
    yield made
    await drop_topics(made)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Services a test starts; whatever is still running at the end is stopped."""
    started: list[Service] = []
    yield started
    for service in started:
        service.kill()
