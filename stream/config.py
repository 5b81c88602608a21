"""Typed settings, read from flags, environment, a config file and defaults.

Every option is a field of a frozen dataclass with its help text in the field's
metadata; the CLI builds its flags from those fields, so an option is declared in
one place. Precedence: flag > environment (``STREAM_<OPTION>``) > config file
(TOML, ``--config``/``STREAM_CONFIG``) > default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from stream.enrich.template import TemplateError, UrlTemplate

ENV_PREFIX = "STREAM_"


class ConfigError(ValueError):
    """A bad option value; the CLI prints it as one line and exits 2."""


# --- value parsers: str (from a flag, env var or file) -> typed value ---------------------


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def _float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise ValueError("must be more than 0")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if not value >= 0:
        raise ValueError("must be 0 or more")
    return value


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2}
_SIZE_UNITS |= {"mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def _size(text: str) -> int:
    """A byte size: 1048576, 1MiB, 512k."""
    raw = text.strip().lower().replace(" ", "")
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number) :]
    if unit not in _SIZE_UNITS or not number:
        raise ValueError("expected a byte size such as 1048576, 512KiB or 4MiB")
    try:
        value = int(float(number) * _SIZE_UNITS[unit])
    except (ValueError, OverflowError):  # "1.5.5", "1e400" (inf)
        raise ValueError("expected a byte size such as 1048576, 512KiB or 4MiB") from None
    if value < 1:
        raise ValueError("must be at least 1 byte")
    return value


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _secret(text: str) -> str:
    """A password as given: not stripped (spaces may belong to it), not empty. Errors never
    quote it."""
    if not text:
        raise ValueError("must not be empty")
    return text


def _enrich_url(text: str) -> str:
    """An http(s) URL template whose placeholders are well formed (stream.enrich.template)."""
    try:
        return UrlTemplate.parse(text.strip()).text
    except TemplateError as exc:
        raise ValueError(str(exc)) from None


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    parse.choices = choices  # type: ignore[attr-defined]
    return parse


def opt(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = _text,
    metavar: str | None = None,
    secret: bool = False,
) -> Any:
    """Declare one option: its default, help text and parser. A secret's value is never
    shown: not in --help, not in errors from ``load``, not in the settings' repr."""
    meta = {"help": help, "parse": parse, "metavar": metavar, "secret": secret}
    return field(default=default, metadata=meta, repr=not secret)


