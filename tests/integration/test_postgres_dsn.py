"""A malformed PostgreSQL DSN against a real server: a configuration error, one line, exit
2; an unreachable server stays "unreachable", exit 1 (issue 20, item 11)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from urllib.parse import urlsplit

import pytest

from stream.errors import UsageError
from stream.sink.postgres import SinkConfig, connect
from stream.sink.schema import result_table
from tests.helpers import STREAM

pytestmark = pytest.mark.postgres


def stream_db_init(dsn: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    return subprocess.run(
        [STREAM, "db", "init", "--connect-timeout", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "STREAM_POSTGRES_DSN": dsn},
    )


def with_query(dsn: str, query: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}{query}"


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.splitlines()
    return line


def test_an_unescaped_at_in_the_password_is_malformed_not_unreachable(postgres_dsn: str) -> None:
    # The driver split at the first @: the rest of the password became the host name,
    # and the server at the right address was reported unreachable.
    parts = urlsplit(postgres_dsn)
    assert parts.password
    broken = postgres_dsn.replace(f":{parts.password}@", f":{parts.password}@x@", 1)
    done = stream_db_init(broken)
    line = one_line(done)
    assert done.returncode == 2, line
    assert "unreachable" not in line
    assert "--postgres-dsn is malformed: it holds more than one @" in line
    assert f":{parts.password}" not in line  # (the test server's password is "stream")


def test_a_setting_the_server_refuses_is_a_configuration_error(postgres_dsn: str) -> None:
    # The driver sends the query's unknown names to the server as settings; its refusal
    # escaped as a traceback.
    done = stream_db_init(with_query(postgres_dsn, "no_such_setting=1"))
    line = one_line(done)
    assert done.returncode == 2, line
    assert line.startswith("stream db: error: --postgres-dsn: PostgreSQL at ")
    assert "no_such_setting" in line
    assert f":{urlsplit(postgres_dsn).password}" not in line


async def test_connect_reports_a_refused_setting_as_a_usage_error(postgres_dsn: str) -> None:
    config = SinkConfig(
        dsn=with_query(postgres_dsn, "work_mem=lots"), table=result_table("identity", "")
    )
    with pytest.raises(UsageError, match="work_mem"):
        await asyncio.wait_for(connect(config), 30)


def test_an_unreachable_server_is_still_unreachable(postgres_dsn: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    parts = urlsplit(postgres_dsn)
    away = postgres_dsn.replace(f"@{parts.hostname}:{parts.port}", f"@127.0.0.1:{port}", 1)
    done = stream_db_init(away)
    line = one_line(done)
    assert done.returncode == 1, line
    assert "is unreachable" in line
