"""`stream try` and transforms.testing: records through the worker's code path, in process."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.cli import main
from stream.formats.avro import AvroEncoder, avro_schema, schema_text
from stream.formats.container import SCHEMA_ID, NotAContainer
from stream.trial import Line, Trial, read_avro, read_lines, report_lines, run_file, run_trial
from stream.worker import process_batch
from transforms import LIMITS, BadRecord, Transform, resolve
from transforms.builtin import SENSOR_READING_SCHEMA
from transforms.testing import as_transform, run

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
    dead = [(d.number, d.reason) for d in trial.dead_letters]
    assert dead == [(2, "invalid_json"), (3, "schema")]
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


# --- Avro container files -------------------------------------------------------------------

READINGS = [
    EVENT,
    {**EVENT, "sensor_id": "b", "seq": 2, "values": []},  # a bad value: no readings
    {"sensor_id": "c", "seq": 3, "ts": 3.5, "values": [5.0, -7.0]},
    {"sensor_id": "d", "seq": 4, "ts": 4.0, "values": [0.5] * 9},
    {**EVENT, "sensor_id": "e", "seq": 5, "ts": 5.25, "values": [1e3, -1e-3, 0.0]},
]


def avro_bytes(events: Sequence[dict[str, Any]], codec: str = "null", sync: int = 16000) -> bytes:
    """A container file as fastavro.writer writes it, with the demo event's schema."""
    out = io.BytesIO()
    schema = fastavro.parse_schema(avro_schema(SENSOR_READING_SCHEMA))
    fastavro.writer(out, schema, list(events), codec=codec, sync_interval=sync)
    return out.getvalue()


def json_lines(events: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def run_on(
    data: bytes,
    input_format: str,
    transform: Transform | None = None,
    max_record_bytes: int = 1 << 20,
) -> Trial:
    return run_file(
        transform or resolve("sensor-features"),
        io.BytesIO(data),
        name="the file",
        input_format=input_format,
        max_record_bytes=max_record_bytes,
        max_array_length=100,
        batch_max_records=2,
    )


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_an_avro_file_gives_what_the_same_json_lines_give(codec: str) -> None:
    """Outputs, dead letters (number, reason, message) and their order, across batches
    and blocks (sync interval 60 bytes: a few records a block)."""
    from_avro = run_on(avro_bytes(READINGS, codec, sync=60), "avro")
    from_json = run_on(json_lines(READINGS), "json")
    assert from_avro.outputs == from_json.outputs
    assert from_avro.dead_letters == from_json.dead_letters
    assert [(d.number, d.reason) for d in from_avro.dead_letters] == [(2, "schema")]
    assert [n for n, _ in from_avro.outputs] == [1, 3, 4, 5]
    assert from_avro.records == 5


def test_each_avro_record_reaches_the_worker_as_kafka_would_carry_it() -> None:
    """Framed in the Confluent wire format, byte for byte what the registry encoder
    writes: so the worker's own Avro decoder is what reads them."""
    lines, codecs = read_avro(io.BytesIO(avro_bytes(READINGS, "deflate", sync=60)))
    text = schema_text(SENSOR_READING_SCHEMA)
    encoded = [
        v for v in AvroEncoder(SCHEMA_ID, text).encode_batch(READINGS) if isinstance(v, bytes)
    ]
    assert [(line.number, line.value) for line in lines] == list(enumerate(encoded, start=1))
    assert codecs.decoder.decode_batch(list(encoded), 1 << 20).items == READINGS


def test_the_size_limit_counts_the_framed_avro_record() -> None:
    (value,) = AvroEncoder(SCHEMA_ID, schema_text(SENSOR_READING_SCHEMA)).encode_batch([EVENT])
    assert isinstance(value, bytes)
    one = as_transform(lambda records: [1] * len(records))
    at_limit = run_on(avro_bytes([EVENT]), "avro", one, max_record_bytes=len(value))
    assert at_limit.outputs == [(1, b"1")]
    over = run_on(avro_bytes([EVENT]), "avro", one, max_record_bytes=len(value) - 1)
    assert [(d.number, d.reason) for d in over.dead_letters] == [(1, "too_large")]


def test_an_empty_avro_file_has_no_records() -> None:
    assert run_on(avro_bytes([]), "avro").summary().startswith("0 records: 0 outputs")


@pytest.mark.parametrize(
    "data", [b"", b"Obj", json_lines(READINGS), b"Obj\x02" + avro_bytes(READINGS)[4:]]
)
def test_a_file_that_is_not_an_avro_container_is_one_line(data: bytes) -> None:
    with pytest.raises(NotAContainer, match=r"^the file: not an Avro object container file \("):
        run_on(data, "avro")


def test_an_avro_file_cut_anywhere_is_refused_unless_cut_between_blocks() -> None:
    """At every length: a whole block's end reads the records before it (the file looks
    complete: nothing in a container says how many blocks follow); any other cut is one
    line naming the damage, never another exception."""
    data = avro_bytes(READINGS, "deflate", sync=60)
    whole = json_lines(READINGS)
    expected = run_on(whole, "json").outputs
    complete, refused = 0, []
    for length in range(len(data)):
        try:
            trial = run_on(data[:length], "avro")
        except NotAContainer as exc:
            refused.append(str(exc))
            continue
        complete += 1
        assert trial.records < len(READINGS)
        assert trial.outputs == expected[: len(trial.outputs)]
    assert complete >= 2  # after the header, and after at least one block
    assert all(m.startswith("the file: ") and "\n" not in m for m in refused)


def test_try_reads_an_avro_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.avro"
    path.write_bytes(avro_bytes(READINGS))
    assert main(["try", "--input-format", "avro", "--file", str(path)]) == 1
    out = capsys.readouterr().out
    assert "record 1: {" in out
    assert "record 2: dead letter (schema): " in out
    assert "5 records: 4 outputs, 1 dead letter (schema 1)" in out


def test_try_refuses_a_file_that_is_not_avro_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, orjson.dumps(EVENT))
    assert main(["try", "--input-format", "avro", "--file", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"stream try: error: --file {path!r}: not an Avro object container file "
        "(it starts with b'{\"se', not b'Obj\\x01')\n"
    )


def test_try_reads_an_avro_file_from_stdin_through_the_console_script() -> None:
    env = {"PATH": "", "STREAM_TRY_INPUT_FORMAT": "avro"}
    done = subprocess.run(
        [str(STREAM), "try", "--file", "-", "--allow-dead-letters"],
        input=avro_bytes(READINGS, "deflate"),
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode().splitlines()
    assert out[0].startswith("record 1: {")
    assert "record 2: dead letter (schema): values must not be empty" in out
    cut = subprocess.run(
        [str(STREAM), "try"],
        input=avro_bytes(READINGS)[:-20],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert cut.returncode == 2
    assert cut.stdout == b""
    assert cut.stderr.decode().splitlines() == [
        "stream try: error: stdin: the Avro block after record 0 cannot be read "
        "(the file is cut short)"
    ]


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
