"""``stream run``'s settings: the sinks, record formats and enrichment layers, and
:class:`RunSettings`, which ends the chain (see :mod:`stream.config.service`) and checks
that options of different groups fit together."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Self, get_args

from stream.config.contradictions import check_contradictions
from stream.config.groups import CONNECTION, ENRICHMENT, SINKS
from stream.config.kafka import KafkaSettings
from stream.config.postgres import (
    check_postgres,
    postgres_command_timeout_opt,
    postgres_dsn_file_opt,
    postgres_dsn_opt,
    postgres_dsn_value,
    postgres_table_opt,
)
from stream.config.registry import (
    RecordFormat,
    check_registry,
    format_opt,
    registry_cafile_opt,
    registry_password_file_opt,
    registry_password_opt,
    registry_url_opt,
    registry_username_opt,
    resolve_registry,
)
from stream.config.service import DEFAULT_TRANSFORM
from stream.config.windows import NEEDS_WINDOW, WindowOptions
from stream.options import (
    ConfigError,
    choice,
    flag_name,
    non_negative_float,
    non_negative_int,
    opt,
    positive_float,
    positive_int,
    size,
)
from stream.url_template import MAX_LENGTH, TemplateError, UrlTemplate

EnrichMissing = Literal["fail", "pass"]
EnrichRedirects = Literal["same-origin", "none"]
Sink = Literal["kafka", "postgres"]
SINK_NAMES: tuple[str, ...] = get_args(Sink)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(WindowOptions)}


def parse_sinks(text: str) -> str:
    """kafka, postgres or both, comma-separated; kept in a fixed order."""
    given = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [g for g in given if g not in SINK_NAMES]
    if not given or unknown:
        raise ValueError("expected kafka, postgres or kafka,postgres")
    return ",".join(s for s in SINK_NAMES if s in given)


def _enrich_url(text: str) -> str:
    """An http(s) URL template whose placeholders are well formed and outside its scheme
    and host (stream.url_template); errors never show its credentials."""
    try:
        return UrlTemplate.parse(text.strip()).text
    except TemplateError as exc:
        raise ValueError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class SinkOptions(WindowOptions):
    """``stream run``: where results go, the dead-letter topic and the PostgreSQL sink."""

    delivery_timeout: float = opt(
        120.0,
        "seconds a produced record may wait for the broker (rides out an outage) before the "
        "service stops with an error, committing nothing past it",
        positive_float,
        "SECONDS",
        group=SINKS,
    )
    dlq_replication_factor: int = opt(
        1,
        "replication factor of the dead-letter topic when the service creates it (use 3 on "
        "a production cluster)",
        positive_int,
        "N",
        group=SINKS,
    )
    linger_ms: int = opt(
        0,
        "producer: milliseconds each produce batch waits for others to share its request "
        "(0: none; the service batches records itself)",
        non_negative_int,
        "MS",
        group=SINKS,
    )
    sink: str = opt(
        "kafka",
        "where results go: kafka, postgres or kafka,postgres",
        parse_sinks,
        "SINKS",
        group=SINKS,
    )
    postgres_dsn: str = postgres_dsn_opt()
    postgres_dsn_file: str = postgres_dsn_file_opt()
    postgres_table: str = postgres_table_opt()
    postgres_pool_min: int = opt(
        1, "PostgreSQL connections the pool keeps open", positive_int, "N", group=SINKS
    )
    postgres_pool_max: int = opt(
        4, "most PostgreSQL connections (batches written at once)", positive_int, "N", group=SINKS
    )
    postgres_command_timeout: float = postgres_command_timeout_opt()


@dataclass(frozen=True, slots=True)
class FormatOptions(SinkOptions):
    """``stream run``: the record formats and the Schema Registry."""

    input_format: RecordFormat = format_opt("input")
    output_format: RecordFormat = format_opt("output")
    schema_registry_url: str = registry_url_opt()
    schema_registry_username: str = registry_username_opt()
    schema_registry_password: str = registry_password_opt()
    schema_registry_password_file: str = registry_password_file_opt()
    schema_registry_cafile: str = registry_cafile_opt()
    schema_registry_retry: float = opt(
        10.0,
        "seconds a worker retries an unreachable Schema Registry before the batch is put "
        "back and run again later (records never become dead letters for an outage)",
        positive_float,
        "SECONDS",
        group=CONNECTION,
    )


@dataclass(frozen=True, slots=True)
class EnrichOptions(FormatOptions):
    """``stream run``: async lookups on the event loop before the transform
    (:mod:`stream.enrich`)."""

    enrich_url: str = opt(
        "",
        "enrich each record with the JSON answer of a GET to this URL, with {field} "
        "placeholders from the record or {key} in its path or query (default: none); "
        "treated as a secret, as it may hold credentials",
        _enrich_url,
        "URL",
        secret=True,
        group=ENRICHMENT,
    )
    enrich: str = opt(
        "",
        "enrich each record with a coroutine of your own, package.module:function (default: none)",
        metavar="MODULE:FUNCTION",
        group=ENRICHMENT,
    )
    enrich_field: str = opt(
        "meta", "record field that receives the lookup's answer", group=ENRICHMENT
    )
    enrich_concurrency: int = opt(
        100,
        "enrichment lookups in flight at most, over all batches",
        positive_int,
        "N",
        group=ENRICHMENT,
    )
    enrich_timeout: float = opt(
        5.0,
        "seconds one enrichment lookup attempt may take",
        positive_float,
        "SECONDS",
        group=ENRICHMENT,
    )
    enrich_retries: int = opt(
        3,
        "retries of a lookup after a timeout, a connection error, 5xx or 429 (with backoff "
        "and jitter, honouring Retry-After)",
        non_negative_int,
        "N",
        group=ENRICHMENT,
    )
    enrich_cache_ttl: float = opt(
        60.0,
        "seconds a lookup's answer is reused (0: no cache)",
        non_negative_float,
        "SECONDS",
        group=ENRICHMENT,
    )
    enrich_cache_size: int = opt(
        10_000,
        "most answers the enrichment cache holds (0: no cache)",
        non_negative_int,
        "N",
        group=ENRICHMENT,
    )
    enrich_cache_bytes: int = opt(
        64 << 20,
        "most bytes the enrichment cache holds, URLs and answers counted",
        size,
        "BYTES",
        group=ENRICHMENT,
    )
    enrich_max_url_length: int = opt(
        MAX_LENGTH,
        "longest enrichment URL, in characters once quoted; a record whose values make it "
        "longer is a dead letter (reason enrich_refused)",
        positive_int,
        "N",
        group=ENRICHMENT,
    )
    enrich_max_body: int = opt(
        1 << 20,
        "largest enrichment answer, in bytes as received and again once decompressed",
        size,
        "BYTES",
        group=ENRICHMENT,
    )
    enrich_redirects: EnrichRedirects = opt(
        "same-origin",
        "redirects of enrichment lookups: same-origin follows up to 5 that keep the URL's "
        "scheme, host and port (others fail the lookup), none follows none",
        choice(*get_args(EnrichRedirects)),
        group=ENRICHMENT,
    )
    enrich_missing: EnrichMissing = opt(
        "fail",
        "on a 404 (or a coroutine returning None): fail sends the record to the dead-letter "
        "topic (reason enrich_failed), pass lets it through without the field",
        choice(*get_args(EnrichMissing)),
        group=ENRICHMENT,
    )


@dataclass(frozen=True, slots=True)
class RunSettings(EnrichOptions):
    """Options of ``stream run``: the Kafka connection, then processing, flow control,
    observability, sinks, formats and enrichment, each declared by one layer. They are the
    service's, and the deployment's contract (compose, the ConfigMap): they keep
    ``STREAM_<OPTION>``."""

    def __post_init__(self) -> None:
        KafkaSettings.__post_init__(self)  # zero-argument super() fails in slots dataclasses
        if self.batch_max_records > self.max_inflight_records:
            raise ConfigError(
                "--batch-max-records must not exceed --max-inflight-records "
                f"({self.batch_max_records} > {self.max_inflight_records})"
            )
        if self.batch_max_bytes > self.max_inflight_bytes:
            raise ConfigError("--batch-max-bytes must not exceed --max-inflight-bytes")
        if self.enrich_url and self.enrich:
            raise ConfigError("give --enrich-url or --enrich, not both")
        if self.enrich_url:
            try:
                UrlTemplate.parse(self.enrich_url, self.enrich_max_url_length)
            except TemplateError as exc:
                raise ConfigError(f"--enrich-url: {exc}") from None
        check_registry(self, (self.input_format, self.output_format))
        uses_registry = self.input_format != "json" or self.output_format != "json"
        if uses_registry and self.schema_registry_retry >= self.batch_timeout:
            raise ConfigError("--schema-registry-retry must be less than --batch-timeout")
        check_postgres(self, needed="postgres" in self.sinks)
        if self.postgres_pool_min > self.postgres_pool_max:
            raise ConfigError("--postgres-pool-min must not exceed --postgres-pool-max")
        check_contradictions(self, self.sinks)
        self._check_windows()

    def _check_windows(self) -> None:
        """--window runs exactly once, into Kafka, on JSON; its options need it."""
        if not self.window:
            given = [name for name in NEEDS_WINDOW if getattr(self, name) != _DEFAULTS[name]]
            if given:
                raise ConfigError(f"{flag_name(given[0])} needs --window")
            if not self.transform:
                object.__setattr__(self, "transform", DEFAULT_TRANSFORM)
            return
        if not self.transform:  # the windows aggregate the decoded records themselves
            object.__setattr__(self, "transform", "identity")
        if self.guarantee != "exactly-once":
            raise ConfigError(
                "--window needs --guarantee exactly-once: window state, outputs and offsets "
                "commit together only in a transaction (at-least-once would count a "
                "replayed record twice)"
            )
        for other, why in (
            (self.sinks != ("kafka",), "--sink postgres"),
            (bool(self.enrich_url or self.enrich), "--enrich-url and --enrich"),
            (self.output_format != "json", "--output-format avro or protobuf"),
        ):
            if other:
                raise ConfigError(
                    f"--window does not work with {why} yet: windows are JSON to Kafka"
                )

    def resolve(self) -> Self:
        KafkaSettings.resolve(self)
        postgres_dsn_value(self)  # a DSN file that cannot be read stops the start
        resolve_registry(self)
        return self

    @property
    def sinks(self) -> tuple[str, ...]:
        """The sinks results go to, e.g. ("kafka",) or ("kafka", "postgres")."""
        return tuple(self.sink.split(","))
