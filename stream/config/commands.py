"""The settings of the commands other than ``stream run`` and ``stream db``: produce,
read, topics, lag, bench and try (whose settings, with its window options, are in
:mod:`stream.config.trial`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar, Literal, Self, get_args

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
from stream.config.trial import TrySettings
from stream.options import (
    ConfigError,
    boolean,
    choice,
    non_negative_float,
    non_negative_int,
    opt,
    parse_float,
    parse_int,
    positive_float,
    positive_int,
    secret,
)
from stream.windows.spec import parse_duration

__all__ = [
    "BenchSettings",
    "LagSettings",
    "ProduceSettings",
    "ReadSettings",
    "TopicsSettings",
    "TrySettings",  # declared in stream.config.trial
]

Isolation = Literal["read_committed", "read_uncommitted"]


# Event times a demo event may start at: years 1 to 9999, as the windows take them.
_EARLIEST_S, _LATEST_S = -62_135_596_800.0, 253_402_300_799.0


def start_seconds(text: str) -> float:
    """Seconds since the epoch of ``text``: a number of them, or an ISO 8601 time (UTC
    unless it names its offset)."""
    raw = text.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(
                "expected an ISO 8601 time (as 2026-01-01T00:00:00Z) or seconds since the epoch"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp()
    if not _EARLIEST_S <= seconds <= _LATEST_S:  # also NaN
        raise ValueError("must be a time in the years 1 to 9999")
    return seconds


def _start_time(text: str) -> str:
    start_seconds(text)
    return text.strip()


def _event_interval(text: str) -> str:
    parse_duration(text, what="event interval")
    return text.strip()


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
    start_time: str = opt(
        "",
        "the demo events' first event time (their ts): an ISO 8601 time, UTC unless it "
        "names its offset (as 2026-01-01T00:00:00Z), or seconds since the epoch; alone, "
        "event time then follows the wall clock from there (default: now)",
        _start_time,
        "TIME",
    )
    event_interval: str = opt(
        "",
        "event time between consecutive demo events (as 100ms), whatever the sending "
        "rate: --count 6000 --event-interval 100ms spans 600 s of event time, so windows "
        "close within seconds of sending (default: none, ts is the wall clock)",
        _event_interval,
        "DURATION",
    )
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
        if self.file and (self.start_time or self.event_interval):
            raise ConfigError(
                "--start-time and --event-interval shape the demo events' ts; --file sends "
                "its lines as they are"
            )
        if self.avro_file and (self.file or self.kind != "sensor" or self.format != "json"):
            raise ConfigError(
                "--avro-file writes sensor demo events only (not with --file, --kind matrix "
                "or --format)"
            )

    def resolve(self) -> Self:
        KafkaSettings.resolve(self)
        resolve_registry(self)
        return self

    @property
    def start_seconds(self) -> float | None:
        """--start-time in seconds since the epoch, or None (now)."""
        return start_seconds(self.start_time) if self.start_time else None

    @property
    def event_interval_ms(self) -> int | None:
        """--event-interval in milliseconds, or None (the wall clock)."""
        if not self.event_interval:
            return None
        return parse_duration(self.event_interval, what="event interval")


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
