"""``stream try``: records from a file through a transform, in this process, by the code
a worker runs (:func:`transforms.batch.run_batch`: decode, size limit, transform,
encode). No broker, no pool. Plain logic: the CLI reads the file and prints the lines.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from transforms import LIMITS, Transform, set_limits
from transforms.batch import run_batch


@dataclass(frozen=True, slots=True)
class Line:
    """One non-empty input line: its number in the file (from 1) and its bytes."""

    number: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the service would send to the dead-letter topic."""

    line: int
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


def run_trial(
    transform: Transform,
    lines: Iterable[Line],
    *,
    max_record_bytes: int,
    max_array_length: int,
    batch_max_records: int,
    clock: Callable[[], float] = time.perf_counter,
) -> Trial:
    """Run the lines through ``transform`` in batches, as the service's workers would."""
    trial = Trial(transform.name)
    previous = LIMITS.max_array_length
    set_limits(max_array_length)
    try:
        batch: list[Line] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= batch_max_records:
                _run(trial, transform, batch, max_record_bytes, clock)
                batch = []
        if batch:
            _run(trial, transform, batch, max_record_bytes, clock)
    finally:
        set_limits(previous)
    return trial


def _run(
    trial: Trial,
    transform: Transform,
    batch: list[Line],
    max_record_bytes: int,
    clock: Callable[[], float],
) -> None:
    values: list[bytes | None] = [line.value for line in batch]
    started = clock()
    outcome = run_batch(transform, values, max_record_bytes)
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


def report_lines(trial: Trial, *, quiet: bool = False) -> Iterator[str]:
    """What ``stream try`` prints: each output and each dead letter (unless ``quiet``,
    which keeps the dead letters), then the summary."""
    if not quiet:
        for number, output in trial.outputs:
            yield f"line {number}: {output.decode()}"
    for dead in trial.dead_letters:
        yield f"line {dead.line}: dead letter ({dead.reason}): {dead.message}"
    yield trial.summary()
