"""A malformed PostgreSQL DSN is a configuration error, one line saying what is wrong with
it (exit 2), found before any connection; it never shows the DSN or its password (issue
20, item 11). The driver's reading of the same DSNs (asyncpg) is what the checks follow:
these DSNs were reported as an unreachable server, or failed with a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import DbSettings, RunSettings
from stream.config.dsn import dsn_problem
from stream.options import ConfigError, load

SECRET = "hunter2"  # noqa: S105 - a made-up password, never to appear in a message

MALFORMED = [
    # (DSN, words of the one line)
    (f"postgresql://u:{SECRET}@localhost:notaport/db", "port is not a number"),
    (f"postgresql://u:{SECRET}@localhost:99999/db", "port is not a number from 1 to 65535"),
    (f"postgresql://u:{SECRET}@local host/db", "host name holds a space"),
    (f"postgresql://u:{SECRET}@[::1/db", "not a valid URL"),
    (f"postgresql://u:{SECRET}@h1:5432,,/db", "empty entry"),
    (f"postgresql://u:{SECRET}@:5432/db", "host is empty"),
    (f"postgresql://u:{SECRET}x@y@localhost/db", "more than one @"),
    (f"postgresql://u:{SECRET}#x@localhost/db", "holds a #"),
    (f"postgresql://u:{SECRET}/x@localhost/db", "percent-encode"),
    (f"postgresql://:{SECRET}@localhost/db", "user name is empty"),
    (f"mysql://u:{SECRET}@localhost/db", "must start with postgresql://"),
    (f"host=localhost user=u password={SECRET}", "key=value DSNs are not read"),
    ("localhost:5432", "must start with postgresql://"),
    ("postgresql://u@localhost/db?sslmode=bogus", "sslmode is not one of"),
    ("postgresql://u@localhost/db?target_session_attrs=writable", "target_session_attrs"),
    ("postgresql://u@localhost/db?connect_timeout=5", "use --connect-timeout"),
    ("postgresql://u@localhost/db?keepalives", "name=value"),
    ("postgresql:///db?host=h&port=1,2", "2 ports for 1 hosts"),
    ("postgresql://u@localhost/db?port=x", "port parameter"),
]

WELL_FORMED = [
    "postgresql://stream:stream@127.0.0.1:5432/stream",
    "postgres://u@localhost/db",
    "postgresql://u:p%40ss%2Fw%3Ard@h/db",
    "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
    "postgresql://u@[::1]:5432/db?sslmode=verify-full&application_name=stream",
    "postgresql:///db?host=/run/postgresql",
    "postgresql://@h/db",
]


@pytest.mark.parametrize(("dsn", "words"), MALFORMED)
def test_a_malformed_dsn_is_one_line_saying_what_is_wrong(dsn: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RunSettings(sink="postgres", postgres_dsn=dsn)
    message = str(caught.value)
    assert message.startswith("--postgres-dsn is malformed: ")
    assert words in message
    assert "\n" not in message
    assert SECRET not in message
    assert dsn not in message


@pytest.mark.parametrize("dsn", WELL_FORMED)
def test_a_well_formed_dsn_passes(dsn: str) -> None:
    assert dsn_problem(dsn) is None
    assert RunSettings(sink="postgres", postgres_dsn=dsn).postgres_dsn == dsn


def test_stream_db_checks_the_dsn_too() -> None:
    with pytest.raises(ConfigError, match=r"--postgres-dsn is malformed: .*port"):
        load(DbSettings, {"postgres_dsn": f"postgresql://u:{SECRET}@h:x/d"}, environ={})


def test_the_dsn_from_the_environment_is_checked() -> None:
    environ = {"STREAM_POSTGRES_DSN": f"postgresql://u:{SECRET}@h:x/d"}
    with pytest.raises(ConfigError, match="--postgres-dsn is malformed") as caught:
        load(RunSettings, {"sink": "postgres"}, environ=environ)
    assert SECRET not in str(caught.value)


def test_a_malformed_dsn_in_its_file_is_found_when_the_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "dsn"
    path.write_text(f"postgresql://u:{SECRET}@x@h/d\n")
    settings = load(RunSettings, {"sink": "postgres", "postgres_dsn_file": str(path)}, environ={})
    with pytest.raises(ConfigError) as caught:
        settings.resolve()
    message = str(caught.value)
    assert message.startswith(f"--postgres-dsn-file: the DSN in {str(path)!r} is malformed")
    assert "more than one @" in message
    assert SECRET not in message
