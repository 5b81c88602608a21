"""``stream try --window``: records from a file through the windows of ``stream run
--window``, in this process, by the code the service runs: each batch through
:func:`stream.windows.extract.window_batch` (decode, the transform if one is given,
each record's readings reduced to a partial), then into one
:class:`~stream.windows.store.WindowStore`, in file order.

A file is one input partition: stream time is the largest event time read so far, and
a window closes once it reaches ``end + grace`` (the service keeps one stream time per
input partition, so with several partitions a window may close at another record).
A file's records have no Kafka key or timestamp: a record's key is its ``--key-field``
(``sensor_id`` by default, as ``stream produce --file`` keys the line it sends), and
its time is its ``--event-time`` field. Each window closed is printed as the JSON value
the service sends, with its key added, at the line whose record closed it; records whose
windows had all closed are dead letters (``late``); at the end of the file the windows
still open are printed as open (the service closes them later, as stream time moves
on). Plain logic: the CLI opens the file and prints the lines.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

import numpy as np
import orjson

from stream.config import TrySettings
from stream.trial import Line, Rejected, read_avro, read_lines
from stream.windows.extract import WindowInput, window_batch
from stream.windows.output import window_value
from stream.windows.spec import WindowSpec
from stream.windows.store import WindowResult, WindowStore
from transforms import LIMITS, Transform, set_limits
from transforms.codec import JSON_DECODER, Decoder
from transforms.reasons import Reason

Key = bytes | None
State = Literal["closed", "updated", "open"]


@dataclass(frozen=True, slots=True)
class WindowTry:
    """What to compute: the windows, the aggregates, where a record's readings, time and
    key are (``key_field`` empty: every record has the same key, null), and whether to
    print updates (``--emit update``)."""

    spec: WindowSpec
    aggregates: tuple[str, ...]
    where: WindowInput
    key_field: str = "sensor_id"
    emit_update: bool = False

    @classmethod
    def of(cls, settings: TrySettings) -> WindowTry:
        spec = settings.window_spec
        assert spec is not None  # only with --window
        return cls(
            spec,
            settings.aggregates,
            settings.window_input,
            settings.key_field,
            settings.emit == "update",
        )

    def describe(self) -> str:
        by = f"by {self.key_field}" if self.key_field else "one key"
        return f"{self.spec.describe()}, {by}"


@dataclass(frozen=True, slots=True)
class Emitted:
    """A window printed: closed at line ``number`` (the record whose time closed it),
    updated by the batch ending at line ``number``, or open at the end of the file
    (``number`` 0)."""

    number: int
    state: State
    result: WindowResult


@dataclass(slots=True)
class WindowTrial:
    """What a windowed run gave: the windows closed (and updated), in the order the
    service would send them; dead letters in input order; the windows open at the end."""

    transform: str
    config: WindowTry
    records: int = 0
    windows: list[Emitted] = field(default_factory=list)
    dead_letters: list[Rejected] = field(default_factory=list)
    open: list[WindowResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def closed(self) -> int:
        return sum(1 for w in self.windows if w.state == "closed")

    def summary(self) -> str:
        dead = len(self.dead_letters)
        why = ", ".join(f"{r} {n}" for r, n in sorted(Counter(self.reasons()).items()))
        letters = f"{dead} dead letter{'' if dead == 1 else 's'}" + (f" ({why})" if why else "")
        per_record = self.seconds / self.records * 1e6 if self.records else 0.0
        return (
            f"{self.records} records: {self.closed} windows closed, {len(self.open)} still "
            f"open at the end, {letters}; {per_record:.1f} µs per record "
            f"({self.transform}; {self.config.describe()})"
        )

    def reasons(self) -> list[str]:
        return [d.reason for d in self.dead_letters]


def window_json(result: WindowResult, aggregates: tuple[str, ...]) -> str:
    """The window as the service's output value (:func:`window_value`) with its key
    first (as text; null for a record without one)."""
    value: dict[str, Any] = {"key": None if result.key is None else result.key.decode()}
    value |= orjson.loads(window_value(result, aggregates))
    return orjson.dumps(value).decode()


def run_window_file(
    transform: Transform | None,
    handle: BinaryIO,
    config: WindowTry,
    *,
    name: str,
    input_format: str,
    max_record_bytes: int,
    max_array_length: int,
    batch_max_records: int,
) -> WindowTrial:
    """:func:`run_windows` on a file of JSON lines or (``input_format`` avro) an Avro
    container file (a damaged one raises ``NotAContainer`` with ``name`` in its line)."""

    def run(lines: Iterable[Line], decoder: Decoder = JSON_DECODER) -> WindowTrial:
        return run_windows(
            transform,
            lines,
            config,
            max_record_bytes=max_record_bytes,
            max_array_length=max_array_length,
            batch_max_records=batch_max_records,
            decoder=decoder,
        )

    if input_format == "json":
        return run(read_lines(handle))
    from stream.formats.container import NotAContainer  # noqa: PLC0415

    try:
        lines, codecs = read_avro(handle)
        return run(lines, codecs.decoder)
    except NotAContainer as exc:
        raise NotAContainer(f"{name}: {exc}") from None


def run_windows(
    transform: Transform | None,
    lines: Iterable[Line],
    config: WindowTry,
    *,
    max_record_bytes: int,
    max_array_length: int,
    batch_max_records: int,
    decoder: Decoder = JSON_DECODER,
    clock: Callable[[], float] = time.perf_counter,
) -> WindowTrial:
    """Run the lines through the windows in batches of ``batch_max_records``, as the
    service's workers and its window state would (``transform`` None: the windows
    aggregate the decoded records)."""
    trial = WindowTrial(transform.name if transform else "no transform", config)
    steps = _Steps(trial, transform, max_record_bytes, decoder, clock)
    previous = LIMITS.max_array_length
    set_limits(max_array_length)
    try:
        batch: list[Line] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= batch_max_records:
                steps.step(batch)
                batch = []
        if batch:
            steps.step(batch)
    finally:
        set_limits(previous)
    trial.open = steps.store.windows()
    return trial


@dataclass(slots=True)
class _Steps:
    """The state of one run: the trial so far and the window store."""

    trial: WindowTrial
    transform: Transform | None
    max_record_bytes: int
    decoder: Decoder
    clock: Callable[[], float]
    store: WindowStore = field(init=False)

    def __post_init__(self) -> None:
        where = self.trial.config.where
        self.store = WindowStore(self.trial.config.spec, where.extras())

    def step(self, batch: list[Line]) -> None:
        """One batch: its records' partials into the store (late ones dead-lettered),
        then the windows that closed, each at the line whose record closed it."""
        trial, store, config = self.trial, self.store, self.trial.config
        values: list[bytes | None] = [line.value for line in batch]
        keys = record_keys(values, config.key_field, self.max_record_bytes, self.decoder)
        before = store.stream_time
        started = self.clock()
        errors, records = window_batch(
            self.transform,
            values,
            [0] * len(values),
            self.max_record_bytes,
            config.where,
            decoder=self.decoder,
        )
        valid = np.ones(len(batch), dtype=np.bool_)
        for failed, _reason, _message in errors:
            valid[failed] = False
        index = np.flatnonzero(valid)
        mine = records.take(index)
        late = store.add_records([keys[i] for i in index.tolist()], mine)
        closed = store.close()
        updated = store.changed() if config.emit_update else []
        store.take_changes()  # what the changelog would get: forget it
        trial.seconds += self.clock() - started
        trial.records += len(batch)
        # Stream time as each record found it (with its own time): which record closed what.
        floor = np.iinfo(np.int64).min if before is None else before
        running = np.maximum.accumulate(np.maximum(mine.time, floor))
        dead = [Rejected(batch[i].number, reason, message) for i, reason, message in errors]
        for i in np.flatnonzero(late).tolist():
            dead.append(
                Rejected(
                    batch[int(index[i])].number,
                    Reason.LATE.value,
                    f"every window of its event time had closed (stream time "
                    f"{int(running[i])} ms, {config.spec.describe()})",
                )
            )
        trial.dead_letters += sorted(dead, key=lambda d: d.number)
        grace = config.spec.grace_ms
        at = np.searchsorted(running, [r.end + grace for r in closed], side="left")
        by = [batch[int(index[min(int(i), len(index) - 1)])].number for i in at]
        emitted = [Emitted(n, "closed", r) for n, r in zip(by, closed, strict=True)]
        emitted.sort(key=lambda e: e.number)  # stable: by end, then key, at each line
        trial.windows += emitted
        trial.windows += [Emitted(batch[-1].number, "updated", r) for r in updated]


def record_keys(
    values: list[bytes | None], key_field: str, max_record_bytes: int, decoder: Decoder
) -> list[Key]:
    """Each record's key: its ``key_field`` (a string, or a whole number as text), as
    ``stream produce --file`` keys the line it sends; None without one (or without a
    ``key_field``: every record the same key)."""
    keys: list[Key] = [None] * len(values)
    if not key_field:
        return keys
    decoded = decoder.decode_batch(values, max_record_bytes)
    for i, item in zip(decoded.index, decoded.items, strict=True):
        found = item.get(key_field) if isinstance(item, dict) else None
        if isinstance(found, str | int) and not isinstance(found, bool):
            keys[i] = str(found).encode()
    return keys


def window_lines(trial: WindowTrial, *, quiet: bool = False, unit: str = "line") -> Iterator[str]:
    """What ``stream try --window`` prints: each window closed (or updated) at its line,
    unless ``quiet``; the dead letters; the windows open at the end (unless ``quiet``);
    the summary."""
    aggregates = trial.config.aggregates
    if not quiet:
        for w in trial.windows:
            yield f"{unit} {w.number}: window {w.state} {window_json(w.result, aggregates)}"
    for dead in trial.dead_letters:
        yield f"{unit} {dead.number}: dead letter ({dead.reason}): {dead.message}"
    if not quiet:
        for result in trial.open:
            yield f"end of file: window open {window_json(result, aggregates)}"
    yield trial.summary()


def try_windows(settings: TrySettings, stdin: BinaryIO, write: Callable[[str], None]) -> int:
    """``stream try --window``: the file (``-``: ``stdin``) through the windows, each line
    printed by ``write``; the exit code (1 for dead letters unless allowed)."""
    from stream.errors import EXIT_RUNTIME  # noqa: PLC0415
    from stream.options import ConfigError  # noqa: PLC0415
    from transforms import resolve  # noqa: PLC0415

    transform = resolve(settings.transform) if settings.transform else None
    config = WindowTry.of(settings)
    try:
        config.where.extras()  # aggregates of one's own: imported once, here
    except ValueError as exc:
        raise ConfigError(f"--aggregate: {exc}") from None

    def trial_of(handle: BinaryIO, name: str) -> WindowTrial:
        return run_window_file(
            transform,
            handle,
            config,
            name=name,
            input_format=settings.input_format,
            max_record_bytes=settings.max_record_bytes,
            max_array_length=settings.max_array_length,
            batch_max_records=settings.batch_max_records,
        )

    if settings.file == "-":
        trial = trial_of(stdin, "stdin")
    else:
        try:
            handle = open(settings.file, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ConfigError(f"--file: cannot open {settings.file!r}: {exc.strerror}") from None
        with handle:
            trial = trial_of(handle, f"--file {settings.file!r}")
    unit = "record" if settings.input_format == "avro" else "line"
    for line in window_lines(trial, quiet=settings.quiet, unit=unit):
        write(line)
    return EXIT_RUNTIME if trial.dead_letters and not settings.allow_dead_letters else 0
