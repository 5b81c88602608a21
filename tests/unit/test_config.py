"""Settings: flag > environment > config file > default, and one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stream.config import KafkaSettings, ProduceSettings, RunSettings, TopicsSettings
from stream.options import ConfigError, env_name, flag_name, load, option_fields

NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str, name: str = "stream.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def config_error(
    cls: type[object],
    flags: dict[str, str] | None = None,
    environ: dict[str, str] | None = None,
    config_file: str | None = None,
) -> str:
    """The message of the ConfigError ``load`` raises; it must be one line."""
    with pytest.raises(ConfigError) as caught:
        load(
            cls,
            flags or {},
            environ=environ if environ is not None else {},
            config_file=config_file,
        )
    message = str(caught.value)
    assert message
    assert "\n" not in message
    return message


# --- defaults and names -----------------------------------------------------------------------


def test_defaults_without_any_source() -> None:
    settings = load(RunSettings, {}, environ=NO_ENV)
    assert settings == RunSettings()
    assert settings.bootstrap_servers == "localhost:9092"
    assert settings.batch_max_bytes == 1 << 20
    assert settings.guarantee == "at-least-once"


def test_flag_and_env_names() -> None:
    assert flag_name("batch_max_bytes") == "--batch-max-bytes"
    assert env_name("batch_max_bytes") == "STREAM_BATCH_MAX_BYTES"
    assert env_name("config") == "STREAM_CONFIG"


def test_every_option_has_help_and_a_parser() -> None:
    for cls in (RunSettings, ProduceSettings, TopicsSettings):
        fields = option_fields(cls)
        hidden: frozenset[str] = getattr(cls, "HIDDEN", frozenset())
        assert len(fields) == len(dataclasses.fields(cls)) - len(hidden)
        for f in fields:
            assert f.metadata["help"]
            assert callable(f.metadata["parse"])


def test_load_ignores_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_CLIENT_ID", "from-os-environ")
    assert load(RunSettings, {}, environ=NO_ENV).client_id == "stream"
    assert load(RunSettings, {}).client_id == "from-os-environ"  # None means os.environ


# --- precedence -----------------------------------------------------------------------------


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'client-id = "from-file"\ngroup_id = "file-group"\ninput-topic = "file-in"\n'
        'output_topic = "file-out"\n',
    )
    environ = {"STREAM_CLIENT_ID": "from-env", "STREAM_GROUP_ID": "env-group"}
    flags = {"client_id": "from-flag"}
    settings = load(RunSettings, flags, environ=environ, config_file=path)
    assert settings.client_id == "from-flag"  # flag beats env and file
    assert settings.group_id == "env-group"  # env beats file
    assert settings.input_topic == "file-in"  # file beats default
    assert settings.output_topic == "file-out"
    assert settings.bootstrap_servers == "localhost:9092"  # default


@pytest.mark.parametrize(
    ("flags", "environ", "in_file", "expected"),
    [
        ({"workers": "5"}, {"STREAM_WORKERS": "4"}, 3, 5),
        ({}, {"STREAM_WORKERS": "4"}, 3, 4),
        ({}, {}, 3, 3),
        ({}, {"STREAM_OTHER": "9"}, None, RunSettings().workers),
    ],
)
def test_precedence_of_one_typed_option(
    tmp_path: Path,
    flags: dict[str, str],
    environ: dict[str, str],
    in_file: int | None,
    expected: int,
) -> None:
    path = write(tmp_path, f"workers = {in_file}\n" if in_file is not None else "")
    assert load(RunSettings, flags, environ=environ, config_file=path).workers == expected


def test_config_file_from_stream_config_env(tmp_path: Path) -> None:
    path = write(tmp_path, 'client_id = "via-env-path"\n')
    settings = load(RunSettings, {}, environ={"STREAM_CONFIG": path})
    assert settings.client_id == "via-env-path"


def test_config_flag_beats_stream_config_env(tmp_path: Path) -> None:
    from_env = write(tmp_path, 'client_id = "env-file"\n', "env.toml")
    from_flag = write(tmp_path, 'client_id = "flag-file"\n', "flag.toml")
    settings = load(RunSettings, {}, environ={"STREAM_CONFIG": from_env}, config_file=from_flag)
    assert settings.client_id == "flag-file"


def test_config_file_under_a_stream_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[stream]\nbatch-max-records = 7\nlog_level = "debug"\nbatch_max_bytes = "256KiB"\n',
    )
    settings = load(RunSettings, {}, environ=NO_ENV, config_file=path)
    assert settings.batch_max_records == 7
    assert settings.log_level == "debug"
    assert settings.batch_max_bytes == 256 * 1024


def test_config_file_typed_toml_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'count = 12\nrate = 2.5\nquiet = true\nkind = "matrix"\nseed = -3\n',
    )
    settings = load(ProduceSettings, {}, environ=NO_ENV, config_file=path)
    assert settings.count == 12
    assert settings.rate == 2.5
    assert settings.quiet is True
    assert settings.kind == "matrix"
    assert settings.seed == -3


def test_config_file_bool_false_and_env_bool(tmp_path: Path) -> None:
    path = write(tmp_path, "quiet = false\n")
    assert load(ProduceSettings, {}, environ=NO_ENV, config_file=path).quiet is False
    environ = {"STREAM_PRODUCE_QUIET": "yes"}
    assert load(ProduceSettings, {}, environ=environ, config_file=path).quiet is True
    message = config_error(ProduceSettings, environ={"STREAM_PRODUCE_QUIET": "maybe"})
    assert "--quiet" in message
    assert "STREAM_PRODUCE_QUIET" in message


def test_options_of_other_commands_in_the_file_are_accepted(tmp_path: Path) -> None:
    # One file for every subcommand: `partitions` is a `topics` option, `count` a `produce` one.
    path = write(tmp_path, 'partitions = 8\ncount = 5\ngroup-id = "g"\n')
    assert load(RunSettings, {}, environ=NO_ENV, config_file=path).group_id == "g"
    assert load(TopicsSettings, {}, environ=NO_ENV, config_file=path).partitions == 8
    assert load(ProduceSettings, {}, environ=NO_ENV, config_file=path).count == 5


def test_unknown_key_in_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'client_id = "x"\nbatch-size = 10\nzzz = 1\n')
    message = config_error(RunSettings, config_file=path)
    assert path in message
    assert "batch_size" in message
    assert "zzz" in message


def test_missing_config_file() -> None:
    message = config_error(RunSettings, config_file="/nonexistent/stream.toml")
    assert "/nonexistent/stream.toml" in message
    assert "does not exist" in message


def test_config_file_that_is_not_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "client_id = \nthis is not toml [[[\n")
    message = config_error(RunSettings, config_file=path)
    assert path in message
    assert "cannot be read" in message


def test_config_file_stream_key_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'stream = "oops"\n')
    assert "[stream] must be a table" in config_error(RunSettings, config_file=path)


# --- bad values -----------------------------------------------------------------------------


def test_bad_flag_value_names_the_flag() -> None:
    message = config_error(RunSettings, flags={"workers": "0"})
    assert message.startswith("--workers")
    assert "at least 1" in message
    assert "'0'" in message


def test_bad_env_value_names_the_env_var() -> None:
    message = config_error(RunSettings, environ={"STREAM_WORKERS": "many"})
    assert "--workers" in message
    assert "STREAM_WORKERS" in message
    assert "whole number" in message
    assert "'many'" in message


def test_bad_file_value_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "metrics-port = 70000\n")
    message = config_error(RunSettings, config_file=path)
    assert "--metrics-port" in message
    assert path in message
    assert "65535" in message


def test_bad_value_in_a_lower_source_is_not_read_when_a_higher_one_is_set(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, 'workers = "lots"\n')
    environ = {"STREAM_WORKERS": "2"}
    assert load(RunSettings, {}, environ=environ, config_file=path).workers == 2


def test_bad_value_with_a_newline_still_gives_one_line() -> None:
    message = config_error(RunSettings, environ={"STREAM_LOG_LEVEL": "info\nerror"})
    assert "STREAM_LOG_LEVEL" in message
    assert "debug, info, warning, error" in message


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("guarantee", "exactly-twice", "must be one of at-least-once, exactly-once"),
        ("auto_offset_reset", "middle", "must be one of earliest, latest"),
        ("commit_interval", "0", "more than 0"),
        ("commit_interval", "-1", "more than 0"),
        ("commit_interval", "nan", "finite"),
        ("stats_interval", "-0.5", "0 or more"),
        ("linger_ms", "-1", "0 or more"),
        ("metrics_port", "-1", "port number"),
        ("connect_timeout", "soon", "expected a number"),
        ("bootstrap_servers", "   ", "must not be empty"),
        ("batch_max_bytes", "4 parsecs", "byte size"),
        ("batch_max_bytes", "0", "at least 1 byte"),
        ("batch_max_bytes", "MiB", "byte size"),
        ("batch_max_bytes", "-5k", "at least 1 byte"),
    ],
)
def test_bad_values(name: str, value: str, words: str) -> None:
    message = config_error(RunSettings, flags={name: value})
    assert message.startswith(flag_name(name))
    assert words in message


@pytest.mark.parametrize("value", ["1e400", "1e400k", "1.5.5", "9" * 400 + "GiB"])
def test_absurd_sizes_are_config_errors_not_crashes(value: str) -> None:
    # float('1e400') is inf; int(inf) raised OverflowError, which escaped as a traceback.
    message = config_error(RunSettings, flags={"max_record_bytes": value})
    assert "--max-record-bytes" in message
    assert "byte size" in message


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "1e400"])
def test_non_finite_durations_are_config_errors(value: str) -> None:
    # --drain-timeout inf was accepted, then crashed `stream run` with OverflowError when the
    # consumer was configured (int(inf * 2000)).
    message = config_error(RunSettings, flags={"drain_timeout": value})
    assert "--drain-timeout" in message
    assert "finite" in message


# --- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", 1048576),
        ("4MiB", 4 * 1024 * 1024),
        ("4mib", 4 * 1024 * 1024),
        ("4 MiB", 4 * 1024 * 1024),
        ("4MB", 4 * 1024 * 1024),
        ("4m", 4 * 1024 * 1024),
        ("512KiB", 512 * 1024),
        ("512k", 512 * 1024),
        ("1.5k", 1536),
        ("1GiB", 1024**3),
        ("10b", 10),
        (" 64 kb ", 64 * 1024),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    # Below the in-flight cap so RunSettings' cross-field check does not interfere.
    flags = {"max_record_bytes": text}
    assert load(RunSettings, flags, environ=NO_ENV).max_record_bytes == expected


def test_size_from_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'max-inflight-bytes = "128MiB"\nfetch_max_bytes = 2097152\n')
    environ = {"STREAM_MAX_PARTITION_FETCH_BYTES": "2MiB"}
    settings = load(RunSettings, {}, environ=environ, config_file=path)
    assert settings.max_inflight_bytes == 128 * 1024**2
    assert settings.fetch_max_bytes == 2 * 1024**2
    assert settings.max_partition_fetch_bytes == 2 * 1024**2


# --- derived values and cross-field validation --------------------------------------------


def test_dead_letter_topic_defaults_to_input_dot_dlq() -> None:
    settings = load(RunSettings, {"input_topic": "orders"}, environ=NO_ENV)
    assert settings.dlq_topic == ""
    assert settings.dead_letter_topic == "orders.dlq"
    assert KafkaSettings().dead_letter_topic == "input_topic.dlq"


def test_dead_letter_topic_explicit() -> None:
    environ = {"STREAM_DLQ_TOPIC": "bad-orders"}
    settings = load(RunSettings, {"input_topic": "orders"}, environ=environ)
    assert settings.dead_letter_topic == "bad-orders"


def test_batch_records_above_inflight_records_is_rejected() -> None:
    flags = {"batch_max_records": "600", "max_inflight_records": "500"}
    message = config_error(RunSettings, flags=flags)
    assert "--batch-max-records" in message
    assert "--max-inflight-records" in message
    assert "600 > 500" in message


def test_batch_bytes_above_inflight_bytes_is_rejected() -> None:
    environ = {"STREAM_BATCH_MAX_BYTES": "2MiB", "STREAM_MAX_INFLIGHT_BYTES": "1MiB"}
    message = config_error(RunSettings, environ=environ)
    assert "--batch-max-bytes" in message
    assert "--max-inflight-bytes" in message


def test_batch_equal_to_inflight_is_accepted() -> None:
    flags = {
        "batch_max_records": "100",
        "max_inflight_records": "100",
        "batch_max_bytes": "1MiB",
        "max_inflight_bytes": "1048576",
    }
    settings = load(RunSettings, flags, environ=NO_ENV)
    assert settings.batch_max_records == settings.max_inflight_records == 100
    assert settings.batch_max_bytes == settings.max_inflight_bytes == 1 << 20


def test_cross_field_check_also_guards_direct_construction() -> None:
    with pytest.raises(ConfigError, match="--batch-max-records"):
        RunSettings(batch_max_records=10, max_inflight_records=5)


def test_a_short_batch_timeout_needs_no_registry_setting_when_the_formats_are_json() -> None:

    assert RunSettings(batch_timeout=3).batch_timeout == 3
    with pytest.raises(ConfigError, match="schema-registry-retry"):
        RunSettings(
            batch_timeout=3,
            input_format="avro",
            schema_registry_url="http://127.0.0.1:8081/apis/ccompat/v7",
        )
