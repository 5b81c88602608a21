"""Pure parts of the PostgreSQL sink: rows, table declarations, retry policy, options,
metrics. (The writes themselves: tests/integration/test_postgres_sink.py.)"""

from __future__ import annotations

import math
from typing import Any

import asyncpg
import orjson
import pytest
from prometheus_client import generate_latest

from stream.config import ConfigError, DbSettings, RunSettings, load
from stream.metrics import SINK_REASONS, Metrics, SinkMetrics
from stream.sink.postgres import PostgresSink, SinkConfig
from stream.sink.retry import Backoff
from stream.sink.rows import RowError, generic_row, row_builder, rows_for
from stream.sink.schema import (
    GENERIC_COLUMNS,
    check_name,
    offsets_table,
    quote,
    result_table,
    snake_case,
    table_for,
)
from transforms import RecordField, RecordSchema
from transforms.builtin import SENSOR_FEATURES_SCHEMA, sensor_features

SENSOR_COLUMNS = result_table("sensor-features").columns
sensor_row = rows_for(SENSOR_FEATURES_SCHEMA)

NO_ENV: dict[str, str] = {}


def feature(**change: Any) -> dict[str, Any]:
    (out,) = sensor_features([{"sensor_id": "s-1", "seq": 7, "ts": 12.5, "values": [1, 2, 9]}])
    assert isinstance(out, dict)
    out.update(change)
    return out


# ---- rows ------------------------------------------------------------------------------------


def test_sensor_row_has_every_column_in_order() -> None:
    out = feature()
    row = sensor_row(b"s-1", orjson.dumps(out), "in", 2, 41)
    assert len(row) == len(SENSOR_COLUMNS)
    named = dict(zip([c for c, _ in SENSOR_COLUMNS], row, strict=True))
    assert named["source_topic"] == "in"
    assert named["source_partition"] == 2
    assert named["source_offset"] == 41
    assert named["sensor_id"] == "s-1"
    assert named["ts"] == 12.5
    assert named["seq"] == 7
    assert named["n"] == 3
    assert math.isclose(named["mean"], 4.0)
    assert named["min"] == 1.0
    assert named["max"] == 9.0
    assert named["peak_bins"] == out["peak_bins"]
    assert named["zscore"] == out["zscore"]
    assert named["anomaly"] is False
    # The output fields of the transform are exactly the typed columns (no field dropped).
    assert set(out) == {c for c, _ in SENSOR_COLUMNS[3:]}


def test_sensor_row_without_seq_has_null_seq_and_integer_numbers_become_floats() -> None:
    out = feature(mean=3)
    del out["seq"]
    row = sensor_row(None, orjson.dumps(out), "in", 0, 0)
    assert row[5] is None
    assert row[7] == 3.0
    assert isinstance(row[7], float)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (orjson.dumps(feature(sensor_id=5)), "sensor_id must be a string"),
        (orjson.dumps(feature(mean="x")), "mean must be a number"),
        (orjson.dumps(feature(mean=True)), "mean must be a number"),
        (orjson.dumps(feature(anomaly=1)), "anomaly must be true or false"),
        (orjson.dumps(feature(seq=1.5)), "seq must be an integer"),
        (orjson.dumps(feature(peak_bins=[1, "2"])), "peak_bins"),
        (orjson.dumps({"sensor_id": "a"}), "missing field"),
    ],
)
def test_sensor_row_refuses_what_the_table_cannot_hold(value: bytes, words: str) -> None:
    with pytest.raises(RowError, match=words):
        sensor_row(None, value, "in", 0, 0)


def test_generic_row_keeps_key_bytes_and_json_text() -> None:
    value = orjson.dumps({"a": [1, 2], "é": None})
    row = generic_row(b"\x00key", value, "in", 3, 9)
    assert row == ("in", 3, 9, b"\x00key", value.decode())
    assert len(row) == len(GENERIC_COLUMNS)
    assert generic_row(None, b"42", "in", 0, 1)[3] is None


@pytest.mark.parametrize("value", [b"\xff\xfe", b"{oops"])
def test_generic_row_refuses_non_json(value: bytes) -> None:
    with pytest.raises(RowError):
        generic_row(None, value, "in", 0, 0)


def test_row_builder_follows_the_transforms_declared_output() -> None:
    value = orjson.dumps(feature())
    assert row_builder("sensor-features")(None, value, "in", 0, 1) == sensor_row(
        None, value, "in", 0, 1
    )
    assert row_builder("identity") is generic_row  # declares no output
    assert rows_for(None) is generic_row


