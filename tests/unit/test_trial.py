"""`stream try` and transforms.testing: records through the worker's code path, in process."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.cli import main
from stream.trial import Line, read_lines, report_lines, run_trial
from stream.worker import process_batch
from transforms import LIMITS, BadRecord, resolve
from transforms.testing import run

EVENT = {"sensor_id": "a", "seq": 1, "ts": 1.0, "values": [1.0, 2.0, 3.0, 4.0]}
STREAM = Path(sys.executable).with_name("stream")


def lines(*values: bytes) -> list[Line]:
    return [Line(i + 1, v) for i, v in enumerate(values)]


def ticking(step: float) -> Iterator[float]:
    now = 0.0
    while True:
        yield now
        now += step


# --- stream.trial ---------------------------------------------------------------------------


def test_read_lines_skips_blank_lines_and_keeps_numbers() -> None:
    got = list(read_lines([b'{"a":1}\n', b"\n", b"  \r\n", b"x\r\n", b"last"]))
    assert got == [Line(1, b'{"a":1}'), Line(4, b"x"), Line(5, b"last")]


def test_outputs_and_dead_letters_in_input_order_with_their_line_numbers() -> None:
    clock = ticking(0.001)
    trial = run_trial(
        resolve("sensor-features"),
        lines(orjson.dumps(EVENT), b"not json", b'{"sensor_id": "b"}', orjson.dumps(EVENT)),
        max_record_bytes=1 << 20,
        max_array_length=100,
        batch_max_records=3,
        clock=lambda: next(clock),
    )
    assert [n for n, _ in trial.outputs] == [1, 4]
    assert orjson.loads(trial.outputs[0][1])["mean"] == 2.5
    assert [(d.line, d.reason) for d in trial.dead_letters] == [(2, "invalid_json"), (3, "schema")]
    assert trial.records == 4
    # Two batches (3 + 1), each timed once by the injected clock: 1 ms each.
    assert trial.seconds == pytest.approx(0.002)
    assert trial.us_per_record == pytest.approx(500.0)
    report = list(report_lines(trial))
    assert report[0].startswith("line 1: {")
    assert report[2].startswith("line 2: dead letter (invalid_json): ")
    assert report[-1] == (
        "4 records: 2 outputs, 2 dead letters (invalid_json 1, schema 1); "
        "500.0 µs per record (sensor-features)"
    )
    assert not [line for line in report_lines(trial, quiet=True) if "{" in line]


def test_limits_apply_and_are_restored() -> None:
    before = LIMITS.max_array_length
    trial = run_trial(
        resolve("sensor-features"),
        lines(orjson.dumps(EVENT), b"x" * 100),
        max_record_bytes=90,
        max_array_length=2,
        batch_max_records=10,
    )
    assert [d.reason for d in trial.dead_letters] == ["limit", "too_large"]
    assert LIMITS.max_array_length == before


def test_a_passthrough_transform_gives_the_input_back() -> None:
    trial = run_trial(
        resolve("identity"),
        lines(b'{"a": 1}', b"[oops"),
        max_record_bytes=1 << 20,
        max_array_length=10,
        batch_max_records=10,
    )
    assert trial.outputs == [(1, b'{"a": 1}')]
    assert [d.reason for d in trial.dead_letters] == ["invalid_json"]


# --- the command ------------------------------------------------------------------------------


def write(tmp_path: Path, *records: bytes) -> str:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(records) + b"\n")
    return str(path)


def test_try_exits_1_on_a_dead_letter_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, orjson.dumps(EVENT), b"{broken")
    assert main(["try", "--file", path]) == 1
    out = capsys.readouterr().out
    assert "line 1: {" in out
    assert "line 2: dead letter (invalid_json)" in out
    assert "2 records: 1 outputs, 1 dead letter (invalid_json 1)" in out
    assert "µs per record" in out
    assert main(["try", "--file", path, "--allow-dead-letters"]) == 0


def test_try_exits_0_when_every_record_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, orjson.dumps(EVENT), orjson.dumps(EVENT))
    assert main(["try", "--transform", "sensor-features", "--file", path]) == 0
    assert "2 records: 2 outputs, 0 dead letters" in capsys.readouterr().out


def test_try_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["try", "--file", str(tmp_path / "nope.jsonl")]) == 2
    assert "--file: cannot open" in capsys.readouterr().err


def test_try_an_unknown_transform_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["try", "--transform", "no-such", "--file", "-"]) == 2
    assert "unknown transform" in capsys.readouterr().err


def test_try_reads_stdin_and_its_env_names(tmp_path: Path) -> None:
    """The console script, as a CI would run it: stdin, STREAM_TRY_* variables."""
    events = orjson.dumps(EVENT) + b"\n" + orjson.dumps({**EVENT, "values": []}) + b"\n"
    env = {"PATH": "", "STREAM_TRANSFORM": "sensor-features", "STREAM_TRY_QUIET": "true"}
    done = subprocess.run(
        [str(STREAM), "try"], input=events, capture_output=True, env=env, timeout=60, check=False
    )
    out = done.stdout.decode()
    assert done.returncode == 1, done.stderr
    assert "line 1: {" not in out  # quiet
    assert "line 2: dead letter" in out
    done = subprocess.run(
        [str(STREAM), "try", "--file", "-"],
        input=events,
        capture_output=True,
        env={**env, "STREAM_TRY_ALLOW_DEAD_LETTERS": "1"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# --- transforms.testing ---------------------------------------------------------------------


def test_run_takes_objects_text_bytes_and_none() -> None:
    result = run("identity", [{"a": 1}, '{"b": 2}', b'{"c": 3}', None, b""])
    assert result.outputs == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert [(d.index, d.reason, d.value) for d in result.dead_letters] == [
        (3, "empty", None),
        (4, "empty", b""),
    ]
    assert result.raw[:3] == [b'{"a":1}', b'{"b": 2}', b'{"c": 3}']


def test_run_takes_a_plain_batch_function_and_isolates_a_crash() -> None:
    def double(records: Sequence[Any]) -> list[Any]:
        return [2 / r["x"] for r in records]

    result = run(double, [{"x": 1}, {"x": 0}, {"x": 4}])
    assert result.outputs == [2.0, 0.5]
    assert [(d.index, d.reason) for d in result.dead_letters] == [(1, "transform_error")]
    assert "ZeroDivisionError" in result.dead_letters[0].message


def test_run_sets_the_array_limit_for_the_call_only() -> None:
    before = LIMITS.max_array_length
    result = run("sensor-features", [EVENT], max_array_length=3)
    assert [d.reason for d in result.dead_letters] == ["limit"]
    assert LIMITS.max_array_length == before


def test_run_enforces_the_record_size_limit() -> None:
    result = run("identity", [{"a": "x" * 100}], max_record_bytes=50)
    assert [d.reason for d in result.dead_letters] == ["too_large"]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(
                lambda v: orjson.dumps({"sensor_id": "s", "seq": 1, "ts": 1.0, "values": v}),
                st.lists(st.floats(-1e6, 1e6), max_size=6),
            ),
            st.binary(max_size=20),
        ),
        max_size=12,
    ),
    st.integers(min_value=1, max_value=5),
)
def test_the_helper_gives_what_a_worker_gives(values: list[bytes], batch_size: int) -> None:
    """The same outputs and dead letters as stream.worker.process_batch, in any batching."""
    result = run("sensor-features", values, batch_size=batch_size)
    worker = process_batch("sensor-features", list(values), 1 << 20)
    assert result.raw == worker.materialize(list(values))
    assert [(d.index, d.reason, d.message) for d in result.dead_letters] == worker.errors


def test_bad_record_from_a_per_record_function_keeps_its_reason() -> None:
    def check(records: Sequence[Any]) -> list[Any]:
        return [BadRecord("negative", "below zero") if r < 0 else r for r in records]

    result = run(check, [1, -1])
    assert result.outputs == [1]
    assert [(d.reason, d.message) for d in result.dead_letters] == [("negative", "below zero")]


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        run("identity", [], batch_size=0)


def test_stdin_is_read_through_read_lines() -> None:
    assert [line.number for line in read_lines(io.BytesIO(b"a\n\nb\n"))] == [1, 3]
