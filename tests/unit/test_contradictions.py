"""Options of ``stream run`` that each pass but contradict each other stop the start with
one line naming both (exit 2), instead of a crash loop later (issue 20, item 10)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stream.config import RunSettings
from stream.options import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]
STREAM = Path(sys.executable).with_name("stream")
NO_BROKER = "127.0.0.1:1"  # nothing listens on port 1

EOS = {"guarantee": "exactly-once"}


def refused(**options: object) -> str:
    """The one-line message RunSettings refuses ``options`` with."""
    with pytest.raises(ConfigError) as caught:
        RunSettings(**options)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message
    assert "\n" not in message
    return message


# --- the transaction interval against the transaction timeout -----------------------------


def test_the_transaction_timeout_follows_the_drain_timeout() -> None:
    assert RunSettings().transaction_timeout == 60.0
    assert RunSettings(drain_timeout=10.0).transaction_timeout == 60.0
    assert RunSettings(drain_timeout=45.0).transaction_timeout == 90.0


def test_the_transaction_timeout_stays_within_what_a_broker_accepts_by_default() -> None:
    # A broker refuses a transactional producer asking for more than its
    # transaction.max.timeout.ms (15 min by default): with --drain-timeout 500 every
    # exactly-once start ended in "InvalidTransactionTimeout".
    assert RunSettings(drain_timeout=450.0).transaction_timeout == 900.0
    assert RunSettings(drain_timeout=500.0).transaction_timeout == 900.0
    assert RunSettings(drain_timeout=3600.0).transaction_timeout == 900.0


def test_past_the_longest_transaction_timeout_no_drain_timeout_helps() -> None:
    message = refused(drain_timeout=600.0, transaction_interval=500.0, **EOS)
    assert "at most 450s" in message
    assert "--drain-timeout at least" not in message


@pytest.mark.parametrize(
    ("drain", "interval"),
    [(30.0, 45.0), (30.0, 60.0), (30.0, 120.0), (30.0, 30.5), (100.0, 101.0)],
)
def test_an_interval_over_half_the_transaction_timeout_is_refused(
    drain: float, interval: float
) -> None:
    # The broker aborts a transaction open longer than the transaction timeout: a quiet
    # partition's transaction, open for the whole interval, was aborted every time, then
    # fenced and rewound until --delivery-timeout ended the process.
    message = refused(drain_timeout=drain, transaction_interval=interval, **EOS)
    assert message.startswith(f"--transaction-interval {interval:g}s")
    assert "--drain-timeout" in message
    assert f"at most {max(60.0, 2 * drain) / 2:g}s" in message


@pytest.mark.parametrize(("drain", "interval"), [(30.0, 30.0), (30.0, 0.1), (100.0, 100.0)])
def test_an_interval_within_half_the_transaction_timeout_is_accepted(
    drain: float, interval: float
) -> None:
    settings = RunSettings(drain_timeout=drain, transaction_interval=interval, **EOS)  # type: ignore[arg-type]
    assert settings.transaction_interval <= settings.transaction_timeout / 2


def test_a_longer_drain_timeout_makes_room_for_a_long_interval() -> None:
    RunSettings(drain_timeout=45.0, transaction_interval=45.0, **EOS)  # type: ignore[arg-type]


def test_at_least_once_has_no_transactions_to_time_out() -> None:
    RunSettings(guarantee="at-least-once", transaction_interval=600.0)


def test_the_contradiction_is_found_whichever_source_gives_the_options() -> None:
    with pytest.raises(ConfigError, match="--transaction-interval"):
        load(
            RunSettings,
            {"guarantee": "exactly-once"},
            environ={"STREAM_TRANSACTION_INTERVAL": "90"},
        )


# --- topics the service writes against the one it reads -------------------------------------


def test_a_dead_letter_topic_that_is_the_input_topic_is_refused() -> None:
    message = refused(input_topic="events", dlq_topic="events")
    assert "--dlq-topic" in message
    assert "--input-topic" in message


def test_an_output_topic_that_is_the_input_topic_is_refused() -> None:
    message = refused(input_topic="events", output_topic="events")
    assert "--output-topic" in message
    assert "--input-topic" in message


def test_an_output_topic_that_is_the_dead_letter_topic_is_refused() -> None:
    assert "--dlq-topic" in refused(output_topic="results", dlq_topic="results")
    default = refused(input_topic="events", output_topic="events.dlq")
    assert "--output-topic" in default
    assert "events.dlq" in default


def test_the_output_topic_is_free_when_results_go_only_to_postgres() -> None:
    RunSettings(
        input_topic="events",
        output_topic="events",
        sink="postgres",
        postgres_dsn="postgresql://stream@localhost/stream",
    )


# --- the command ----------------------------------------------------------------------------


def test_stream_run_with_contradicting_options_exits_2_with_one_line() -> None:
    done = subprocess.run(
        [
            str(STREAM),
            "run",
            "--bootstrap-servers",
            NO_BROKER,
            "--connect-timeout",
            "1",
            "--guarantee",
            "exactly-once",
            "--transaction-interval",
            "45",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT)},
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("stream run: error: --transaction-interval 45s")
    assert "--drain-timeout" in line
