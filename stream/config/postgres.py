"""The PostgreSQL sink's options, shared by ``stream run`` and ``stream db init`` (each
declares the fields from these factories), their checks, and ``stream db``'s settings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, Self

from stream.config.dsn import dsn_problem
from stream.config.groups import SINKS
from stream.options import ConfigError, opt, positive_float, read_secret_file, secret

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


class DsnOptions(Protocol):
    """The DSN options a command declares (``stream run``, ``stream db``)."""

    @property
    def postgres_dsn(self) -> str: ...
    @property
    def postgres_dsn_file(self) -> str: ...


def _table_name(text: str) -> str:
    """Empty (the transform's default table), a table or schema.table name."""
    name = text.strip()
    if name and not _TABLE_NAME.match(name):
        raise ValueError("expected a table name of letters, digits and _ (optionally schema.table)")
    return name


def postgres_dsn_opt() -> str:
    """The --postgres-dsn (a secret) option, for a command to declare."""
    return opt(
        "",
        "PostgreSQL connection URL, postgresql://user:password@host:port/database; prefer the "
        "environment variable or --postgres-dsn-file, as other local users can see a flag's "
        "value (default: none)",
        secret,
        "DSN",
        secret=True,
        group=SINKS,
    )


def postgres_dsn_file_opt() -> str:
    """The --postgres-dsn-file option, for a command to declare."""
    return opt(
        "",
        "file holding the PostgreSQL DSN, instead of --postgres-dsn (default: none)",
        metavar="PATH",
        group=SINKS,
    )


def postgres_table_opt() -> str:
    """The --postgres-table option, for a command to declare."""
    return opt(
        "",
        "table for the results (default: sensor_features for the sensor-features transform, "
        "stream_results for any other)",
        _table_name,
        "NAME",
        group=SINKS,
    )


def postgres_command_timeout_opt() -> float:
    """The --postgres-command-timeout option, for a command to declare."""
    return opt(
        30.0, "seconds one database statement may take", positive_float, "SECONDS", group=SINKS
    )


def postgres_dsn_value(settings: DsnOptions) -> str:
    """The DSN, read from --postgres-dsn-file when that is given; a malformed one is a
    :class:`ConfigError` saying what is wrong with it (never the DSN itself)."""
    if settings.postgres_dsn_file:
        dsn = read_secret_file("postgres_dsn_file", settings.postgres_dsn_file)
        problem = dsn_problem(dsn)
        if problem:
            raise ConfigError(
                f"--postgres-dsn-file: the DSN in {settings.postgres_dsn_file!r} is malformed: "
                f"{problem}"
            )
        return dsn
    return settings.postgres_dsn


def check_postgres(settings: DsnOptions, needed: bool) -> None:
    """The DSN options fit together and a --postgres-dsn given is well formed (no I/O:
    ``resolve`` reads the file); errors never show the DSN."""
    if settings.postgres_dsn and settings.postgres_dsn_file:
        raise ConfigError("give --postgres-dsn or --postgres-dsn-file, not both")
    if settings.postgres_dsn:
        problem = dsn_problem(settings.postgres_dsn)
        if problem:
            raise ConfigError(f"--postgres-dsn is malformed: {problem}")
    if needed and not (settings.postgres_dsn or settings.postgres_dsn_file):
        raise ConfigError("--sink postgres needs --postgres-dsn or --postgres-dsn-file")


@dataclass(frozen=True, slots=True)
class DbSettings:
    """Options of ``stream db``."""

    postgres_dsn: str = postgres_dsn_opt()
    postgres_dsn_file: str = postgres_dsn_file_opt()
    postgres_table: str = postgres_table_opt()
    transform: str = opt(
        "sensor-features",
        "the transform whose results the table holds (sensor-features: typed columns; any "
        "other: key and value jsonb)",
        metavar="NAME",
    )
    postgres_command_timeout: float = postgres_command_timeout_opt()
    connect_timeout: float = opt(
        15.0, "seconds to wait for the database before giving up", positive_float, "SECONDS"
    )

    def __post_init__(self) -> None:
        if not (self.postgres_dsn or self.postgres_dsn_file):
            raise ConfigError("stream db needs --postgres-dsn or --postgres-dsn-file")
        check_postgres(self, needed=True)

    def resolve(self) -> Self:
        """Read the DSN file now, so a bad one stops the command before it starts."""
        postgres_dsn_value(self)
        return self
