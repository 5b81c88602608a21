"""``deploy/postgres/db.sh`` in a checkout that only its owner may enter: the server's
user must still reach its data (issue 20, item 12). As root, the server runs as the
``postgres`` user, which cannot traverse a mode-0700 folder of root's (a ``mktemp -d``
clone, or anything under /root); the script must put the data where that user can
reach it, keyed by the checkout, and ``clean`` must remove it.

The script runs from a copy of ``deploy/postgres`` on a port of its own; the test
stops and cleans what it started."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.postgres import DATABASE, PASSWORD, USER

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Checkout:
    """A copy of deploy/postgres inside a mode-0700 temporary folder."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.script = folder / "deploy" / "postgres" / "db.sh"
        self.port = port
        self.script.parent.mkdir(parents=True)
        shutil.copy2(ROOT / "deploy" / "postgres" / "db.sh", self.script)

    def run(self, command: str, **env: str) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if k not in ("PG_DATA_ROOT", "PGPORT")}
        return subprocess.run(
            ["bash", str(self.script), command],
            env={**environment, "PGPORT": str(self.port), **env},
            capture_output=True,
            text=True,
            cwd=self.folder,  # as `make db` runs: from the checkout
            timeout=300,
            check=False,
        )


@pytest.fixture
def private_checkout() -> Iterator[Checkout]:
    folder = Path(tempfile.mkdtemp(prefix="stream-checkout-"))
    folder.chmod(0o700)
    checkout = Checkout(folder, _free_port())
    try:
        yield checkout
    finally:
        checkout.run("clean")
        shutil.rmtree(folder, ignore_errors=True)


async def _answers(port: int) -> int:
    conn = await asyncpg.connect(
        f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}", timeout=10
    )
    try:
        value: int = await conn.fetchval("SELECT 1")
        return value
    finally:
        await conn.close()


async def test_db_script_serves_from_a_checkout_only_its_owner_may_enter(
    private_checkout: Checkout,
) -> None:
    assert private_checkout.folder.stat().st_mode & 0o777 == 0o700
    started = private_checkout.run("start")
    assert started.returncode == 0, started.stderr
    status = private_checkout.run("status")
    assert status.returncode == 0, status.stderr
    assert await _answers(private_checkout.port) == 1

    stopped = private_checkout.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert private_checkout.run("status").returncode == 1
    again = private_checkout.run("start")  # the same data, found again
    assert again.returncode == 0, again.stderr
    assert "initdb" not in again.stderr
    assert await _answers(private_checkout.port) == 1

    cleaned = private_checkout.run("clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert private_checkout.run("status").returncode == 1
    fresh = private_checkout.run("start")  # clean removed the data: initdb again
    assert fresh.returncode == 0, fresh.stderr
    assert "initdb" in fresh.stderr


def test_a_data_root_the_server_user_cannot_enter_is_one_line_saying_what_to_change(
    private_checkout: Checkout,
) -> None:
    # PG_DATA_ROOT is taken as given: inside the mode-0700 folder, the postgres user (the
    # server's, when the script runs as root) cannot enter it. Run as another user, the
    # server runs as that user, who can.
    root = private_checkout.folder / "data"
    started = private_checkout.run("start", PG_DATA_ROOT=str(root))
    try:
        if os.geteuid() == 0:
            assert started.returncode == 1
            (line,) = started.stderr.splitlines()
            assert line.startswith("db: the server's user (postgres) cannot enter ")
            assert "set PG_DATA_ROOT to a folder it can enter" in line
            assert not (root / f"run-{private_checkout.port}" / "data").exists()
        else:
            assert started.returncode == 0, started.stderr
    finally:
        private_checkout.run("clean", PG_DATA_ROOT=str(root))