def test_a_declared_output_gives_typed_columns_and_checked_rows() -> None:
    declared = RecordSchema(
        "TotalByUser",
        (
            RecordField("user", "string"),
            RecordField("total", "double", minimum=0.5),
            RecordField("count", "int", optional=True),
            RecordField("ids", "long[]"),
        ),
    )
    table = table_for(declared)
    assert table.name == "total_by_user"
    assert table.typed
    assert table.columns[3:] == (
        ("user", "text NOT NULL"),
        ("total", "double precision NOT NULL"),
        ("count", "integer"),
        ("ids", "bigint[] NOT NULL"),
    )
    assert table.checks == (
        "CHECK (total > '-Infinity' AND total < 'Infinity')",
        "CHECK (total >= 0.5)",
    )
    build = rows_for(declared)
    row = build(b"k", b'{"user": "u", "total": 2, "ids": [1, 2], "extra": 0}', "t", 1, 5)
    assert row == ("t", 1, 5, "u", 2.0, None, [1, 2])
    assert isinstance(row[4], float)
    for bad, words in [
        (b'{"user": "u", "total": 1, "ids": [1.5]}', "ids must be an array of integers"),
        (b'{"user": "u", "total": 1e999, "ids": []}', "not JSON"),
        (b'{"user": "u", "total": 1, "ids": [], "count": true}', "count must be an integer"),
        (b'{"total": 1, "ids": []}', "missing field user"),
    ]:
        with pytest.raises(RowError, match=words):
            build(None, bad, "t", 0, 0)
    assert snake_case("SensorFeatures") == "sensor_features"


# ---- tables ----------------------------------------------------------------------------------


def test_tables_follow_the_transform_and_the_option() -> None:
    assert result_table("sensor-features").name == "sensor_features"
    assert result_table("sensor-features").typed
    assert result_table("identity").name == "stream_results"
    assert not result_table("identity").typed
    assert result_table("identity", "mine").name == "mine"
    assert offsets_table(result_table("identity", "mine")) == "stream_offsets"
    assert offsets_table(result_table("identity", "app.mine")) == "app.stream_offsets"
    ddl = result_table("sensor-features", "app.x").ddl()
    assert ddl.startswith('CREATE TABLE IF NOT EXISTS "app"."x"')
    assert "PRIMARY KEY (source_topic, source_partition, source_offset)" in ddl
    assert "peak_bins bigint[] NOT NULL" in ddl
    assert "CHECK (std > '-Infinity' AND std < 'Infinity')" in ddl
    assert "CHECK (std >= 0)" in ddl
    assert "CHECK (n >= 1)" in ddl


@pytest.mark.parametrize("name", ['x"; DROP TABLE y; --', "1abc", "a.b.c", "", "a b"])
def test_table_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="table name"):
        check_name(name)
    with pytest.raises(ValueError, match="table name"):
        quote(name)


# ---- retry policy ----------------------------------------------------------------------------


