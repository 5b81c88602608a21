"""The sink's tables: the typed ``sensor-features`` table, the generic ``(key, value
jsonb)`` table and the offsets table; creating them (idempotent) and checking they exist.

Every result table's primary key is (source_topic, source_partition, source_offset): a
replayed record is a conflict, ignored, never a second row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from stream.sink.errors import SchemaError
from stream.sink.rows import TYPED_TRANSFORM

DEFAULT_TYPED_TABLE: Final = "sensor_features"
DEFAULT_GENERIC_TABLE: Final = "stream_results"
OFFSETS_TABLE: Final = "stream_offsets"

_SOURCE: Final = (
    ("source_topic", "text NOT NULL"),
    ("source_partition", "integer NOT NULL"),
    ("source_offset", "bigint NOT NULL"),
)
SENSOR_COLUMNS: Final = (
    *_SOURCE,
    ("sensor_id", "text NOT NULL"),
    ("ts", "double precision NOT NULL"),
    ("seq", "bigint"),
    ("n", "integer NOT NULL"),
    ("mean", "double precision NOT NULL"),
    ("std", "double precision NOT NULL"),
    ("min", "double precision NOT NULL"),
    ("max", "double precision NOT NULL"),
    ("peak_bins", "integer[] NOT NULL"),
    ("zscore", "double precision NOT NULL"),
    ("anomaly", "boolean NOT NULL"),
)
# Statistics are finite, and a standard deviation is not negative (PostgreSQL sorts NaN
# above every number, so `std >= 0` alone would let NaN in).
_SENSOR_CHECKS: Final = (
    "CHECK (std >= 0 AND std < 'Infinity')",
    "CHECK (mean > '-Infinity' AND mean < 'Infinity')",
    "CHECK (zscore > '-Infinity' AND zscore < 'Infinity')",
    "CHECK (n > 0)",
)
GENERIC_COLUMNS: Final = (*_SOURCE, ("key", "bytea"), ("value", "jsonb NOT NULL"))
OFFSETS_COLUMNS: Final = (
    ("group_id", "text NOT NULL"),
    ("topic", "text NOT NULL"),
    ("partition", "integer NOT NULL"),
    ("next_offset", "bigint NOT NULL"),
    ("updated_at", "timestamptz NOT NULL DEFAULT now()"),
)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


class Connection(Protocol):
    """The part of an asyncpg connection this module uses."""

    async def execute(self, query: str, *args: Any) -> str: ...

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


def check_name(name: str) -> str:
    """A table name (optionally schema.table) of letters, digits and underscores."""
    if not _NAME.match(name):
        raise ValueError(
            "a table name is letters, digits and _ (optionally schema.table), not starting "
            "with a digit"
        )
    return name


def quote(name: str) -> str:
    """``schema.table`` -> ``"schema"."table"`` (the name is checked first)."""
    return ".".join(f'"{part}"' for part in check_name(name).split("."))


@dataclass(frozen=True, slots=True)
class Table:
    """One result table: its name, columns and checks."""

    name: str
    columns: tuple[tuple[str, str], ...]
    checks: tuple[str, ...] = ()
    typed: bool = False

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    @property
    def schema_name(self) -> str | None:
        return self.name.split(".")[0] if "." in self.name else None

    @property
    def bare_name(self) -> str:
        return self.name.split(".")[-1]

    def ddl(self) -> str:
        lines = [f"{c} {t}" for c, t in self.columns]
        lines += list(self.checks)
        lines.append("PRIMARY KEY (source_topic, source_partition, source_offset)")
        body = ",\n  ".join(lines)
        return f"CREATE TABLE IF NOT EXISTS {quote(self.name)} (\n  {body}\n)"


def result_table(transform: str, name: str = "") -> Table:
    """The result table of a transform: typed for ``sensor-features``, generic otherwise;
    ``name`` overrides the default name."""
    if transform == TYPED_TRANSFORM:
        return Table(name or DEFAULT_TYPED_TABLE, SENSOR_COLUMNS, _SENSOR_CHECKS, typed=True)
    return Table(name or DEFAULT_GENERIC_TABLE, GENERIC_COLUMNS)


def offsets_table(table: Table) -> str:
    """The offsets table lives in the result table's schema (``public`` by default)."""
    return f"{table.schema_name}.{OFFSETS_TABLE}" if table.schema_name else OFFSETS_TABLE


def offsets_ddl(name: str) -> str:
    cols = ",\n  ".join(f"{c} {t}" for c, t in OFFSETS_COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS {quote(name)} (\n  {cols},\n"
        "  PRIMARY KEY (group_id, topic, partition)\n)"
    )


# Serialises concurrent `stream db init`s: CREATE TABLE IF NOT EXISTS races otherwise.
_INIT_LOCK: Final = 0x5374_7265_616D  # "Stream"


async def init_tables(conn: Connection, table: Table) -> list[str]:
    """Create the result table and the offsets table unless they exist; returns the names
    that were missing (and are now created). Idempotent."""
    missing = await _missing(conn, [table.name, offsets_table(table)])
    await conn.execute("BEGIN")
    try:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _INIT_LOCK)
        if table.schema_name:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(table.schema_name)}")
        await conn.execute(table.ddl())
        await conn.execute(offsets_ddl(offsets_table(table)))
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")
    await check_tables(conn, table)
    return missing


async def _missing(conn: Connection, names: Sequence[str]) -> list[str]:
    """The names (unquoted) of the tables that do not exist."""
    quoted = [quote(n) for n in names]
    rows = await conn.fetch(
        "SELECT n, to_regclass(n) IS NULL FROM unnest($1::text[]) WITH ORDINALITY AS u(n, i) "
        "ORDER BY i",
        quoted,
    )
    return [name for name, row in zip(names, rows, strict=True) if row[1]]


async def check_tables(conn: Connection, table: Table) -> None:
    """Raise :class:`SchemaError` (one line) unless both tables exist with the sink's
    columns."""
    offsets = offsets_table(table)
    missing = await _missing(conn, [table.name, offsets])
    if missing:
        names = " and ".join(missing)
        raise SchemaError(
            f"table(s) {names} missing in the database: run `stream db init` "
            "with the same --postgres-dsn and --postgres-table"
        )
    for name, want in (
        (table.name, table.column_names),
        (offsets, [c for c, _ in OFFSETS_COLUMNS]),
    ):
        rows = await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass "
            "AND attnum > 0 AND NOT attisdropped",
            quote(name),
        )
        have = {row[0] for row in rows}
        lacking = [c for c in want if c not in have]
        if lacking:
            raise SchemaError(
                f"table {name} has no column(s) {', '.join(lacking)}: it was not made by "
                "`stream db init` for this transform (choose another --postgres-table)"
            )
