"""The settings of the commands other than ``stream run`` and ``stream db``: produce,
read, topics, lag, bench and try."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, get_args

from stream.config.groups import WINDOWS
from stream.config.kafka import KafkaSettings
from stream.config.registry import (
    RecordFormat,
    check_registry,
    registry_cafile_opt,
    registry_password_file_opt,
    registry_password_opt,
    registry_url,
    registry_url_opt,
    registry_username_opt,
    resolve_registry,
)
from stream.config.service import DEFAULT_TRANSFORM
from stream.config.windows import Emit, WindowOptions
from stream.options import (
    ConfigError,
    boolean,
    choice,
    flag_name,
    non_negative_float,
    non_negative_int,
    opt,
    parse_float,
    parse_int,
    positive_float,
    positive_int,
    secret,
    size,
)
from stream.windows.extract import KAFKA_TIME, WindowInput
from stream.windows.spec import WindowSpec, parse_aggregates

TryFormat = Literal["json", "avro"]
Isolation = Literal["read_committed", "read_uncommitted"]


@dataclass(frozen=True, slots=True)
class ProduceSettings(KafkaSettings):
    """Options of ``stream produce``."""

    COMMAND: ClassVar[str] = "produce"
    HIDDEN: ClassVar[frozenset[str]] = frozenset({"output_topic", "dlq_topic"})

    kind: str = opt("sensor", "demo event kind", choice("sensor", "matrix"))
    count: int = opt(1000, "events to send", non_negative_int, "N")
    rate: float = opt(0.0, "events per second (0: as fast as possible)", non_negative_float)
    keys: int = opt(16, "distinct keys (sensor ids)", positive_int, "N")
    seed: int = opt(0, "random seed; the same seed sends the same events", parse_int, "N")
    values: int = opt(64, "sensor readings per event", positive_int, "N")
    matrix_size: int = opt(8, "matrix size n for --kind matrix (n x n)", positive_int, "N")
    file: str = opt(
        "", "send JSON lines from this file ('-' for stdin) instead of demo events", metavar="PATH"
    )
    topic: str = opt("", "topic to send to (default: the input topic)", metavar="TOPIC")
    avro_file: str = opt(
        "",
        "write the sensor demo events to this Avro object container file instead of sending "
        "them (for `stream try --input-format avro`)",
        metavar="PATH",
    )
    quiet: bool = opt(False, "no progress line", boolean)
    format: RecordFormat = opt(
        "json",
        "format of the demo events: json, or avro/protobuf with a schema registered under "
        "<topic>-value at --schema-registry-url",
        choice(*get_args(RecordFormat)),
    )
    schema_registry_url: str = registry_url_opt()
    schema_registry_username: str = registry_username_opt()
    schema_registry_password: str = registry_password_opt()
    schema_registry_password_file: str = registry_password_file_opt()
    schema_registry_cafile: str = registry_cafile_opt()

    def __post_init__(self) -> None:
        KafkaSettings.__post_init__(self)
        check_registry(self, (self.format,))
        if self.format != "json" and (self.file or self.kind != "sensor"):
            raise ConfigError("--format avro and protobuf send sensor demo events only")
        if self.avro_file and (self.file or self.kind != "sensor" or self.format != "json"):
            raise ConfigError(
                "--avro-file writes sensor demo events only (not with --file, --kind matrix "
                "or --format)"
            )

    def resolve(self) -> Self:
        KafkaSettings.resolve(self)
        resolve_registry(self)
        return self


@dataclass(frozen=True, slots=True)
class ReadSettings(KafkaSettings):
    """Options of ``stream read TOPIC`` (the topic is its argument, not an option)."""

    COMMAND: ClassVar[str] = "read"
    HIDDEN: ClassVar[frozenset[str]] = frozenset({"input_topic", "output_topic", "dlq_topic"})

    count: int = opt(0, "stop after N records (0: no limit)", non_negative_int, "N")
    follow: bool = opt(
        False,
        "keep waiting for new records until Ctrl-C (default: print what is there and exit)",
        boolean,
    )
    isolation: Isolation = opt(
        "read_committed",
        "read_committed: only records of committed transactions, as the service's readers "
        "see them; read_uncommitted: those of open and aborted transactions too",
        choice(*get_args(Isolation)),
    )
    input_format: RecordFormat = opt(
        "json",
        "how to decode the values: json, or avro/protobuf in the Confluent wire format "
        "through --schema-registry-url (a value that does not decode is printed escaped)",
        choice(*get_args(RecordFormat)),
    )
    max_width: int = opt(
        2000,
        "longest value printed, in characters; a longer one is cut, with a note (0: no limit)",
        non_negative_int,
        "CHARS",
    )
    schema_registry_url: str = registry_url_opt()
    schema_registry_username: str = registry_username_opt()
    schema_registry_password: str = registry_password_opt()
    schema_registry_password_file: str = registry_password_file_opt()
    schema_registry_cafile: str = registry_cafile_opt()

    def __post_init__(self) -> None:
        KafkaSettings.__post_init__(self)
        check_registry(self, (self.input_format,))

    def resolve(self) -> Self:
        KafkaSettings.resolve(self)
        resolve_registry(self)
        return self


@dataclass(frozen=True, slots=True)
class TopicsSettings(KafkaSettings):
    """Options of ``stream topics``."""

    COMMAND: ClassVar[str] = "topics"

    partitions: int = opt(4, "partitions for created topics", positive_int, "N")
    replication_factor: int = opt(1, "replication factor for created topics", positive_int, "N")


@dataclass(frozen=True, slots=True)
class LagSettings(KafkaSettings):
    """Options of ``stream lag``."""

    COMMAND: ClassVar[str] = "lag"
    HIDDEN: ClassVar[frozenset[str]] = frozenset({"output_topic", "dlq_topic"})

    group_id: str = opt("stream", "consumer group id", shared=True)
    json: bool = opt(False, "print JSON instead of a table", boolean)


@dataclass(frozen=True, slots=True)
class BenchSettings(KafkaSettings):
    """Options of ``stream bench`` (it makes and deletes topics of its own)."""

    COMMAND: ClassVar[str] = "bench"
    HIDDEN: ClassVar[frozenset[str]] = frozenset({"input_topic", "output_topic", "dlq_topic"})

    count: int = opt(200_000, "records per case (pre-filled once per payload kind)", positive_int)
    partitions: int = opt(4, "partitions of the benchmark's topics", positive_int, "N")
    payload: int = opt(1300, "approximate bytes per sensor event", positive_int, "BYTES")
    values: int = opt(
        256,
        "readings per event of the larger sensor events (~5.1 kB of JSON at 256), on which "
        "the guarantees group runs both guarantees again",
        positive_int,
        "N",
    )
    matrix_size: int = opt(
        0, "matrix size for matrix-inverse (0: the size that costs ~1 ms a record)", parse_int, "N"
    )
    case_seconds: float = opt(30.0, "longest throughput run of one case", positive_float, "SECONDS")
    latency_seconds: float = opt(
        10.0, "length of each latency run at the offered rate", positive_float, "SECONDS"
    )
    load: float = opt(
        0.5, "offered rate of the latency run, as a share of the case's throughput", parse_float
    )
    rate: float = opt(0.0, "offered rate in records/s (overrides --load)", non_negative_float)
    seed: int = opt(0, "random seed of the events", parse_int, "N")
    cases: str = opt("", "only these cases or groups, comma-separated (default: all)")
    output: str = opt("", "write the raw results as JSON here", metavar="PATH")
    chart: str = opt("", "draw a PNG chart here (needs the 'plot' extra)", metavar="PATH")
    quick: bool = opt(
        False, "a short smoke run: few records and cases (for CI; ratios are rough)", boolean
    )
    compare: str = opt(
        "",
        "after the run, compare each case with the same case in this earlier results file "
        "(--output of a previous run); exit 1 if one regressed. Cases are judged on "
        "within-run ratios (each figure over its reference case's in the same run: the "
        "ceiling, or the matrix or sink baseline), as absolute rates move with machine load",
        metavar="PATH",
    )
    compare_threshold: float = opt(
        0.2,
        "--compare: a case regressed when, within its run, its records/s fell or its CPU per "
        "record rose by more than this share",
        non_negative_float,
        "SHARE",
    )
    compare_latency_threshold: float = opt(
        0.5,
        "--compare: a case regressed when, within its run, its p99 latency rose by more than "
        "this share (p99 is the noisiest figure)",
        non_negative_float,
        "SHARE",
    )
    results: str = opt(
        "",
        "run no cases: print (and --compare, --chart) this results file instead",
        metavar="PATH",
    )
    postgres_dsn: str = opt(
        "",
        "PostgreSQL for the sink cases (postgresql://user:password@host:port/database; prefer "
        "the environment variable); without it the sink cases are skipped",
        secret,
        "DSN",
        secret=True,
    )
    schema_registry_url: str = opt(
        "",
        "Confluent-compatible Schema Registry base URL for the formats cases (avro, "
        "protobuf); without it they are skipped",
        registry_url,
        "URL",
    )


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
