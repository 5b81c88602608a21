"""``stream try``: records from a file through a transform, in this process, by the code
a worker runs (decode, size limit, transform, encode): :func:`transforms.batch.run_batch`,
with JSON's codec for JSON lines, or for an Avro container file the worker's Avro decoder
on each record framed as Kafka would carry it, with JSON out. No broker, no pool, no
registry. Plain logic: the CLI opens the file and prints the lines.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from stream.formats.spec import Codecs
from transforms import LIMITS, Transform, set_limits
from transforms.batch import BatchOutcome, run_batch
from transforms.codec import JSON_ENCODER


@dataclass(frozen=True, slots=True)
class Line:
    """One input record: its number in the file (from 1: a JSON line's line number, an
    Avro record's place in the file) and its bytes."""

    number: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the service would send to the dead-letter topic."""

    number: int
    reason: str
    message: str


@dataclass(slots=True)
class Trial:
    """What a run gave: outputs (line number, encoded output) and dead letters, both in
    input order, and the time spent in the worker's code path."""

    transform: str
    records: int = 0
    outputs: list[tuple[int, bytes]] = field(default_factory=list)
    dead_letters: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def us_per_record(self) -> float:
        return self.seconds / self.records * 1e6 if self.records else 0.0

    def reasons(self) -> Counter[str]:
        return Counter(d.reason for d in self.dead_letters)

    def summary(self) -> str:
        dead = len(self.dead_letters)
        why = ", ".join(f"{r} {n}" for r, n in sorted(self.reasons().items()))
        letters = f"{dead} dead letter{'' if dead == 1 else 's'}" + (f" ({why})" if why else "")
        return (
            f"{self.records} records: {len(self.outputs)} outputs, {letters}; "
            f"{self.us_per_record:.1f} µs per record ({self.transform})"
        )


def read_lines(chunks: Iterable[bytes]) -> Iterator[Line]:
    """The non-empty lines of a JSON-lines file, without their line breaks."""
    for number, raw in enumerate(chunks, start=1):
        value = raw.rstrip(b"\r\n")
        if value.strip():
            yield Line(number, value)


def read_avro(handle: BinaryIO) -> tuple[Iterator[Line], Codecs]:
    """The records of an Avro object container file, numbered from 1, each framed as a
    worker would get it from Kafka, and the codecs a worker would decode them with (the
    file's writer schema standing in for the registry's), encoding outputs as JSON.
    Raises :class:`~stream.formats.container.NotAContainer` for a file that is not one
    (on opening), or that is cut short or damaged (when the iteration gets there)."""
    from stream.formats import avro  # noqa: PLC0415 - only Avro files pay for fastavro
    from stream.formats.container import open_container  # noqa: PLC0415
    from stream.formats.registry import StaticSchemas  # noqa: PLC0415

    container = open_container(handle)
    codecs = Codecs(avro.decoder(StaticSchemas(container.schema)), JSON_ENCODER, None)
    lines = (Line(number, value) for number, value in enumerate(container.values, start=1))
    return lines, codecs


def run_file(
    transform: Transform,
    handle: BinaryIO,
    *,
    name: str,
    input_format: str,
    max_record_bytes: int,
    max_array_length: int,
    batch_max_records: int,
) -> Trial:
    """:func:`run_trial` on a file of JSON lines or (``input_format`` avro) an Avro
    container file. A file that is not a container, or is cut short, raises
    :class:`~stream.formats.container.NotAContainer` with ``name`` in its one line."""
    if input_format == "json":
        return run_trial(
            transform,
            read_lines(handle),
            max_record_bytes=max_record_bytes,
            max_array_length=max_array_length,
            batch_max_records=batch_max_records,
        )
    from stream.formats.container import NotAContainer  # noqa: PLC0415

    try:
        lines, codecs = read_avro(handle)
        return run_trial(
            transform,
            lines,
            max_record_bytes=max_record_bytes,
            max_array_length=max_array_length,
            batch_max_records=batch_max_records,
            codecs=codecs,
        )
    except NotAContainer as exc:
        raise NotAContainer(f"{name}: {exc}") from None


def run_trial(
    transform: Transform,
    lines: Iterable[Line],
    *,
    max_record_bytes: int,
    max_array_length: int,
    batch_max_records: int,
    codecs: Codecs | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Trial:
    """Run the lines through ``transform`` in batches, as the service's workers would:
    as JSON, or through ``codecs`` (from :func:`read_avro`)."""

    def process(values: list[bytes | None]) -> BatchOutcome:
        if codecs is None:
            return run_batch(transform, values, max_record_bytes)
        return run_batch(
            transform,
            values,
            max_record_bytes,
            decoder=codecs.decoder,
            encoder=codecs.encoder,
            same_bytes=False,
        )

    trial = Trial(transform.name)
    previous = LIMITS.max_array_length
    set_limits(max_array_length)
    try:
        batch: list[Line] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= batch_max_records:
                _run(trial, batch, process, clock)
                batch = []
        if batch:
            _run(trial, batch, process, clock)
    finally:
        set_limits(previous)
    return trial


def _run(
    trial: Trial,
    batch: list[Line],
    process: Callable[[list[bytes | None]], BatchOutcome],
    clock: Callable[[], float],
) -> None:
    values: list[bytes | None] = [line.value for line in batch]
    started = clock()
    outcome = process(values)
    trial.seconds += clock() - started
    trial.records += len(batch)
    failed = {}
    for index, reason, message in outcome.errors:
        failed[index] = Rejected(batch[index].number, reason, message)
    for index, line in enumerate(batch):
        if index in failed:
            trial.dead_letters.append(failed[index])
            continue
        output = line.value if outcome.outputs is None else outcome.outputs[index]
        assert output is not None  # run_batch: an output for every record without an error
        trial.outputs.append((line.number, output))


def report_lines(trial: Trial, *, quiet: bool = False, unit: str = "line") -> Iterator[str]:
    """What ``stream try`` prints: each output and each dead letter (unless ``quiet``,
    which keeps the dead letters), then the summary. ``unit`` names what the numbers
    count: lines of a JSON-lines file, records of an Avro file."""
    if not quiet:
        for number, output in trial.outputs:
            yield f"{unit} {number}: {output.decode()}"
    for dead in trial.dead_letters:
        yield f"{unit} {dead.number}: dead letter ({dead.reason}): {dead.message}"
    yield trial.summary()
