"""The options of every command: one frozen dataclass per command, each option a field
declared with ``opt`` (its default, help text, parser and --help group). The machinery
that turns flags, environment and a config file into these objects is
:mod:`stream.options`.

Building a settings object does no I/O: only checks that options fit together. Files
named by options (password files, certificates) are checked and read by ``resolve()``,
which the CLI calls after ``load`` and the engine calls at start.

The modules, by job: ``groups`` (the --help sections), ``kafka`` (the connection every
Kafka command shares), ``registry`` and ``postgres`` (options two commands declare, and
their checks), ``dsn`` (what is wrong with a PostgreSQL DSN), ``service`` and ``run``
(``stream run``'s layers and ``RunSettings``), ``contradictions`` (``stream run``'s
options that cannot work together), ``commands`` (produce, read, topics, lag, bench, try).
This module gathers them, and declares every command's settings to the loader
(``known_settings``).
"""

from __future__ import annotations

from stream.config.commands import (
    BenchSettings,
    LagSettings,
    ProduceSettings,
    ReadSettings,
    TopicsSettings,
    TrySettings,
)
from stream.config.groups import GROUPS
from stream.config.kafka import KafkaSettings
from stream.config.postgres import DbSettings, postgres_dsn_value
from stream.config.registry import registry_password
from stream.config.run import RunSettings
from stream.options import (
    ConfigError,
    env_name,
    flag_name,
    known_settings,
    load,
    option_env,
    option_fields,
    read_config_file,
    read_secret_file,
)

__all__ = [
    "GROUPS",
    "BenchSettings",
    "ConfigError",
    "DbSettings",
    "KafkaSettings",
    "LagSettings",
    "ProduceSettings",
    "ReadSettings",
    "RunSettings",
    "TopicsSettings",
    "TrySettings",
    "env_name",
    "flag_name",
    "load",
    "option_env",
    "option_fields",
    "postgres_dsn_value",
    "read_config_file",
    "read_secret_file",
    "registry_password",
]

known_settings(
    RunSettings,
    ProduceSettings,
    ReadSettings,
    TopicsSettings,
    LagSettings,
    BenchSettings,
    TrySettings,
)
