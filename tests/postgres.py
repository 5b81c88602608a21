"""Find a real PostgreSQL for the tests, in this order:

1. ``POSTGRES_DSN`` if set (a server someone else runs);
2. a testcontainers PostgreSQL (the official ``postgres`` image) if a Docker engine answers;
3. the project's local script (``deploy/postgres/db.sh``) on a port of the tests' own.

Whatever this module starts, it stops. Never a mock. ``Server.stop()`` and ``start()``
let a test take the database away and bring it back (the local script only).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.broker import docker_answers

ROOT = Path(__file__).resolve().parent.parent
DB_SCRIPT = ROOT / "deploy" / "postgres" / "db.sh"
TEST_PORT = int(os.environ.get("STREAM_TEST_POSTGRES_PORT", "15432"))
POSTGRES_IMAGE = os.environ.get("STREAM_TEST_POSTGRES_IMAGE", "postgres:15")
USER = PASSWORD = DATABASE = "stream"  # noqa: S105 - the test server's own


def script(*args: str, port: int = TEST_PORT) -> subprocess.CompletedProcess[str]:
    """Run deploy/postgres/db.sh (by default for the tests' own port)."""
    return subprocess.run(
        ["bash", str(DB_SCRIPT), *args],
        env={**os.environ, "PGPORT": str(port)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@dataclass(frozen=True)
class Server:
    """A PostgreSQL the tests use: its DSN, and whether this session controls it."""

    dsn: str
    port: int | None = None  # set when the local script runs it (stop/start possible)

    def stop(self) -> None:
        assert self.port is not None, "only the local script's server can be stopped"
        done = script("stop", port=self.port)
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        assert self.port is not None, "only the local script's server can be started"
        done = script("start", port=self.port)
        assert done.returncode == 0, done.stderr


@contextlib.contextmanager
def _container() -> Iterator[Server]:
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer(
        POSTGRES_IMAGE, username=USER, password=PASSWORD, dbname=DATABASE, driver=None
    ) as pg:
        yield Server(pg.get_connection_url())


@contextlib.contextmanager
def _local() -> Iterator[Server]:
    already = script("status").returncode == 0
    if not already:
        started = script("start")
        if started.returncode != 0:
            raise RuntimeError(f"the local PostgreSQL did not start:\n{started.stderr}")
    try:
        yield Server(
            f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{TEST_PORT}/{DATABASE}",
            None if already else TEST_PORT,
        )
    finally:
        if not already:
            script("stop")


@contextlib.contextmanager
def postgres_server() -> Iterator[Server]:
    configured = os.environ.get("POSTGRES_DSN")
    if configured:
        yield Server(configured)
    elif docker_answers():
        with _container() as server:
            yield server
    else:
        with _local() as server:
            yield server
