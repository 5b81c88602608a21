"""The option machinery (stream.options) and the declarations' contracts: per-command
environment names, --help sections and defaults, and settings without I/O."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.cli import main
from stream.config import (
    GROUPS,
    BenchSettings,
    KafkaSettings,
    LagSettings,
    ProduceSettings,
    RunSettings,
    TopicsSettings,
    TrySettings,
)
from stream.options import (
    ConfigError,
    env_name,
    flag_name,
    format_size,
    load,
    option_env,
    option_fields,
    shown_default,
    size,
)

COMMANDS: dict[str, type[Any]] = {
    "run": RunSettings,
    "produce": ProduceSettings,
    "topics": TopicsSettings,
    "lag": LagSettings,
    "bench": BenchSettings,
    "try": TrySettings,
}
KAFKA = {f.name for f in dataclasses.fields(KafkaSettings)}


def field(cls: type[Any], name: str) -> dataclasses.Field[Any]:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    return capsys.readouterr().out


# --- sizes ------------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=1 << 40))
def test_a_shown_size_reads_back_as_the_same_number(value: int) -> None:
    assert size(format_size(value)) == value


@pytest.mark.parametrize(
    ("value", "shown"),
    [(1 << 20, "1MiB"), (64 << 20, "64MiB"), (512 << 10, "512KiB"), (1000, "1000"), (1, "1")],
)
def test_sizes_are_shown_in_their_unit(value: int, shown: str) -> None:
    assert format_size(value) == shown


def test_defaults_as_help_shows_them() -> None:
    assert shown_default(field(RunSettings, "batch_max_bytes")) == "1MiB"
    assert shown_default(field(RunSettings, "max_inflight_bytes")) == "64MiB"
    assert shown_default(field(RunSettings, "require_key")) == "off"
    assert shown_default(field(KafkaSettings, "ssl_check_hostname")) == "on"
    assert shown_default(field(KafkaSettings, "sasl_password")) == ""  # a secret
    assert shown_default(field(KafkaSettings, "dlq_topic")) == ""  # help says it
    assert shown_default(field(ProduceSettings, "file")) == ""  # empty text
    assert shown_default(field(RunSettings, "guarantee")) == "at-least-once"


# --- environment names ---------------------------------------------------------------------------


def test_kafka_and_service_options_keep_their_names() -> None:
    assert option_env(RunSettings, "bootstrap_servers") == "STREAM_BOOTSTRAP_SERVERS"
    assert option_env(ProduceSettings, "bootstrap_servers") == "STREAM_BOOTSTRAP_SERVERS"
    assert option_env(RunSettings, "workers") == "STREAM_WORKERS"
    assert option_env(LagSettings, "group_id") == "STREAM_GROUP_ID"  # the service's group
    assert option_env(TrySettings, "transform") == "STREAM_TRANSFORM"


def test_a_commands_own_options_carry_its_name() -> None:
    assert option_env(ProduceSettings, "count") == "STREAM_PRODUCE_COUNT"
    assert option_env(BenchSettings, "count") == "STREAM_BENCH_COUNT"
    assert option_env(BenchSettings, "output") == "STREAM_BENCH_OUTPUT"
    assert option_env(TopicsSettings, "partitions") == "STREAM_TOPICS_PARTITIONS"
    assert option_env(TrySettings, "file") == "STREAM_TRY_FILE"


def test_one_variable_never_feeds_two_different_options() -> None:
    """Where two commands read one variable, it is the same option: same name, same
    parser and default (the Kafka connection, the service's transform...)."""
    readers: dict[str, set[tuple[str, Any, Any]]] = defaultdict(set)
    for cls in COMMANDS.values():
        for f in option_fields(cls):
            readers[option_env(cls, f.name)].add((f.name, f.metadata["parse"], f.default))
    clashes = {env: r for env, r in readers.items() if len(r) > 1}
    assert clashes == {}


def test_the_renamed_variables_are_read_and_the_old_ones_are_not() -> None:
    settings = load(ProduceSettings, {}, environ={"STREAM_PRODUCE_COUNT": "7", "STREAM_COUNT": "9"})
    assert settings.count == 7
    assert load(ProduceSettings, {}, environ={"STREAM_COUNT": "9"}).count == 1000
    bench = load(BenchSettings, {}, environ={"STREAM_BENCH_OUTPUT": "r.json"})
    assert bench.output == "r.json"
    assert load(BenchSettings, {}, environ={"STREAM_OUTPUT": "x"}).output == ""


def test_errors_name_the_variable_that_was_read() -> None:
    with pytest.raises(ConfigError, match=r"^--rate \(from STREAM_BENCH_RATE\): "):
        load(BenchSettings, {}, environ={"STREAM_BENCH_RATE": "fast"})


# --- what each command offers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "unused"),
    [
        (ProduceSettings, {"output_topic", "dlq_topic"}),
        (LagSettings, {"output_topic", "dlq_topic"}),
        (BenchSettings, {"input_topic", "output_topic", "dlq_topic"}),
    ],
)
def test_commands_offer_only_the_topics_they_use(cls: type[Any], unused: set[str]) -> None:
    names = {f.name for f in option_fields(cls)}
    assert not names & unused
    assert {"bootstrap_servers", "security_protocol"} <= names


