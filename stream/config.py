"""The options of every command: one frozen dataclass per command, each option a field
declared with ``opt`` (its default, help text, parser and --help group). The machinery
that turns flags, environment and a config file into these objects is
:mod:`stream.options`.

Building a settings object does no I/O: only checks that options fit together. Files
named by options (password files, certificates) are checked and read by ``resolve()``,
which the CLI calls after ``load`` and the engine calls at start.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, get_args

from stream.options import (
    ConfigError,
    boolean,
    choice,
    env_name,
    flag_name,
    known_settings,
    load,
    non_negative_float,
    non_negative_int,
    opt,
    option_env,
    option_fields,
    parse_float,
    parse_int,
    port,
    positive_float,
    positive_int,
    read_config_file,
    read_secret_file,
    secret,
    size,
    text,
)
from stream.url_template import TemplateError, UrlTemplate

__all__ = [
    "BenchSettings",
    "ConfigError",
    "KafkaSettings",
    "LagSettings",
    "ProduceSettings",
    "RunSettings",
    "TopicsSettings",
    "TrySettings",
    "env_name",
    "flag_name",
    "load",
    "option_env",
    "option_fields",
    "read_config_file",
    "read_secret_file",
]

# The parsers' names before they moved to stream.options, for declarations written on
# other branches against them; new declarations use the public names.
_int, _float, _text, _bool, _secret, _choice = parse_int, parse_float, text, boolean, secret, choice
_positive_int, _non_negative_int, _port, _size = positive_int, non_negative_int, port, size
_positive_float, _non_negative_float = positive_float, non_negative_float

# --- the settings ---------------------------------------------------------------------------

Guarantee = Literal["at-least-once", "exactly-once"]
OffsetReset = Literal["earliest", "latest"]
LogFormat = Literal["text", "json"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
RecordFormat = Literal["json", "avro", "protobuf"]
TryFormat = Literal["json", "avro"]


# --- Schema Registry options (``stream run`` and ``stream produce`` both declare them) -------


def _registry_url(text: str) -> str:
    url = _text(text)
    if not url.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return url.rstrip("/")


def _format_opt(what: str) -> Any:
    return opt(
        "json",
        f"{what} record format: json, or avro/protobuf in the Confluent wire format through "
        "--schema-registry-url",
        _choice(*get_args(RecordFormat)),
        group=PROCESSING,
    )


def _registry_url_opt() -> Any:
    return opt(
        "",
        "Confluent-compatible Schema Registry base URL, for avro and protobuf (default: none)",
        _registry_url,
        "URL",
        group=CONNECTION,
    )


def _registry_username_opt() -> Any:
    return opt(
        "", "Schema Registry basic-auth user name (default: none)", metavar="NAME", group=CONNECTION
    )


def _registry_password_opt() -> Any:
    return opt(
        "",
        "Schema Registry basic-auth password; prefer the environment variable or "
        "--schema-registry-password-file",
        _secret,
        "PASSWORD",
        secret=True,
        group=CONNECTION,
    )


def _registry_password_file_opt() -> Any:
    return opt(
        "",
        "file holding the Schema Registry password, instead of --schema-registry-password "
        "(default: none)",
        metavar="PATH",
        group=CONNECTION,
    )


def _registry_cafile_opt() -> Any:
    return opt(
        "",
        "PEM file of the CAs that sign the Schema Registry's certificate, for an https URL "
        "(default: the system's CAs)",
        metavar="PATH",
        group=CONNECTION,
    )


def check_registry(settings: Any, formats: tuple[str, ...]) -> None:
    """The Schema Registry options of ``settings`` fit the formats; errors never show a
    secret."""
    needs = [f for f in formats if f != "json"]
    url = settings.schema_registry_url
    if needs and not url:
        raise ConfigError(f"the {needs[0]} format needs --schema-registry-url")
    if settings.schema_registry_password and settings.schema_registry_password_file:
        raise ConfigError(
            "give --schema-registry-password or --schema-registry-password-file, not both"
        )
    has_password = settings.schema_registry_password or settings.schema_registry_password_file
    if has_password and not settings.schema_registry_username:
        raise ConfigError("a Schema Registry password needs --schema-registry-username")
    if settings.schema_registry_cafile and not url.startswith("https://"):
        raise ConfigError("--schema-registry-cafile needs an https:// --schema-registry-url")


def resolve_registry(settings: Any) -> None:
    """The Schema Registry's files: the CA file exists, the password file reads."""
    if settings.schema_registry_cafile and not Path(settings.schema_registry_cafile).is_file():
        raise ConfigError(
            f"--schema-registry-cafile: {settings.schema_registry_cafile!r} is not a file"
        )
    registry_password(settings)


