"""The `stream` command, called in-process (and once or twice as the real console script)."""

from __future__ import annotations

import logging
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream import __version__
from stream.cli import main
from stream.config import (
    LagSettings,
    ProduceSettings,
    ReadSettings,
    RunSettings,
    TopicsSettings,
)
from stream.options import flag_name, option_env
from stream.options import option_fields as fields_of

ROOT = Path(__file__).resolve().parents[2]
STREAM = Path(sys.executable).with_name("stream")
NO_BROKER = "127.0.0.1:1"  # nothing listens on port 1


@pytest.fixture(autouse=True)
def clean_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No STREAM_* from the real environment; undo what main() does to sys.path and logging."""
    import os

    for name in list(os.environ):
        if name.startswith("STREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr(sys, "path", list(sys.path))
    root = logging.getLogger()
    aiokafka = logging.getLogger("aiokafka")
    saved = (list(root.handlers), root.level, aiokafka.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    aiokafka.setLevel(saved[2])


def run_cli(args: list[str]) -> int:
    """main()'s exit code, whether it returns it or argparse raises SystemExit."""
    try:
        return main(args)
    except SystemExit as exc:
        code = exc.code
        assert isinstance(code, int)
        return code


def one_line(text: str) -> str:
    assert text.endswith("\n"), repr(text)
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# --- help and version ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "cls"),
    [
        ("run", RunSettings),
        ("produce", ProduceSettings),
        ("read", ReadSettings),
        ("topics", TopicsSettings),
        ("lag", LagSettings),
    ],
)
def test_help_lists_every_option_with_its_env_var(
    command: str, cls: type[object], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())  # help text is wrapped; compare without the line breaks
    for f in fields_of(cls):
        assert flag_name(f.name) in out, f.name
        assert f"[env: {option_env(cls, f.name)}]" in flat, f.name
    assert "--config" in out
    assert "STREAM_CONFIG" in flat


def test_help_shows_defaults_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["run", "--help"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "(default: sensor-features; with --window" in flat
    assert "{earliest,latest}" in flat
    assert "{text,json}" in flat


def test_top_level_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("run", "produce", "read", "topics", "lag", "transforms"):
        assert command in out
    assert "precedence" in out


def test_transforms_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["transforms", "--help"]) == 0
    assert "usage: stream transforms" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--version"]) == 0
    assert capsys.readouterr().out == f"stream {__version__}\n"


