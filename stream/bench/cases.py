"""The catalogue of `stream bench`: every case, its input, its group and its place in the
run, and which cases a run chooses. Plain data, no I/O: the unit tests read it directly.

The order is part of the measurement: on one shared broker a case measures a little
differently after gigabytes were just written, so each exactly-once case runs right
after its at-least-once twin, and both pairs run before the matrix cases.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from stream.config import BenchSettings

FORMATS = ("avro", "protobuf")  # the schema formats, each a case beside sensor-features

IO_REQUESTS = 1000  # GETs per client in the io baselines
LOOKUP_DELAY = 0.05  # seconds the lookup server takes to answer
LOOKUP_CONCURRENCY = 100  # --enrich-concurrency of the enrichment cases
LOOKUP_SENSORS = 100  # records per distinct sensor in the io group's input (99% cache hits)

MATRIX_SHARE = 20  # a ~1 ms matrix record is ~100x a sensor event's bytes and CPU: fewer do

WINDOW_KEYS = 10_000  # sensors in the windows group's input
WINDOW_SPAN = 300.0  # seconds of event time in its input: 5 windows, then one to close them


@dataclass(frozen=True, slots=True)
class Payload:
    """What a case's input topic holds: demo events of one kind, size and format."""

    name: str  # of the input topic, and the key of ``payload_bytes`` in the report
    kind: str  # "sensor" or "matrix"
    values: int = 0  # readings per sensor event
    format: str = "json"  # "json", or a schema format (its schema in the registry)
    per_key: int = 0  # records per key (a sensor per 100 records); 0: 64 keys
    share: int = 1  # the topic holds --count // share records
    key_count: int = 0  # exactly this many keys, whatever the count (over per_key)
    # Seconds of event time the events' ``ts`` span, evenly in offset order from a minute
    # boundary in the past, then one more event per partition a minute past the span,
    # which closes every window (0: ``ts`` is when each event was made, as `stream
    # produce` sends them: a topic filled in seconds would span one window or two).
    event_span: float = 0.0

    def records(self, count: int) -> int:
        return max(1, count // self.share)

    def keys(self, count: int) -> int:
        if self.key_count:
            return self.key_count
        return max(1, count // self.per_key) if self.per_key else 64


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    payload: Payload
    command: list[str]  # after the common connection options are added
    group: str  # what the case belongs to in the table
    service: bool = True
    sink: bool = False  # writes rows to PostgreSQL, counted from its table
    enrich: str = ""  # --enrich-url path on the lookup server, if the case enriches
    reference: str = "ceiling"  # the case of the same run that --compare judges it against
    # Throughput from the first output ("first output"), or from the service's ready line
    # ("ready"), so that work done before the first output counts; or input records from
    # the ready line to the last output ("input end": the windows group, whose outputs
    # are few, one per key and closed window). See stream.bench.measure.
    timed_from: str = "first output"
    latency: bool = True  # a latency run after the throughput (not for windows)
    # Also timed as the "input end" cases are (the windows group's stateless reference),
    # beside its own timing, so that their ratio is of one clock.
    ready_too: bool = False


@dataclass(frozen=True, slots=True)
class Pair:
    """A transform under both guarantees, on one size of event."""

    payload: str  # the Payload's name
    at_least_once: str  # case names
    exactly_once: str


# The guarantee pairs, one per event size: --payload (~1.3 kB) and --values (~5.1 kB at 256).
PAIRS = (
    Pair("sensor", "sensor-features", "sensor-features, exactly-once"),
    Pair("sensor-large", "sensor-features-large", "sensor-features-large, exactly-once"),
)


@dataclass(frozen=True, slots=True)
class Windows:
    """The windows group: our windowed aggregation, the same in quix-streams, and the
    stateless case both are set beside (all exactly-once)."""

    ours: str
    peer: str
    reference: str


WINDOWS = Windows(
    "sensor-windows, exactly-once",
    "quix-streams windows, exactly-once",
    PAIRS[0].exactly_once,
)
# What the service is asked in the windows case (the command, without --grace).
WINDOW_OPTIONS = (
    "--window",
    "tumbling:60s",
    "--aggregate",
    "count,sum,mean,std,min,max",
    "--value-field",
    "values",
    "--event-time",
    "ts",
)
MATRIX_REFERENCE = "matrix-inverse, batched inline"  # the matrix cases' reference
SINK_REFERENCE = "sink-per-row"


def sensor_values(settings: BenchSettings) -> int:
    """Readings per event for ``--payload`` bytes: a float in JSON is about 20 bytes."""
    return max(8, settings.payload // 20)


def catalogue(settings: BenchSettings, cpus: int) -> list[Case]:
    """Every case, in the order they run (``--quick``: the first four only)."""
    service = [sys.executable, "-m", "stream.cli", "run"]
    engine = [sys.executable, "-m", "stream.bench.engines"]
    all_cores = str(cpus)
    values = sensor_values(settings)
    sensor = Payload("sensor", "sensor", values)
    features = ["--transform", "sensor-features"]
    cases = [
        Case("ceiling", sensor, [*engine, "ceiling"], "baselines", service=False),
        Case(
            "naive",
            sensor,
            [*engine, "naive", *features, "--workers", all_cores],
            "baselines",
            service=False,
        ),
        Case("identity", sensor, [*service, "--transform", "identity"], "pipeline"),
        Case("sensor-features", sensor, [*service, *features], "pipeline"),
    ]
    if settings.quick:
        return cases
    # Before the matrix cases load the broker with gigabytes: the two guarantees are
    # compared on the same footing, each exactly-once case right after its twin.
    large = Payload("sensor-large", "sensor", settings.values)
    exactly_once = ["--guarantee", "exactly-once"]
    cases += [
        Case(
            PAIRS[0].exactly_once,
            sensor,
            [*service, *features, *exactly_once],
            "guarantees",
            ready_too=True,
        ),
        # Right after the stateless exactly-once case: their ratio on the same footing.
        *window_cases(service, values),
        Case(PAIRS[1].at_least_once, large, [*service, *features], "guarantees"),
        Case(PAIRS[1].exactly_once, large, [*service, *features, *exactly_once], "guarantees"),
    ]
    cases += format_cases(service, settings.schema_registry_url, values)
    cases += [
        Case(
            SINK_REFERENCE,
            sensor,
            [*engine, "per-row", *features],
            "sink",
            service=False,
            sink=True,
            reference=SINK_REFERENCE,
        ),
        Case(
            "sensor-features-postgres",
            sensor,
            [*service, *features, "--sink", "postgres"],
            "sink",
            sink=True,
            reference=SINK_REFERENCE,
        ),
    ]
    cases += matrix_cases(service, engine, all_cores)
    cases += lookup_cases(service, values)
    return cases


def window_cases(service: list[str], values: int) -> list[Case]:
    """Our service's windows (1-minute tumbling, per sensor, count, sum, mean, std, min and
    max of the readings, exactly-once) and the same in quix-streams, on one input: the
    sensor events of the stateless cases with ``WINDOW_KEYS`` sensors and event times over
    ``WINDOW_SPAN`` seconds, so that windows close as the input is read (at 200,000
    records: 4 events per sensor and window), then an event per partition a minute past
    the span, which closes every window left (50,000 at 200,000 records): the last output
    marks the end of the input's work. Both are timed from their ready line to their last
    output (quix-streams at its default commit interval); neither has a latency run."""
    windows = Payload(
        "sensor-windows",
        "sensor",
        values,
        key_count=WINDOW_KEYS,
        event_span=WINDOW_SPAN,
    )
    peer = [
        *(sys.executable, "-m", "stream.bench.quix_windows"),
        *("--window", "60", "--value-field", "values", "--event-time", "ts"),
    ]
    ours = [*service, "--guarantee", "exactly-once", *WINDOW_OPTIONS]
    return [
        Case(
            name,
            windows,
            command,
            "windows",
            service=name == WINDOWS.ours,
            reference=WINDOWS.reference,
            timed_from="input end",
            latency=False,
        )
        for name, command in ((WINDOWS.ours, ours), (WINDOWS.peer, peer))
    ]


def format_cases(service: list[str], registry_url: str, values: int) -> list[Case]:
    """sensor-features with Avro or Protobuf in and out, input pre-filled in that
    format: their cost per record against the JSON case. None without a registry."""
    if not registry_url:
        return []
    return [
        Case(
            f"sensor-features-{fmt}",
            Payload(f"sensor-{fmt}", "sensor", values, fmt),
            [
                *service,
                "--transform",
                "sensor-features",
                "--input-format",
                fmt,
                "--output-format",
                fmt,
                "--schema-registry-url",
                registry_url,
            ],
            "formats",
        )
        for fmt in FORMATS
    ]


def matrix_cases(service: list[str], engine: list[str], all_cores: str) -> list[Case]:
    """matrix-inverse through the service (all cores, one worker) and through the
    batched executors: judged against the batched inline executor of the same run."""
    matrix = Payload("matrix", "matrix", share=MATRIX_SHARE)
    inverse = ["--transform", "matrix-inverse"]
    reference = MATRIX_REFERENCE
    cases = [
        Case("matrix-inverse", matrix, [*service, *inverse], "pipeline", reference=reference),
        Case(
            "matrix-inverse, 1 worker",
            matrix,
            [*service, *inverse, "--workers", "1"],
            "scaling",
            reference=reference,
        ),
    ]
    for executor in ("inline", "thread", "process"):
        command = [*engine, "batched", "--executor", executor, *inverse, "--workers", all_cores]
        cases.append(
            Case(
                f"matrix-inverse, batched {executor}",
                matrix,
                command,
                "executors",
                service=False,
                reference=reference,
            )
        )
    return cases


def lookup_cases(service: list[str], values: int) -> list[Case]:
    """The io group's service cases: sensor-features without enrichment, and with
    lookups on a cold cache and on 99% cache hits. All three are timed from the
    service's ready line: a cold cache's first outputs come late, the rest in a burst."""
    lookup = Payload("lookup", "sensor", values, per_key=LOOKUP_SENSORS)
    features = [*service, "--transform", "sensor-features"]
    enrich = [*features, "--enrich-concurrency", str(LOOKUP_CONCURRENCY)]
    return [
        Case("lookups: no enrichment", lookup, features, "io", timed_from="ready"),
        Case(
            "lookups: enrich, cold cache",
            lookup,
            enrich,
            "io",
            enrich="/sensors/{sensor_id}-{seq}",  # every record its own URL
            timed_from="ready",
        ),
        Case(
            "lookups: enrich, 99% cache hits",
            lookup,
            enrich,
            "io",
            enrich="/sensors/{sensor_id}",  # one sensor per LOOKUP_SENSORS records
            timed_from="ready",
        ),
    ]


def choose(cases: list[Case], settings: BenchSettings) -> tuple[list[Case], list[str]]:
    """The cases ``--cases`` names (by name, commas and all, or group; all when empty),
    each exactly-once case with its at-least-once twin, a windows case with the rest of
    its group and its stateless reference, in catalogue order; and a line per group
    skipped for want of a registry or a database."""
    tokens = [c.strip() for c in settings.cases.split(",") if c.strip()]
    wanted = set(tokens)
    notes = []
    if (
        not settings.quick
        and not settings.schema_registry_url
        and (not wanted or "formats" in wanted)
    ):
        notes.append(
            "formats cases skipped: they need a Schema Registry "
            "(--schema-registry-url or STREAM_BENCH_SCHEMA_REGISTRY_URL)"
        )
    names = {
        c.name
        for c in cases
        if not wanted or c.name in wanted or c.group in wanted or _named(c.name, tokens)
    }
    if names & {WINDOWS.ours, WINDOWS.peer}:  # the group, and the case it is set beside
        names |= {WINDOWS.ours, WINDOWS.peer, WINDOWS.reference}
    names |= {p.at_least_once for p in PAIRS if p.exactly_once in names}
    chosen = [c for c in cases if c.name in names]
    if not settings.postgres_dsn and any(c.sink for c in chosen):
        notes.append("sink cases skipped: give --postgres-dsn (or STREAM_BENCH_POSTGRES_DSN)")
        chosen = [c for c in chosen if not c.sink]
    return chosen, notes


def _named(name: str, tokens: list[str]) -> bool:
    """Whether ``--cases``' comma-separated ``tokens`` name a case whose name has commas
    ("sensor-features, exactly-once"): its parts, in a row."""
    parts = [p.strip() for p in name.split(",")]
    return len(parts) > 1 and any(
        tokens[i : i + len(parts)] == parts for i in range(len(tokens) - len(parts) + 1)
    )