def read_secret_file(option: str, path: str) -> str:
    """The secret in a file (say, a mounted Kubernetes Secret), without the line breaks at
    its end. Errors name the option and the file, never the content."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{flag_name(option)}: no such file {path!r}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{flag_name(option)}: {path!r} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{flag_name(option)}: cannot read {path!r}: {exc.strerror}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{flag_name(option)}: {path!r} is empty")
    if "\n" in secret or "\r" in secret:
        raise ConfigError(f"{flag_name(option)}: {path!r} holds more than one line")
    return secret


# --- the settings ---------------------------------------------------------------------------

Guarantee = Literal["at-least-once", "exactly-once"]
OffsetReset = Literal["earliest", "latest"]
LogFormat = Literal["text", "json"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
EnrichMissing = Literal["fail", "pass"]


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Options every subcommand that talks to Kafka shares."""

    bootstrap_servers: str = opt(
        "localhost:9092", "Kafka bootstrap servers, comma-separated host:port", metavar="HOSTS"
    )
    input_topic: str = opt("input_topic", "topic to read events from", metavar="TOPIC")
    output_topic: str = opt("output_topic", "topic to write results to", metavar="TOPIC")
    dlq_topic: str = opt(
        "", "dead-letter topic for bad records (default: <input topic>.dlq)", metavar="TOPIC"
    )
    client_id: str = opt("stream", "Kafka client id, shown in broker logs and quotas")
    connect_timeout: float = opt(
        15.0,
        "seconds to wait for the broker at start before giving up",
        _positive_float,
        "SECONDS",
    )
    security_protocol: SecurityProtocol = opt(
        "PLAINTEXT",
        "how to talk to the brokers: SSL is TLS, SASL_* authenticate with --sasl-username",
        _choice(*get_args(SecurityProtocol)),
    )
    sasl_mechanism: SaslMechanism = opt(
        "SCRAM-SHA-512", "SASL mechanism", _choice(*get_args(SaslMechanism))
    )
    sasl_username: str = opt(
        "",
        "SASL user name, for --security-protocol SASL_SSL or SASL_PLAINTEXT (default: none)",
        metavar="NAME",
    )
    sasl_password: str = opt(
        "",
        "SASL password; prefer the environment variable or --sasl-password-file, as other "
        "local users can see a flag's value",
        _secret,
        "PASSWORD",
        secret=True,
    )
    sasl_password_file: str = opt(
        "",
        "file holding the SASL password, instead of --sasl-password (read at start; line "
        "breaks at its end are ignored) (default: none)",
        metavar="PATH",
    )
    ssl_cafile: str = opt(
        "",
        "PEM file of the CAs that sign the brokers' certificates (default: the system's CAs)",
        metavar="PATH",
    )
    ssl_certfile: str = opt(
        "",
        "PEM file of this client's certificate (and key, unless --ssl-keyfile), for brokers "
        "that ask for TLS client authentication (default: none)",
        metavar="PATH",
    )
    ssl_keyfile: str = opt(
        "", "PEM file of the private key of --ssl-certfile (default: none)", metavar="PATH"
    )
    ssl_key_password: str = opt(
        "", "password of an encrypted private key", _secret, "PASSWORD", secret=True
    )
    ssl_key_password_file: str = opt(
        "",
        "file holding the password of an encrypted private key, instead of "
        "--ssl-key-password (default: none)",
        metavar="PATH",
    )
    ssl_check_hostname: bool = opt(
        True,
        "check that a broker's certificate is valid for the host name the client connects to "
        "(turn off with --no-ssl-check-hostname or STREAM_SSL_CHECK_HOSTNAME=false)",
        _bool,
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
        """The security options fit together and their files exist; errors name options
        and paths, never a secret."""
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
        for name in _FILE_OPTIONS:
            path = getattr(self, name)
            if path and not Path(path).is_file():
                what = "is not a file" if Path(path).exists() else "does not exist"
                raise ConfigError(f"{flag_name(name)}: {path!r} {what}")
        # Read the password files now, so a bad one stops the command before it does
        # anything; clients read them again when they are made.
        self.sasl_password_value()
        self.ssl_key_password_value()

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


@dataclass(frozen=True, slots=True)
class RunSettings(KafkaSettings):
    """Options of ``stream run``."""

    group_id: str = opt("stream", "consumer group id; instances with one id share the work")
    transform: str = opt(
        "sensor-features",
        "transform: a built-in name (see `stream transforms`) or package.module:function",
        metavar="NAME",
    )
    workers: int = opt(
        os.cpu_count() or 1, "worker processes (default: CPU count)", _positive_int, "N"
    )
    guarantee: Guarantee = opt("at-least-once", "delivery guarantee", _choice(*get_args(Guarantee)))
    metrics_port: int = opt(9400, "Prometheus metrics port (0: any free port)", _port, "PORT")
    metrics_host: str = opt("127.0.0.1", "address the metrics server binds", metavar="HOST")
    auto_offset_reset: OffsetReset = opt(
        "earliest",
        "where a group without committed offsets starts",
        _choice(*get_args(OffsetReset)),
    )
    batch_timeout: float = opt(
        60.0,
        "seconds a worker may spend on one batch before it is replaced and the batch retried",
        _positive_float,
        "SECONDS",
    )
    batch_max_records: int = opt(
        500, "most records in one batch sent to a worker", _positive_int, "N"
    )
    batch_max_bytes: int = opt(1 << 20, "most bytes in one batch sent to a worker", _size, "SIZE")
    max_inflight_records: int = opt(
        20_000, "records read but not yet committed before fetching pauses", _positive_int, "N"
    )
    max_inflight_bytes: int = opt(
        64 << 20, "bytes read but not yet committed before fetching pauses", _size, "SIZE"
    )
    max_record_bytes: int = opt(
        1 << 20, "larger input records go to the dead-letter topic", _size, "SIZE"
    )
    max_array_length: int = opt(
        100_000,
        "longest array a built-in transform accepts (sensor values, matrix rows)",
        _positive_int,
        "N",
    )
    require_key: bool = opt(
        True, "records without a key go to the dead-letter topic (reason null_key)", _bool
    )
    fetch_max_bytes: int = opt(8 << 20, "most bytes one fetch from the broker returns", _size)
    max_partition_fetch_bytes: int = opt(
        1 << 20, "most bytes one fetch returns per partition", _size, "SIZE"
    )
    commit_interval: float = opt(1.0, "seconds between offset commits", _positive_float, "SECONDS")
    drain_timeout: float = opt(
        30.0,
        "seconds to finish in-flight work on shutdown or rebalance before abandoning it",
        _positive_float,
        "SECONDS",
    )
    delivery_timeout: float = opt(
        120.0,
        "seconds a produced record may wait for the broker (rides out an outage) before the "
        "service stops with an error, committing nothing past it",
        _positive_float,
        "SECONDS",
    )
    linger_ms: int = opt(
        5, "producer: milliseconds to wait to fill a batch", _non_negative_int, "MS"
    )
    session_timeout_ms: int = opt(30_000, "consumer group session timeout", _positive_int, "MS")
    lag_interval: float = opt(
        5.0,
        "seconds between reads of the partitions' end offsets (lag)",
        _positive_float,
        "SECONDS",
    )
    stall_timeout: float = opt(
        120.0,
        "seconds without progress while lagging before /healthz reports not alive",
        _positive_float,
        "SECONDS",
    )
    log_level: str = opt("info", "log level", _choice("debug", "info", "warning", "error"))
    log_format: LogFormat = opt("text", "log line format", _choice(*get_args(LogFormat)))
    stats_interval: float = opt(
        30.0, "seconds between summary log lines (0: never)", _non_negative_float, "SECONDS"
    )
    # --- enrichment: async lookups on the event loop before the transform (stream.enrich) ---
    enrich_url: str = opt(
        "",
        "enrich each record with the JSON answer of a GET to this URL, with {field} "
        "placeholders from the record or {key} (default: none)",
        _enrich_url,
        "URL",
    )
    enrich: str = opt(
        "",
        "enrich each record with a coroutine of your own, package.module:function (default: none)",
        metavar="MODULE:FUNCTION",
    )
    enrich_field: str = opt("meta", "record field that receives the lookup's answer")
    enrich_concurrency: int = opt(
        100, "enrichment lookups in flight at most, over all batches", _positive_int, "N"
    )
    enrich_timeout: float = opt(
        5.0, "seconds one enrichment lookup attempt may take", _positive_float, "SECONDS"
    )
    enrich_retries: int = opt(
        3,
        "retries of a lookup after a timeout, a connection error, 5xx or 429 (with backoff "
        "and jitter, honouring Retry-After)",
        _non_negative_int,
        "N",
    )
    enrich_cache_ttl: float = opt(
        60.0, "seconds a lookup's answer is reused (0: no cache)", _non_negative_float, "SECONDS"
    )
    enrich_cache_size: int = opt(
        10_000, "most answers the enrichment cache holds (0: no cache)", _non_negative_int, "N"
    )
    enrich_missing: EnrichMissing = opt(
        "fail",
        "on a 404 (or a coroutine returning None): fail sends the record to the dead-letter "
        "topic (reason enrich_failed), pass lets it through without the field",
        _choice(*get_args(EnrichMissing)),
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


@dataclass(frozen=True, slots=True)
class ProduceSettings(KafkaSettings):
    """Options of ``stream produce``."""

    kind: str = opt("sensor", "demo event kind", _choice("sensor", "matrix"))
    count: int = opt(1000, "events to send", _non_negative_int, "N")
    rate: float = opt(0.0, "events per second (0: as fast as possible)", _non_negative_float)
    keys: int = opt(16, "distinct keys (sensor ids)", _positive_int, "N")
    seed: int = opt(0, "random seed; the same seed sends the same events", _int, "N")
    values: int = opt(64, "sensor readings per event", _positive_int, "N")
    matrix_size: int = opt(8, "matrix size n for --kind matrix (n x n)", _positive_int, "N")
    file: str = opt(
        "", "send JSON lines from this file ('-' for stdin) instead of demo events", metavar="PATH"
    )
    topic: str = opt("", "topic to send to (default: the input topic)", metavar="TOPIC")
    quiet: bool = opt(False, "no progress line", _bool)


@dataclass(frozen=True, slots=True)
class TopicsSettings(KafkaSettings):
    """Options of ``stream topics``."""

    partitions: int = opt(4, "partitions for created topics", _positive_int, "N")
    replication_factor: int = opt(1, "replication factor for created topics", _positive_int, "N")


S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class LagSettings(KafkaSettings):
    """Options of ``stream lag``."""

    group_id: str = opt("stream", "consumer group id")
    json: bool = opt(False, "print JSON instead of a table", _bool)


@dataclass(frozen=True, slots=True)
class BenchSettings(KafkaSettings):
    """Options of ``stream bench``."""

    count: int = opt(200_000, "records per case (pre-filled once per payload kind)", _positive_int)
    partitions: int = opt(4, "partitions of the benchmark's topics", _positive_int, "N")
    payload: int = opt(1300, "approximate bytes per sensor event", _positive_int, "BYTES")
    matrix_size: int = opt(
        0, "matrix size for matrix-inverse (0: the size that costs ~1 ms a record)", _int, "N"
    )
    case_seconds: float = opt(
        30.0, "longest throughput run of one case", _positive_float, "SECONDS"
    )
    latency_seconds: float = opt(
        10.0, "length of each latency run at the offered rate", _positive_float, "SECONDS"
    )
    load: float = opt(
        0.5, "offered rate of the latency run, as a share of the case's throughput", _float
    )
    rate: float = opt(0.0, "offered rate in records/s (overrides --load)", _non_negative_float)
    seed: int = opt(0, "random seed of the events", _int, "N")
    cases: str = opt("", "only these cases or groups, comma-separated (default: all)")
    output: str = opt("", "write the raw results as JSON here", metavar="PATH")
    chart: str = opt("", "draw a PNG chart here (needs the 'plot' extra)", metavar="PATH")
    quick: bool = opt(
        False, "a short smoke run: few records and cases (for CI; ratios are rough)", _bool
    )


def option_fields(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def read_config_file(path: str) -> dict[str, Any]:
    """A TOML file of options; keys as in the flags, with - or _; may sit under [stream]."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path!r} cannot be read: {exc}") from None
    section = data.get("stream", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path!r}: [stream] must be a table")
    return {str(k).replace("-", "_"): v for k, v in section.items()}


def load(
    cls: type[S],
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> S:
    """Build ``cls`` from flags (already strings), environment and config file."""
    environ = os.environ if environ is None else environ
    path = config_file or environ.get(env_name("config")) or ""
    from_file = read_config_file(path) if path else {}
    fields = option_fields(cls)
    known = {f.name for f in fields}
    unknown = sorted(set(from_file) - known)
    if unknown and path:
        all_options = {f.name for c in _ALL for f in option_fields(c)}
        really_unknown = [k for k in unknown if k not in all_options]
        if really_unknown:
            raise ConfigError(
                f"config file {path!r}: unknown option(s) {', '.join(really_unknown)}"
            )
    values: dict[str, Any] = {}
    for f in fields:
        parse = f.metadata["parse"]
        if f.name in flags:
            raw, source = flags[f.name], flag_name(f.name)
        elif env_name(f.name) in environ:
            raw, source = environ[env_name(f.name)], env_name(f.name)
        elif f.name in from_file:
            raw, source = from_file[f.name], f"{f.name} in {path}"
        else:
            raw, source = f.default, ""
        if source:
            try:
                values[f.name] = parse(raw if isinstance(raw, str) else str(raw).lower())
            except ValueError as exc:
                shown = "***" if f.metadata["secret"] else repr(raw)
                where = f" (from {source})" if source else ""
                raise ConfigError(f"{flag_name(f.name)}{where}: {exc}; got {shown}") from None
        else:
            values[f.name] = raw
    return cls(**values)


_ALL: tuple[type[Any], ...] = (
    RunSettings,
    ProduceSettings,
    TopicsSettings,
    LagSettings,
    BenchSettings,
)
