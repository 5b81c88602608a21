"""The settings of ``stream try``: records from a file through a transform, and with
``--window`` through the windows of ``stream run --window`` (its window options declared
as the service's, sharing their environment variables where they mean the same)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from stream.config.groups import WINDOWS
from stream.config.service import DEFAULT_TRANSFORM
from stream.config.windows import Emit, WindowOptions
from stream.options import ConfigError, boolean, choice, flag_name, opt, positive_int, size
from stream.windows.extract import KAFKA_TIME, WindowInput
from stream.windows.spec import WindowSpec, parse_aggregates

TryFormat = Literal["json", "avro"]


def _as_run(name: str, help: str = "", **changes: Any) -> Any:
    """An option of ``stream try`` declared as ``stream run``'s window option ``name``
    (same parser, default and, unless ``shared=False``, environment variable), in the
    windows section of --help."""
    run = next(f for f in dataclasses.fields(WindowOptions) if f.name == name)
    meta = run.metadata
    return opt(
        changes.get("default", run.default),
        help or meta["help"],
        meta["parse"],
        meta["metavar"],
        group=WINDOWS,
        shared=changes.get("shared", True),
    )


def _key_field(text: str) -> str:
    return text.strip()


@dataclass(frozen=True, slots=True)
class TrySettings:
    """Options of ``stream try``: records from a file through a transform, no broker; with
    ``--window``, through the windows of ``stream run --window`` (see stream.trial_windows)."""

    COMMAND: ClassVar[str] = "try"
    # The window options other than --window, as their fields: each needs --window.
    NEEDS_WINDOW: ClassVar[tuple[str, ...]] = (
        "grace",
        "aggregate",
        "value_field",
        "event_time",
        "emit",
        "key_field",
    )

    transform: str = opt(
        "",
        f"transform: a built-in name (see `stream transforms`) or package.module:function "
        f"(default: {DEFAULT_TRANSFORM}; with --window: none, the windows aggregate the "
        "decoded records)",
        metavar="NAME",
        shared=True,
    )
    file: str = opt(
        "-",
        "the records to run through the transform, as --input-format says ('-': stdin)",
        metavar="PATH",
    )
    input_format: TryFormat = opt(
        "json",
        "what --file holds: json (JSON lines) or avro (an Avro object container file, its "
        "writer schema in its header); outputs print as JSON either way. Protobuf has no "
        "standard container file, so try does not read it",
        choice(*get_args(TryFormat)),
    )
    max_record_bytes: int = opt(
        1 << 20, "larger input records are dead letters", size, "SIZE", shared=True
    )
    max_array_length: int = opt(
        100_000,
        "longest array a built-in transform accepts (sensor values, matrix rows)",
        positive_int,
        "N",
        shared=True,
    )
    batch_max_records: int = opt(
        500, "records per batch given to the transform", positive_int, "N", shared=True
    )
    allow_dead_letters: bool = opt(
        False, "exit 0 even when records were dead-lettered (default: exit 1)", boolean
    )
    quiet: bool = opt(False, "print the dead letters and the summary, not each output", boolean)
    window: str = _as_run(
        "window",
        "aggregate per key over time windows, as `stream run --window` does: "
        "tumbling:SIZE or hopping:SIZE/ADVANCE (as tumbling:60s or hopping:5m/1m; aligned "
        "to the epoch); prints each window as it closes, then those still open at the end "
        "of the file (default: none, one output per record)",
    )
    grace: str = _as_run("grace")
    aggregate: str = _as_run("aggregate")
    value_field: str = _as_run("value_field")
    event_time: str = _as_run(
        "event_time",
        "the field holding a record's time, in seconds since the epoch (a file has no "
        "Kafka timestamps, so not kafka)",
        default="ts",
        shared=False,
    )
    emit: Emit = _as_run(  # noqa: RUF009 - opt() gives a field, like every option here
        "emit",
        "close: print each window when it closes; update: also its value after each batch "
        "(--batch-max-records) that changed it, as the service sends it",
    )
    key_field: str = opt(
        "sensor_id",
        "the field whose value (a string or a whole number) is a record's key, as "
        "`stream produce --file` would key it; windows are per key, and a record without "
        "it has no key (its windows are those of key null); '' for no key: the whole file "
        "as one key",
        _key_field,
        "FIELD",
        group=WINDOWS,
    )

    def __post_init__(self) -> None:
        if not self.window:
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            given = [name for name in self.NEEDS_WINDOW if getattr(self, name) != defaults[name]]
            if given:
                raise ConfigError(f"{flag_name(given[0])} needs --window")
            if not self.transform:
                object.__setattr__(self, "transform", DEFAULT_TRANSFORM)
            return
        if self.event_time == KAFKA_TIME:
            raise ConfigError(
                "--event-time kafka: a file has no Kafka timestamps; name the field holding "
                "each record's time in seconds since the epoch (as --event-time ts)"
            )

    @property
    def window_spec(self) -> WindowSpec | None:
        """The windows asked for, or None (one output per record)."""
        return WindowSpec.parse(self.window, self.grace) if self.window else None

    @property
    def window_input(self) -> WindowInput:
        """Where the records' readings and event times are, and the aggregates of one's
        own (by import path)."""
        custom = tuple(name for name in self.aggregates if ":" in name)
        return WindowInput(self.value_field, self.event_time, custom)

    @property
    def aggregates(self) -> tuple[str, ...]:
        return parse_aggregates(self.aggregate)
