"""`stream db init` decides the table as `stream run` does (the same --transform,
--postgres-table, environment and --config file), and when `stream run --sink postgres`
finds its table missing or made for another transform, its one line names the exact
`stream db init` to run: running that command as written is enough to start. Against
the real PostgreSQL (tests/postgres.py); the CLI is called in this process."""

from __future__ import annotations

import asyncio
import re
import shlex
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from stream.cli import main
from stream.config import RunSettings, load
from stream.sink.admin import sink_config
from stream.sink.errors import SchemaError
from stream.sink.postgres import PostgresSink

pytestmark = pytest.mark.postgres


@pytest.fixture
def table_name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def run_settings(dsn: str, transform: str, table: str) -> RunSettings:
    return RunSettings(transform=transform, postgres_table=table, sink="postgres", postgres_dsn=dsn)


async def start_fails(settings: RunSettings) -> str:
    """The one line the sink's start refuses with (what `stream run` prints)."""
    sink = PostgresSink(sink_config(settings))
    with pytest.raises(SchemaError) as caught:
        await sink.start()
    await sink.close()
    message = str(caught.value)
    assert "\n" not in message
    return message


async def starts(settings: RunSettings) -> None:
    sink = PostgresSink(sink_config(settings))
    await sink.start()
    await sink.close()


def named_command(message: str, dsn: str) -> str:
    """The `stream db init ...` a message names, which never holds the DSN."""
    found = re.search(r"`(stream db init [^`]*)`", message)
    assert found, message
    netloc = urlsplit(dsn).netloc  # user:password@host:port
    assert "@" in netloc
    assert netloc not in message
    assert "postgresql://" not in message
    assert "--postgres-dsn" not in found.group(1)
    return found.group(1)


async def db(*args: str) -> int:
    return await asyncio.to_thread(main, ["db", *args])


async def test_a_missing_table_names_the_command_that_makes_it(
    postgres_dsn: str, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = run_settings(postgres_dsn, "identity", table_name)
    message = await start_fails(settings)
    assert f"table(s) {table_name}" in message
    assert "missing" in message
    command = named_command(message, postgres_dsn)
    assert command == f"stream db init --postgres-table {table_name} --transform identity"
    # Run as written: the DSN comes from the environment, as it does for `stream run`.
    monkeypatch.setenv("STREAM_POSTGRES_DSN", postgres_dsn)
    assert await db(*shlex.split(command)[2:]) == 0
    await starts(settings)


async def test_a_table_of_another_transform_names_a_table_of_its_own(
    postgres_dsn: str,
    table_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The issue's trap: `stream db init` made a sensor-features table, then `stream run
    --transform identity` meets it."""
    monkeypatch.setenv("STREAM_POSTGRES_DSN", postgres_dsn)
    assert await db("init", "--postgres-table", table_name) == 0  # sensor-features' table
    settings = run_settings(postgres_dsn, "identity", table_name)
    message = await start_fails(settings)
    assert f"table {table_name} has no column(s) key, value" in message
    command = named_command(message, postgres_dsn)
    own = f"{table_name}_identity"
    assert command == f"stream db init --postgres-table {own} --transform identity"
    assert message.endswith(f"then run with --postgres-table {own}")
    assert await db(*shlex.split(command)[2:]) == 0
    assert f"{own}: created" in capsys.readouterr().out
    await starts(run_settings(postgres_dsn, "identity", own))


async def test_db_init_reads_the_config_file_and_environment_that_run_reads(
    postgres_dsn: str, table_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One config file for both commands, run-only options in it too; the transform from
    the environment (STREAM_TRANSFORM, as `stream run` reads it) beats the file's."""
    config = tmp_path / "stream.toml"
    config.write_text(
        f'[stream]\ntransform = "sensor-features"\npostgres_table = "{table_name}"\n'
        'sink = "postgres"\ninput_topic = "readings"\nworkers = 2\n'
    )
    monkeypatch.setenv("STREAM_POSTGRES_DSN", postgres_dsn)
    monkeypatch.setenv("STREAM_TRANSFORM", "identity")
    assert await db("init", "--config", str(config)) == 0
    settings = load(RunSettings, {}, config_file=str(config))
    assert (settings.transform, settings.postgres_table) == ("identity", table_name)
    await starts(settings)