def test_produce_help_lists_only_what_produce_uses(capsys: pytest.CaptureFixture[str]) -> None:
    out = help_of("produce", capsys)
    assert "--output-topic" not in out
    assert "--dlq-topic" not in out
    assert "--input-topic" in out  # the default topic it sends to
    assert "[env: STREAM_PRODUCE_COUNT]" in " ".join(out.split())


def test_run_help_is_in_sections(capsys: pytest.CaptureFixture[str]) -> None:
    out = help_of("run", capsys)
    headings = [line.rstrip(":") for line in out.splitlines() if line.endswith(":")]
    assert [h for h in headings if h in GROUPS] == list(GROUPS)
    flat = " ".join(out.split())
    assert "(default: )" not in flat
    assert "(default: 1048576)" not in flat
    assert "--batch-max-bytes SIZE most bytes in one batch sent to a worker (default: 1MiB)" in flat
    assert "(default: off) [env: STREAM_REQUIRE_KEY]" in flat
    # Each section holds its options: the security options under connection and security.
    connection = out.split("connection and security:")[1].split("\n\n")[0]
    assert "--sasl-username" in connection
    assert "--workers" not in connection


def test_every_option_of_run_has_a_group() -> None:
    assert all(f.metadata["group"] in GROUPS for f in option_fields(RunSettings))


def test_every_env_name_of_config_is_stream_prefixed() -> None:
    assert env_name("config") == "STREAM_CONFIG"
    for cls in COMMANDS.values():
        for f in option_fields(cls):
            assert option_env(cls, f.name).startswith("STREAM_"), flag_name(f.name)


# --- the service's new defaults ----------------------------------------------------------------


def test_records_without_a_key_are_processed_by_default() -> None:
    assert RunSettings().require_key is False
    assert load(RunSettings, {"require_key": "true"}, environ={}).require_key is True


def test_dead_letter_topic_replication_factor() -> None:
    assert RunSettings().dlq_replication_factor == 1
    settings = load(RunSettings, {}, environ={"STREAM_DLQ_REPLICATION_FACTOR": "3"})
    assert settings.dlq_replication_factor == 3
    with pytest.raises(ConfigError, match="--dlq-replication-factor"):
        load(RunSettings, {"dlq_replication_factor": "0"}, environ={})


# --- settings without I/O; resolve() does the I/O --------------------------------------------


def test_building_settings_reads_no_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    settings = RunSettings(security_protocol="SSL", ssl_cafile=missing)  # no error yet
    with pytest.raises(ConfigError, match=r"^--ssl-cafile: .* does not exist$"):
        settings.resolve()


def test_resolve_reads_the_password_file_and_returns_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "password"
    settings = ProduceSettings(
        security_protocol="SASL_SSL", sasl_username="a", sasl_password_file=str(path)
    )
    with pytest.raises(ConfigError, match="does not exist"):
        settings.resolve()
    path.write_text("secret\n", encoding="utf-8")
    assert settings.resolve() is settings


def test_options_that_do_not_fit_together_fail_without_resolve() -> None:
    with pytest.raises(ConfigError, match="needs --sasl-username"):
        KafkaSettings(security_protocol="SASL_SSL")
    with pytest.raises(ConfigError, match="--batch-max-records must not exceed"):
        RunSettings(batch_max_records=10, max_inflight_records=5)


def test_the_cli_resolves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.pem")
    code = main(["topics", "describe", "--security-protocol", "SSL", "--ssl-cafile", missing])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