def registry_password(settings: Any) -> str:
    """The Schema Registry password, read from its file when that is given."""
    if settings.schema_registry_password_file:
        return read_secret_file(
            "schema_registry_password_file", settings.schema_registry_password_file
        )
    return str(settings.schema_registry_password)


# The sections of --help, in this order (options with no group are the command's own).
CONNECTION = "connection and security"
PROCESSING = "processing"
ENRICHMENT = "enrichment (lookups before the transform)"
FLOW = "flow control"
SINKS = "sinks"
OBSERVABILITY = "observability"
GROUPS = (CONNECTION, PROCESSING, ENRICHMENT, FLOW, SINKS, OBSERVABILITY)
EnrichMissing = Literal["fail", "pass"]


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Options every subcommand that talks to Kafka shares."""

    bootstrap_servers: str = opt(
        "localhost:9092",
        "Kafka bootstrap servers, comma-separated host:port",
        metavar="HOSTS",
        group=CONNECTION,
    )
    input_topic: str = opt(
        "input_topic", "topic to read events from", metavar="TOPIC", group=PROCESSING
    )
    output_topic: str = opt(
        "output_topic", "topic to write results to", metavar="TOPIC", group=SINKS
    )
    dlq_topic: str = opt(
        "",
        "dead-letter topic for bad records (default: <input topic>.dlq)",
        metavar="TOPIC",
        group=SINKS,
    )
    client_id: str = opt(
        "stream", "Kafka client id, shown in broker logs and quotas", group=CONNECTION
    )
    connect_timeout: float = opt(
        15.0,
        "seconds to wait for the broker at start before giving up",
        positive_float,
        "SECONDS",
        group=CONNECTION,
    )
    security_protocol: SecurityProtocol = opt(
        "PLAINTEXT",
        "how to talk to the brokers: SSL is TLS, SASL_* authenticate with --sasl-username",
        choice(*get_args(SecurityProtocol)),
        group=CONNECTION,
    )
    sasl_mechanism: SaslMechanism = opt(
        "SCRAM-SHA-512", "SASL mechanism", choice(*get_args(SaslMechanism)), group=CONNECTION
    )
    sasl_username: str = opt(
        "",
        "SASL user name, for --security-protocol SASL_SSL or SASL_PLAINTEXT (default: none)",
        metavar="NAME",
        group=CONNECTION,
    )
    sasl_password: str = opt(
        "",
        "SASL password; prefer the environment variable or --sasl-password-file, as other "
        "local users can see a flag's value",
        secret,
        "PASSWORD",
        secret=True,
        group=CONNECTION,
    )
    sasl_password_file: str = opt(
        "",
        "file holding the SASL password, instead of --sasl-password (read at start; line "
        "breaks at its end are ignored) (default: none)",
        metavar="PATH",
        group=CONNECTION,
    )
    ssl_cafile: str = opt(
        "",
        "PEM file of the CAs that sign the brokers' certificates (default: the system's CAs)",
        metavar="PATH",
        group=CONNECTION,
    )
    ssl_certfile: str = opt(
        "",
        "PEM file of this client's certificate (and key, unless --ssl-keyfile), for brokers "
        "that ask for TLS client authentication (default: none)",
        metavar="PATH",
        group=CONNECTION,
    )
    ssl_keyfile: str = opt(
        "",
        "PEM file of the private key of --ssl-certfile (default: none)",
        metavar="PATH",
        group=CONNECTION,
    )
    ssl_key_password: str = opt(
        "",
        "password of an encrypted private key",
        secret,
        "PASSWORD",
        secret=True,
        group=CONNECTION,
    )
    ssl_key_password_file: str = opt(
        "",
        "file holding the password of an encrypted private key, instead of "
        "--ssl-key-password (default: none)",
        metavar="PATH",
        group=CONNECTION,
    )
    ssl_check_hostname: bool = opt(
        True,
        "check that a broker's certificate is valid for the host name the client connects to "
        "(turn off with --no-ssl-check-hostname or STREAM_SSL_CHECK_HOSTNAME=false)",
        boolean,
        group=CONNECTION,
    )

    def __post_init__(self) -> None:
        self.check_security()

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.input_topic}.dlq"

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def check_security(self) -> None:
        """The security options fit together (no I/O: ``resolve`` checks the files); errors
        name options, never a secret."""
        protocol = f"--security-protocol {self.security_protocol}"
        if self.sasl_password and self.sasl_password_file:
            raise ConfigError("give --sasl-password or --sasl-password-file, not both")
        if self.ssl_key_password and self.ssl_key_password_file:
            raise ConfigError("give --ssl-key-password or --ssl-key-password-file, not both")
        if self.uses_sasl:
            if not self.sasl_username:
                raise ConfigError(f"{protocol} needs --sasl-username")
            if not (self.sasl_password or self.sasl_password_file):
                raise ConfigError(f"{protocol} needs --sasl-password or --sasl-password-file")
        else:
            given = [n for n in _SASL_OPTIONS if getattr(self, n)]
            if given:
                raise ConfigError(
                    f"{', '.join(map(flag_name, given))} given, but {protocol} does not "
                    "use SASL (SASL_SSL or SASL_PLAINTEXT do)"
                )
        if self.uses_ssl:
            if self.ssl_keyfile and not self.ssl_certfile:
                raise ConfigError("--ssl-keyfile needs --ssl-certfile")
            if (self.ssl_key_password or self.ssl_key_password_file) and not self.ssl_certfile:
                raise ConfigError("a private key password needs --ssl-certfile")
        else:
            given = [n for n in _SSL_OPTIONS if getattr(self, n)]
            if given:
                raise ConfigError(
                    f"{', '.join(map(flag_name, given))} given, but {protocol} does not "
                    "use TLS (SSL or SASL_SSL do)"
                )

    def resolve(self) -> Self:
        """Check the files the options name and read the password files, so a bad one
        stops the command before it does anything (clients read them again when they are
        made). Returns the settings themselves; errors name options and paths, never a
        secret. The CLI calls it after ``load``; the engine calls it at start."""
        for name in _FILE_OPTIONS:
            path = getattr(self, name)
            if path and not Path(path).is_file():
                what = "is not a file" if Path(path).exists() else "does not exist"
                raise ConfigError(f"{flag_name(name)}: {path!r} {what}")
        self.sasl_password_value()
        self.ssl_key_password_value()
        return self

    def sasl_password_value(self) -> str:
        """The SASL password, read from --sasl-password-file when that is given."""
        if self.sasl_password_file:
            return read_secret_file("sasl_password_file", self.sasl_password_file)
        return self.sasl_password

    def ssl_key_password_value(self) -> str | None:
        """The private key's password (None: the key is not encrypted)."""
        if self.ssl_key_password_file:
            return read_secret_file("ssl_key_password_file", self.ssl_key_password_file)
        return self.ssl_key_password or None


