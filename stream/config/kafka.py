"""The options every subcommand that talks to Kafka shares: the brokers, the topics,
and the connection's security (TLS, SASL), with the checks that they fit together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self, get_args

from stream.config.groups import CONNECTION, PROCESSING, SINKS
from stream.options import (
    ConfigError,
    boolean,
    choice,
    flag_name,
    opt,
    positive_float,
    read_secret_file,
    secret,
)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


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