def test_backoff_grows_is_capped_and_stops_at_the_deadline() -> None:
    policy = Backoff(deadline=10.0, initial=0.1, factor=2.0, maximum=1.0)
    delays = [policy.delay(attempt, 100.0, 100.0) for attempt in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.delay(3, 100.0, 109.5) == 0.5  # never past the deadline
    assert policy.delay(0, 100.0, 110.0) is None
    assert policy.delay(10_000, 100.0, 101.0) == 1.0  # no overflow on long outages


# ---- options ---------------------------------------------------------------------------------


async def test_a_connection_broken_mid_statement_is_retried() -> None:
    """A server shutdown during COPY surfaces from asyncpg as InternalClientError (the
    ROLLBACK meets a connection still consuming the error): retried like a lost
    connection, not a fatal error."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    sink = PostgresSink(
        SinkConfig("postgresql://u:p@h/d", result_table("identity")), clock=lambda: 0.0, sleep=sleep
    )
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncpg.exceptions.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            )
        return "written"

    assert await sink._retrying(attempt) == "written"
    assert calls == 2
    assert len(slept) == 1


def test_sink_option_parses_lists_in_a_fixed_order() -> None:
    dsn = {"postgres_dsn": "postgresql://u:p@h/d"}
    assert load(RunSettings, {}, environ=NO_ENV).sinks == ("kafka",)
    assert load(RunSettings, {"sink": "postgres,kafka", **dsn}, environ=NO_ENV).sinks == (
        "kafka",
        "postgres",
    )
    assert load(RunSettings, {"sink": "postgres", **dsn}, environ=NO_ENV).sinks == ("postgres",)
    with pytest.raises(ConfigError, match="expected kafka, postgres"):
        load(RunSettings, {"sink": "kafka,mysql"}, environ=NO_ENV)


def test_postgres_sink_needs_a_dsn_and_never_shows_it(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="needs --postgres-dsn or --postgres-dsn-file"):
        load(RunSettings, {"sink": "postgres"}, environ=NO_ENV)
    secret = "postgresql://u:hunter2@h/d"  # noqa: S105 - a made-up one
    settings = load(RunSettings, {"sink": "postgres", "postgres_dsn": secret}, environ=NO_ENV)
    assert "hunter2" not in repr(settings)
    path = tmp_path / "dsn"
    path.write_text(secret + "\n")
    both = {"postgres_dsn": secret, "postgres_dsn_file": str(path)}
    with pytest.raises(ConfigError, match="not both") as caught:
        load(RunSettings, both, environ=NO_ENV)
    assert "hunter2" not in str(caught.value)
    from_file = load(DbSettings, {"postgres_dsn_file": str(path)}, environ=NO_ENV)
    from stream.config import postgres_dsn_value

    assert postgres_dsn_value(from_file) == secret
    with pytest.raises(ConfigError, match="no such file"):  # read by resolve(), not load()
        load(DbSettings, {"postgres_dsn_file": str(tmp_path / "nope")}, environ=NO_ENV).resolve()
    with pytest.raises(ConfigError, match="needs --postgres-dsn"):
        load(DbSettings, {}, environ=NO_ENV)


def test_pool_and_table_options_are_checked() -> None:
    dsn = {"sink": "postgres", "postgres_dsn": "postgresql://u:p@h/d"}
    with pytest.raises(ConfigError, match="--postgres-pool-min must not exceed"):
        load(RunSettings, {**dsn, "postgres_pool_min": "5", "postgres_pool_max": "2"}, environ={})
    with pytest.raises(ConfigError, match="--postgres-table"):
        load(RunSettings, {**dsn, "postgres_table": "x;y"}, environ=NO_ENV)
    env = {"STREAM_POSTGRES_TABLE": "app.results", "STREAM_POSTGRES_POOL_MAX": "8"}
    settings = load(RunSettings, dsn, environ=env)
    assert settings.postgres_table == "app.results"
    assert settings.postgres_pool_max == 8


def test_sink_config_from_run_settings() -> None:
    from stream.sink.admin import sink_config

    settings = load(
        RunSettings,
        {"sink": "kafka,postgres", "postgres_dsn": "postgresql://u:p@h/d", "transform": "identity"},
        environ=NO_ENV,
    )
    config = sink_config(settings)
    assert config.table.name == "stream_results"
    assert config.retry_deadline == settings.delivery_timeout
    assert (config.pool_min, config.pool_max) == (1, 4)
    assert "u:p@" not in repr(config)


# ---- metrics ---------------------------------------------------------------------------------


def test_sink_metrics_exist_at_zero_and_count() -> None:
    metrics = Metrics("identity", "in", "out", "in.dlq", sinks=["postgres"])
    text = generate_latest(metrics.registry).decode()
    for reason in SINK_REASONS:
        assert f'stream_sink_errors_total{{reason="{reason}",sink="postgres"}} 0.0' in text
    assert 'stream_sink_rows_written_total{sink="postgres"} 0.0' in text
    observer = SinkMetrics(metrics, "postgres")
    observer.written(500, 0.02)
    observer.error("sink_refused")
    observer.watch_pool(lambda: (3, 1))
    text = generate_latest(metrics.registry).decode()
    assert 'stream_sink_rows_written_total{sink="postgres"} 500.0' in text
    assert 'stream_sink_errors_total{reason="sink_refused",sink="postgres"} 1.0' in text
    assert 'stream_sink_write_duration_seconds_count{sink="postgres"} 1.0' in text
    assert 'stream_sink_pool_connections{sink="postgres",state="in_use"} 3.0' in text
    assert 'stream_sink_pool_connections{sink="postgres",state="idle"} 1.0' in text


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:pw@db.example:6432/app", "db.example:6432/app"),
        ("postgres://u:pw@db/app", "db:5432/app"),
        ("host=db password=pw dbname=app", "the --postgres-dsn server"),
        ("postgresql://u:pw@[::1:bad/app", "the --postgres-dsn server"),
    ],
)
def test_messages_name_the_server_never_the_password(dsn: str, shown: str) -> None:
    from stream.sink.postgres import where

    assert where(dsn) == shown
    assert "pw" not in where(dsn)
