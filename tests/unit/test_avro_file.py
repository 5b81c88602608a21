"""`stream produce --avro-file PATH` (no broker): the demo events as an Avro object
container file, read back with fastavro, and accepted by the README's Avro example,
`stream try --input-format avro --file PATH`."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fastavro import reader

from stream.cli import main
from stream.config import ProduceSettings
from stream.produce import demo_events


def test_the_file_holds_the_demo_events_and_stream_try_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "readings.avro"
    options = ["--count", "30", "--seed", "7", "--keys", "4", "--values", "16"]
    assert main(["produce", "--avro-file", str(path), *options]) == 0
    said = capsys.readouterr().out
    assert said == (
        f"wrote 30 sensor events (4 keys, seed 7) to {path} (an Avro object container file)\n"
    )
    with path.open("rb") as handle:
        read = reader(handle)
        schema = read.writer_schema
        assert isinstance(schema, dict)
        assert schema["name"] == "stream.SensorReading"  # the schema --format avro registers
        records = list(read)
    settings = ProduceSettings(count=30, seed=7, keys=4, values=16)
    expected = [orjson.loads(e.value) for e in demo_events(settings)]
    assert len(records) == 30
    for got, want in zip(records, expected, strict=True):
        assert isinstance(got, dict)
        assert got["ts"] > 0  # the time it was made: not the same in two runs
        assert {k: v for k, v in got.items() if k != "ts"} == {
            k: v for k, v in want.items() if k != "ts"
        }

    assert main(["try", "--input-format", "avro", "--file", str(path), "--quiet"]) == 0
    (summary,) = capsys.readouterr().out.splitlines()
    assert summary.startswith("30 records: 30 outputs, 0 dead letters")


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--kind", "matrix"], "--avro-file writes sensor demo events only"),
        (["--file", "events.jsonl"], "--avro-file writes sensor demo events only"),
    ],
)
def test_what_it_cannot_write_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    path = tmp_path / "x.avro"
    assert main(["produce", "--avro-file", str(path), *extra]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("stream produce: error: ")
    assert says in line
    assert not path.exists()


def test_a_path_that_cannot_be_written_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "no-such-folder" / "x.avro"
    assert main(["produce", "--avro-file", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"stream produce: error: --avro-file: cannot write {str(path)!r}: No such file or directory"
    )