_SASL_OPTIONS = ("sasl_username", "sasl_password", "sasl_password_file")
_SSL_OPTIONS = (
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_key_password",
    "ssl_key_password_file",
)
_FILE_OPTIONS = (
    "sasl_password_file",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_key_password_file",
)


# --- PostgreSQL sink options (shared by `stream run` and `stream db init`) -------------------

Sink = Literal["kafka", "postgres"]
SINK_NAMES: tuple[str, ...] = get_args(Sink)
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


def _enrich_url(text: str) -> str:
    """An http(s) URL template whose placeholders are well formed (stream.url_template)."""
    try:
        return UrlTemplate.parse(text.strip()).text
    except TemplateError as exc:
        raise ValueError(str(exc)) from None


def _sinks(text: str) -> str:
    """kafka, postgres or both, comma-separated; kept in a fixed order."""
    given = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [g for g in given if g not in SINK_NAMES]
    if not given or unknown:
        raise ValueError("expected kafka, postgres or kafka,postgres")
    return ",".join(s for s in SINK_NAMES if s in given)


def _table_name(text: str) -> str:
    """Empty (the transform's default table), a table or schema.table name."""
    name = text.strip()
    if name and not _TABLE_NAME.match(name):
        raise ValueError("expected a table name of letters, digits and _ (optionally schema.table)")
    return name