# --- usage and configuration errors: exit 2, one line --------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "--workers", "0"], "--workers"),
        (["run", "--metrics-port", "99999"], "--metrics-port"),
        (["run", "--batch-max-bytes", "lots"], "--batch-max-bytes"),
        (["run", "--batch-max-records", "900", "--max-inflight-records", "10"], "900 > 10"),
        (["run", "--guarantee", "exactly-twice"], "at-least-once, exactly-once"),
        (["produce", "--count", "-1"], "--count"),
        (["produce", "--kind", "weather"], "sensor, matrix"),
        (["topics", "create", "--partitions", "zero"], "--partitions"),
        (["topics", "create", "--config", "/nonexistent.toml"], "/nonexistent.toml"),
    ],
)
def test_bad_option_value(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(args) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith(f"stream {args[0]}: error: ")
    assert words in line
    assert captured.out == ""


def test_bad_env_value(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAM_WORKERS", "several")
    assert run_cli(["run"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "STREAM_WORKERS" in line
    assert "--workers" in line


def test_bad_value_in_the_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stream.toml"
    path.write_text("[stream]\nlinger-ms = -5\n", encoding="utf-8")
    assert run_cli(["run", "--config", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--linger-ms" in line
    assert str(path) in line


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--no-such-option", "1"],
        ["produce", "--bogus"],
        ["run", "--workers"],  # missing value
        ["launch"],  # unknown subcommand
        [],  # no subcommand
        ["topics"],  # missing action
        ["topics", "delete"],  # bad action
    ],
)
def test_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(args) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert "error:" in line
    assert "--help" in line
    assert captured.out == ""


@pytest.mark.parametrize(
    ("args", "said"),
    [
        # An abbreviation is not accepted: it is an unknown option, with the one meant.
        (
            ["run", "--bootstrap-server", "h:1"],
            "--bootstrap-server; did you mean --bootstrap-servers?",
        ),
        (["lag", "--group", "g"], "--group; did you mean --group-id?"),
        # A misspelling: the closest option.
        (["produce", "--cuont", "5"], "--cuont; did you mean --count?"),
        (["topics", "create", "--partitons=3"], "--partitons; did you mean --partitions?"),
        (["run", "--transfrom", "identity", "--workers", "1"], "did you mean --transform?"),
        # Nothing close: no guess.
        (["produce", "--frobnicate"], "unknown option --frobnicate (see"),
    ],
)
def test_an_unknown_option_is_the_subcommands_error_with_the_closest_option(
    args: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(args) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith(f"stream {args[0]}: error: unknown option --")
    assert said in line
    assert line.endswith(f"(see stream {args[0]} --help)")
    assert captured.out == ""


def test_an_option_before_the_command_says_where_it_goes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli(["--bootstrap-servers", "h:1", "run", "--workers", "1"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "stream: error: --bootstrap-servers: options go after the command "
        "(stream run --bootstrap-servers ...) (see stream --help)"
    )


def test_unknown_transform_fails_before_any_connection(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    code = run_cli(
        [
            "run",
            "--transform",
            "no-such-thing",
            "--bootstrap-servers",
            NO_BROKER,
            "--connect-timeout",
            "30",
            "--metrics-port",
            "0",
        ]
    )
    elapsed = time.monotonic() - started
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("stream run: error: ")
    assert "'no-such-thing'" in line
    assert "sensor-features" in line  # it says what is known
    # Resolved before the pool, the metrics server or any Kafka client started.
    assert elapsed < 10
    assert multiprocessing.active_children() == []


def test_unimportable_user_transform(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["run", "--transform", "no_such_pkg.mod:fn", "--bootstrap-servers", NO_BROKER])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert "no_such_pkg.mod" in line


# --- commands -------------------------------------------------------------------------------


def test_transforms_lists_the_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["transforms"]) == 0
    captured = capsys.readouterr()
    names = [line.split()[0] for line in captured.out.splitlines() if line.strip()]
    for name in ("identity", "sensor-features", "matrix-inverse"):
        assert name in names
    assert "package.module:function" in captured.out
    assert captured.err == ""


def test_produce_without_a_broker_fails_fast(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = run_cli(
        ["produce", "--bootstrap-servers", NO_BROKER, "--connect-timeout", "1", "--count", "5"]
    )
    elapsed = time.monotonic() - started
    assert code == 1
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith("stream produce: error: ")
    assert "no Kafka broker answered" in line
    assert NO_BROKER in line
    assert captured.out == ""
    assert elapsed < 8


def test_produce_from_a_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["produce", "--file", "/nonexistent/events.jsonl", "--connect-timeout", "1"])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert "/nonexistent/events.jsonl" in line


# --- the installed console script -------------------------------------------------------------


def _script(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT)}
    return subprocess.run(
        [str(STREAM), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
    )


def test_console_script_version() -> None:
    done = _script("--version")
    assert done.returncode == 0
    assert done.stdout == f"stream {__version__}\n"
    assert done.stderr == ""


def test_console_script_bad_value_exit_code() -> None:
    done = _script("run", "--workers", "none")
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith("stream run: error: --workers")
    assert done.stdout == ""


def test_console_script_unknown_option_exit_code() -> None:
    done = _script("produce", "--frobnicate")
    assert done.returncode == 2
    assert "--frobnicate" in one_line(done.stderr)


def test_console_script_no_broker_is_one_line() -> None:
    started = time.monotonic()
    done = _script("produce", "--bootstrap-servers", NO_BROKER, "--connect-timeout", "1")
    assert time.monotonic() - started < 15
    assert done.returncode == 1
    assert "no Kafka broker answered" in done.stderr
    one_line(done.stderr)


def test_a_no_flag_undoes_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.cli_args import build_parser, settings_from
    from stream.config import RunSettings

    monkeypatch.setenv("STREAM_REQUIRE_KEY", "true")
    args = build_parser().parse_args(["run", "--no-require-key"])
    assert settings_from(RunSettings, args).require_key is False
    args = build_parser().parse_args(["run"])
    assert settings_from(RunSettings, args).require_key is True
    monkeypatch.setenv("STREAM_REQUIRE_KEY", "false")
    args = build_parser().parse_args(["run", "--require-key"])
    assert settings_from(RunSettings, args).require_key is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--require-key", "--no-require-key"])


def test_a_starting_group_coordinator_is_not_an_error() -> None:
    """A fresh broker answers GroupCoordinatorNotAvailable until its coordinator is up:
    normal start-up, so the line is INFO, not ERROR; other aiokafka errors stay errors."""
    import logging

    from stream.logs import RepeatFilter

    keep = RepeatFilter(prefix="aiokafka")
    starting = logging.LogRecord(
        "aiokafka.consumer.group_coordinator",
        logging.ERROR,
        "",
        0,
        "Group Coordinator Request failed: %s",
        ("[Error 15] CoordinatorNotAvailableError",),
        None,
    )
    other = logging.LogRecord(
        "aiokafka.consumer.group_coordinator",
        logging.ERROR,
        "",
        0,
        "Heartbeat failed: %r",
        ("boom",),
        None,
    )
    assert keep.filter(starting)
    assert starting.levelname == "INFO"
    assert keep.filter(other)
    assert other.levelname == "ERROR"


def test_a_reader_that_stops_early_ends_try_quietly(tmp_path: Path) -> None:
    """``stream try ... | head -1``: the pipe closes under it; no error, exit 0."""
    events = tmp_path / "events.jsonl"
    events.write_text('{"sensor_id":"a","ts":1,"values":[1]}\n' * 20_000)
    command = [sys.executable, "-m", "stream.cli", "try", "--transform", "identity"]
    with subprocess.Popen(
        [*command, "--file", str(events)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        assert process.stdout.readline().startswith("line 1: ")
        process.stdout.close()  # as head does once it has its line
        error = process.stderr.read()
        assert process.wait(timeout=30) == 0
    assert "Broken pipe" not in error
    assert "Traceback" not in error


def test_a_fenced_producer_s_leftover_request_is_not_an_error_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """asyncio logs aiokafka's unread failed request of a fenced (and handled) producer
    at ERROR with a traceback; the service says it at DEBUG, and other asyncio errors
    stay errors."""
    from stream.logs import setup_logging

    setup_logging("info")
    try:
        fenced = (
            "Future exception was never retrieved\n"
            "future: <Future finished exception=ProducerFenced('newer producer')>"
        )
        logging.getLogger("asyncio").error(fenced)
        logging.getLogger("asyncio").error("Task exception was never retrieved: KeyError")
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "ProducerFenced" not in err
    assert "ERROR" in err
    assert "KeyError" in err
