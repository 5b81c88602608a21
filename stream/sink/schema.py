"""The sink's tables: a typed table for a transform that declares its output (one column
per declared field), the generic ``(key, value jsonb)`` table for any other, and the
offsets table; creating them (idempotent) and checking they exist.

Every result table's primary key is (source_topic, source_partition, source_offset): a
replayed record is a conflict, ignored, never a second row.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from stream.sink.errors import SchemaError
from transforms import RecordField, RecordSchema, resolve
from transforms.schema import FieldType

DEFAULT_GENERIC_TABLE: Final = "stream_results"
OFFSETS_TABLE: Final = "stream_offsets"

_SOURCE: Final = (
    ("source_topic", "text NOT NULL"),
    ("source_partition", "integer NOT NULL"),
    ("source_offset", "bigint NOT NULL"),
)
_SQL_TYPES: Final[dict[FieldType, str]] = {
    "string": "text",
    "long": "bigint",
    "int": "integer",
    "double": "double precision",
    "boolean": "boolean",
    "double[]": "double precision[]",
    "long[]": "bigint[]",
    "int[]": "integer[]",
}
GENERIC_COLUMNS: Final = (*_SOURCE, ("key", "bytea"), ("value", "jsonb NOT NULL"))
OFFSETS_COLUMNS: Final = (
    ("group_id", "text NOT NULL"),
    ("topic", "text NOT NULL"),
    ("partition", "integer NOT NULL"),
    ("next_offset", "bigint NOT NULL"),  # -1: claimed, nothing written yet
    ("updated_at", "timestamptz NOT NULL DEFAULT now()"),
    ("generation", "bigint NOT NULL DEFAULT 0"),  # the owner's claim: older ones are fenced
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
    transform: str = ""  # whose results it holds (names it in `stream db init` hints)

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


def table_for(output: RecordSchema | None, name: str = "") -> Table:
    """The result table of a transform's declared output: one column per field (NOT NULL
    unless optional; a number column checked by :func:`_checks`), named after the record
    (``SensorFeatures``: ``sensor_features``); without a declaration, the generic table.
    ``name`` overrides the default name."""
    if output is None:
        return Table(name or DEFAULT_GENERIC_TABLE, GENERIC_COLUMNS)
    columns = tuple(
        (f.name, _SQL_TYPES[f.type] + ("" if f.optional else " NOT NULL")) for f in output.fields
    )
    checks = tuple(check for f in output.fields for check in _checks(f))
    return Table(name or snake_case(output.name), (*_SOURCE, *columns), checks, typed=True)


def _checks(field: RecordField) -> list[str]:
    """A number column's checks: finite (PostgreSQL sorts NaN above every number, so the
    check bounds both ends), and at least its declared minimum."""
    name, checks = field.name, []
    if field.type == "double":
        checks.append(f"CHECK ({name} > '-Infinity' AND {name} < 'Infinity')")
    if field.minimum is not None:
        checks.append(f"CHECK ({name} >= {field.minimum!r})")
    return checks


def result_table(transform: str, name: str = "") -> Table:
    """The result table of the transform ``transform`` (a name or an import path) names:
    :func:`table_for` its declared output."""
    return dataclasses.replace(table_for(resolve(transform).output, name), transform=transform)


def init_command(table: Table, name: str = "") -> str:
    """The `stream db init` that makes ``table`` (under ``name`` if given) for its
    transform: the options that decide the table, never the DSN (it is a secret; the
    command reads it from the same place as `stream run`)."""
    words = ["stream", "db", "init", "--postgres-table", name or table.name]
    if table.transform:
        words += ["--transform", table.transform]
    return shlex.join(words)


def _own_name(table: Table) -> str:
    """A table name for ``table``'s transform beside one that holds another's results:
    ``sensor_features`` -> ``sensor_features_identity``."""
    slug = re.sub(r"[^a-z0-9]+", "_", table.transform.lower()).strip("_") or "results"
    bare = f"{table.bare_name}_{slug}"[:63]
    return f"{table.schema_name}.{bare}" if table.schema_name else bare


def snake_case(name: str) -> str:
    """``SensorFeatures`` -> ``sensor_features``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


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
        offsets = offsets_table(table)
        await conn.execute(offsets_ddl(offsets))
        # Offsets tables made before owners were fenced lack the generation column.
        await conn.execute(
            f"ALTER TABLE {quote(offsets)} ADD COLUMN IF NOT EXISTS generation bigint "
            "NOT NULL DEFAULT 0"
        )
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
            f"table(s) {names} missing in the database: create them with "
            f"`{init_command(table)}` (it reads the DSN as stream run does)"
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
        if lacking and name == offsets:
            raise SchemaError(
                f"table {name} has no column(s) {', '.join(lacking)}: run "
                f"`{init_command(table)}` (it adds what is missing)"
            )
        if lacking:
            own = _own_name(table)
            made_for = f" --transform {table.transform}" if table.transform else ""
            raise SchemaError(
                f"table {name} has no column(s) {', '.join(lacking)}: it holds another "
                f"transform's results; give{made_for} a table of its own: "
                f"`{init_command(table, own)}`, then run with --postgres-table {own}"
            )
