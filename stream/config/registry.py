"""The Schema Registry options, which ``stream run`` and ``stream produce`` both declare
(each under its own environment names, so each command declares the fields itself from
these factories), and the checks that they fit together."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol, get_args

from stream.config.groups import CONNECTION, PROCESSING
from stream.options import ConfigError, choice, opt, read_secret_file, secret, text

RecordFormat = Literal["json", "avro", "protobuf"]


class RegistryAuth(Protocol):
    """The Schema Registry options a command declares (``stream run``, ``stream
    produce``)."""

    @property
    def schema_registry_url(self) -> str: ...
    @property
    def schema_registry_username(self) -> str: ...
    @property
    def schema_registry_password(self) -> str: ...
    @property
    def schema_registry_password_file(self) -> str: ...
    @property
    def schema_registry_cafile(self) -> str: ...


def registry_url(value: str) -> str:
    """An http(s) base URL, without the slash at its end."""
    url = text(value)
    if not url.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return url.rstrip("/")


def format_opt(what: str) -> RecordFormat:
    """The --input-format or --output-format option (``what``: input or output)."""
    return opt(
        "json",
        f"{what} record format: json, or avro/protobuf in the Confluent wire format through "
        "--schema-registry-url",
        choice(*get_args(RecordFormat)),
        group=PROCESSING,
    )


def registry_url_opt() -> str:
    """The --schema-registry-url option, for a command to declare."""
    return opt(
        "",
        "Confluent-compatible Schema Registry base URL, for avro and protobuf (default: none)",
        registry_url,
        "URL",
        group=CONNECTION,
    )


def registry_username_opt() -> str:
    """The --schema-registry-username option, for a command to declare."""
    return opt(
        "", "Schema Registry basic-auth user name (default: none)", metavar="NAME", group=CONNECTION
    )


def registry_password_opt() -> str:
    """The --schema-registry-password (a secret) option, for a command to declare."""
    return opt(
        "",
        "Schema Registry basic-auth password; prefer the environment variable or "
        "--schema-registry-password-file",
        secret,
        "PASSWORD",
        secret=True,
        group=CONNECTION,
    )


def registry_password_file_opt() -> str:
    """The --schema-registry-password-file option, for a command to declare."""
    return opt(
        "",
        "file holding the Schema Registry password, instead of --schema-registry-password "
        "(default: none)",
        metavar="PATH",
        group=CONNECTION,
    )


def registry_cafile_opt() -> str:
    """The --schema-registry-cafile option, for a command to declare."""
    return opt(
        "",
        "PEM file of the CAs that sign the Schema Registry's certificate, for an https URL "
        "(default: the system's CAs)",
        metavar="PATH",
        group=CONNECTION,
    )


def check_registry(settings: RegistryAuth, formats: tuple[str, ...]) -> None:
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


def resolve_registry(settings: RegistryAuth) -> None:
    """The Schema Registry's files: the CA file exists, the password file reads."""
    if settings.schema_registry_cafile and not Path(settings.schema_registry_cafile).is_file():
        raise ConfigError(
            f"--schema-registry-cafile: {settings.schema_registry_cafile!r} is not a file"
        )
    registry_password(settings)


def registry_password(settings: RegistryAuth) -> str:
    """The Schema Registry password, read from its file when that is given."""
    if settings.schema_registry_password_file:
        return read_secret_file(
            "schema_registry_password_file", settings.schema_registry_password_file
        )
    return settings.schema_registry_password