def _postgres_dsn() -> Any:
    return opt(
        "",
        "PostgreSQL connection URL, postgresql://user:password@host:port/database; prefer the "
        "environment variable or --postgres-dsn-file, as other local users can see a flag's "
        "value (default: none)",
        _secret,
        "DSN",
        secret=True,
        group=SINKS,
    )


def _postgres_dsn_file() -> Any:
    return opt(
        "",
        "file holding the PostgreSQL DSN, instead of --postgres-dsn (default: none)",
        metavar="PATH",
        group=SINKS,
    )


def _postgres_table() -> Any:
    return opt(
        "",
        "table for the results (default: sensor_features for the sensor-features transform, "
        "stream_results for any other)",
        _table_name,
        "NAME",
        group=SINKS,
    )


def _postgres_command_timeout() -> Any:
    return opt(
        30.0, "seconds one database statement may take", _positive_float, "SECONDS", group=SINKS
    )


def postgres_dsn_value(settings: Any) -> str:
    """The DSN, read from --postgres-dsn-file when that is given."""
    if settings.postgres_dsn_file:
        return read_secret_file("postgres_dsn_file", settings.postgres_dsn_file)
    dsn: str = settings.postgres_dsn
    return dsn


def check_postgres(settings: Any, needed: bool) -> None:
    """The DSN options fit together (no I/O: ``resolve`` reads the file); errors never
    show the DSN."""
    if settings.postgres_dsn and settings.postgres_dsn_file:
        raise ConfigError("give --postgres-dsn or --postgres-dsn-file, not both")
    if needed and not (settings.postgres_dsn or settings.postgres_dsn_file):
        raise ConfigError("--sink postgres needs --postgres-dsn or --postgres-dsn-file")


@dataclass(frozen=True, slots=True)
class DbSettings:
    """Options of ``stream db``."""

    postgres_dsn: str = _postgres_dsn()
    postgres_dsn_file: str = _postgres_dsn_file()
    postgres_table: str = _postgres_table()
    transform: str = opt(
        "sensor-features",
        "the transform whose results the table holds (sensor-features: typed columns; any "
        "other: key and value jsonb)",
        metavar="NAME",
    )
    postgres_command_timeout: float = _postgres_command_timeout()
    connect_timeout: float = opt(
        15.0, "seconds to wait for the database before giving up", _positive_float, "SECONDS"
    )

    def __post_init__(self) -> None:
        if not (self.postgres_dsn or self.postgres_dsn_file):
            raise ConfigError("stream db needs --postgres-dsn or --postgres-dsn-file")
        check_postgres(self, needed=True)

    def resolve(self) -> Self:
        """Read the DSN file now, so a bad one stops the command before it starts."""
        postgres_dsn_value(self)
        return self


@dataclass(frozen=True, slots=True)
class RunSettings(KafkaSettings):
    """Options of ``stream run``. They are the service's, and the deployment's contract
    (compose, the ConfigMap): they keep ``STREAM_<OPTION>``."""

    group_id: str = opt(
        "stream", "consumer group id; instances with one id share the work", group=PROCESSING
    )
    transform: str = opt(
        "sensor-features",
        "transform: a built-in name (see `stream transforms`) or package.module:function",
        metavar="NAME",
        group=PROCESSING,
    )
    workers: int = opt(
        os.cpu_count() or 1,
        "worker processes (default: CPU count)",
        positive_int,
        "N",
        group=PROCESSING,
    )
    guarantee: Guarantee = opt(
        "at-least-once", "delivery guarantee", choice(*get_args(Guarantee)), group=PROCESSING
    )
    metrics_port: int = opt(
        9400, "Prometheus metrics port (0: any free port)", port, "PORT", group=OBSERVABILITY
    )
    metrics_host: str = opt(
        "127.0.0.1", "address the metrics server binds", metavar="HOST", group=OBSERVABILITY
    )
    auto_offset_reset: OffsetReset = opt(
        "earliest",
        "where a group without committed offsets starts",
        choice(*get_args(OffsetReset)),
        group=PROCESSING,
    )
    batch_timeout: float = opt(
        60.0,
        "seconds a worker may spend on one batch before it is replaced and the batch retried",
        positive_float,
        "SECONDS",
        group=PROCESSING,
    )
    batch_max_records: int = opt(
        500, "most records in one batch sent to a worker", positive_int, "N", group=PROCESSING
    )
    batch_max_bytes: int = opt(
        1 << 20, "most bytes in one batch sent to a worker", size, "SIZE", group=PROCESSING
    )
    max_inflight_records: int = opt(
        20_000,
        "records read but not yet committed before fetching pauses",
        positive_int,
        "N",
        group=FLOW,
    )
    max_inflight_bytes: int = opt(
        64 << 20,
        "bytes read but not yet committed before fetching pauses",
        size,
        "SIZE",
        group=FLOW,
    )
    max_record_bytes: int = opt(
        1 << 20, "larger input records go to the dead-letter topic", size, "SIZE", group=PROCESSING
    )
    max_array_length: int = opt(
        100_000,
        "longest array a built-in transform accepts (sensor values, matrix rows)",
        positive_int,
        "N",
        group=PROCESSING,
    )
    require_key: bool = opt(
        False,
        "records without a key go to the dead-letter topic (reason null_key); when off, "
        "they are processed and their outputs keep the null key",
        boolean,
        group=PROCESSING,
    )
    fetch_max_bytes: int = opt(
        8 << 20, "most bytes one fetch from the broker returns", size, "SIZE", group=FLOW
    )
    max_partition_fetch_bytes: int = opt(
        1 << 20, "most bytes one fetch returns per partition", size, "SIZE", group=FLOW
    )
    commit_interval: float = opt(
        1.0, "seconds between offset commits", positive_float, "SECONDS", group=FLOW
    )
    transaction_interval: float = opt(
        0.1,
        "exactly-once: seconds a partition's transaction stays open before it commits; "
        "outputs are visible to read_committed consumers only then, so longer means "
        "fewer commits and more throughput but later outputs (0: commit after each "
        "delivery)",
        non_negative_float,
        "SECONDS",
        group=FLOW,
    )
    drain_timeout: float = opt(
        30.0,
        "seconds to finish in-flight work on shutdown or rebalance before abandoning it",
        positive_float,
        "SECONDS",
        group=FLOW,
    )
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
    session_timeout_ms: int = opt(
        30_000, "consumer group session timeout", positive_int, "MS", group=FLOW
    )
    lag_interval: float = opt(
        5.0,
        "seconds between reads of the partitions' end offsets (lag)",
        positive_float,
        "SECONDS",
        group=OBSERVABILITY,
    )
    stall_timeout: float = opt(
        120.0,
        "seconds without progress while lagging before /healthz reports not alive",
        positive_float,
        "SECONDS",
        group=OBSERVABILITY,
    )
    log_level: str = opt(
        "info", "log level", choice("debug", "info", "warning", "error"), group=OBSERVABILITY
    )
    log_format: LogFormat = opt(
        "text", "log line format", choice(*get_args(LogFormat)), group=OBSERVABILITY
    )
    stats_interval: float = opt(
        30.0,
        "seconds between summary log lines (0: never)",
        non_negative_float,
        "SECONDS",
        group=OBSERVABILITY,
    )
    # --- sinks (PostgreSQL options: see PostgresSink) ---
    sink: str = opt(
        "kafka", "where results go: kafka, postgres or kafka,postgres", _sinks, "SINKS", group=SINKS
    )
    postgres_dsn: str = _postgres_dsn()
    postgres_dsn_file: str = _postgres_dsn_file()
    postgres_table: str = _postgres_table()
    postgres_pool_min: int = opt(
        1, "PostgreSQL connections the pool keeps open", _positive_int, "N", group=SINKS
    )
    postgres_pool_max: int = opt(
        4, "most PostgreSQL connections (batches written at once)", _positive_int, "N", group=SINKS
    )
    postgres_command_timeout: float = _postgres_command_timeout()
    input_format: RecordFormat = _format_opt("input")
    output_format: RecordFormat = _format_opt("output")
    schema_registry_url: str = _registry_url_opt()
    schema_registry_username: str = _registry_username_opt()
    schema_registry_password: str = _registry_password_opt()
    schema_registry_password_file: str = _registry_password_file_opt()
    schema_registry_cafile: str = _registry_cafile_opt()
    schema_registry_retry: float = opt(
        10.0,
        "seconds a worker retries an unreachable Schema Registry before the batch is put "
        "back and run again later (records never become dead letters for an outage)",
        _positive_float,
        "SECONDS",
        group=CONNECTION,
    )
    # --- enrichment: async lookups on the event loop before the transform (stream.enrich) ---
    enrich_url: str = opt(
        "",
        "enrich each record with the JSON answer of a GET to this URL, with {field} "
        "placeholders from the record or {key} (default: none)",
        _enrich_url,
        "URL",
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
        _positive_int,
        "N",
        group=ENRICHMENT,
    )
    enrich_timeout: float = opt(
        5.0,
        "seconds one enrichment lookup attempt may take",
        _positive_float,
        "SECONDS",
        group=ENRICHMENT,
    )
    enrich_retries: int = opt(
        3,
        "retries of a lookup after a timeout, a connection error, 5xx or 429 (with backoff "
        "and jitter, honouring Retry-After)",
        _non_negative_int,
        "N",
        group=ENRICHMENT,
    )
    enrich_cache_ttl: float = opt(
        60.0,
        "seconds a lookup's answer is reused (0: no cache)",
        _non_negative_float,
        "SECONDS",
        group=ENRICHMENT,
    )
    enrich_cache_size: int = opt(
        10_000,
        "most answers the enrichment cache holds (0: no cache)",
        _non_negative_int,
        "N",
        group=ENRICHMENT,
    )
    enrich_missing: EnrichMissing = opt(
        "fail",
        "on a 404 (or a coroutine returning None): fail sends the record to the dead-letter "
        "topic (reason enrich_failed), pass lets it through without the field",
        _choice(*get_args(EnrichMissing)),
        group=ENRICHMENT,
    )

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
        check_registry(self, (self.input_format, self.output_format))
        uses_registry = self.input_format != "json" or self.output_format != "json"
        if uses_registry and self.schema_registry_retry >= self.batch_timeout:
            raise ConfigError("--schema-registry-retry must be less than --batch-timeout")
        check_postgres(self, needed="postgres" in self.sinks)
        if self.postgres_pool_min > self.postgres_pool_max:
            raise ConfigError("--postgres-pool-min must not exceed --postgres-pool-max")

    def resolve(self) -> Self:
        KafkaSettings.resolve(self)
        postgres_dsn_value(self)  # a DSN file that cannot be read stops the start
        resolve_registry(self)
        return self

    @property
    def sinks(self) -> tuple[str, ...]:
        """The sinks results go to, e.g. ("kafka",) or ("kafka", "postgres")."""
        return tuple(self.sink.split(","))


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
    quiet: bool = opt(False, "no progress line", boolean)
    format: RecordFormat = opt(
        "json",
        "format of the demo events: json, or avro/protobuf with a schema registered under "
        "<topic>-value at --schema-registry-url",
        _choice(*get_args(RecordFormat)),
    )
    schema_registry_url: str = _registry_url_opt()
    schema_registry_username: str = _registry_username_opt()
    schema_registry_password: str = _registry_password_opt()
    schema_registry_password_file: str = _registry_password_file_opt()
    schema_registry_cafile: str = _registry_cafile_opt()

    def __post_init__(self) -> None:
        KafkaSettings.__post_init__(self)
        check_registry(self, (self.format,))
        if self.format != "json" and (self.file or self.kind != "sensor"):
            raise ConfigError("--format avro and protobuf send sensor demo events only")

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
        _secret,
        "DSN",
        secret=True,
    )
    schema_registry_url: str = opt(
        "",
        "Confluent-compatible Schema Registry base URL for the formats cases (avro, "
        "protobuf); without it they are skipped",
        _registry_url,
        "URL",
    )


@dataclass(frozen=True, slots=True)
class TrySettings:
    """Options of ``stream try``: records from a file through a transform, no broker."""

    COMMAND: ClassVar[str] = "try"

    transform: str = opt(
        "sensor-features",
        "transform: a built-in name (see `stream transforms`) or package.module:function",
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


known_settings(
    RunSettings, ProduceSettings, TopicsSettings, LagSettings, BenchSettings, TrySettings
)
