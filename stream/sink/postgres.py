"""The PostgreSQL sink: batches of rows into one table over an asyncpg pool.

One write is one transaction: COPY the batch into a per-connection temporary table, then
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into the result table (a replayed record
is a conflict on the source position, never a second row) and, for exactly-once, the
partition's next offset in the same transaction. Writes of one partition run one at a
time in call order; writes of different partitions run at once on the pool's
connections. A row the database refuses is isolated by bisection inside the
transaction (savepoints) and returned to the caller; the others are written. Lost
connections are retried with backoff up to a deadline: the transaction either committed
or not, and a retry of a committed one inserts nothing (conflicts) and stores the same
offset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import asyncpg

from stream.errors import UsageError
from stream.sink.errors import SinkAuthError, SinkError, SinkFenced, SinkUnavailable
from stream.sink.position import Claim, Position
from stream.sink.retry import Backoff
from stream.sink.rows import Row
from stream.sink.schema import Table, check_tables, offsets_table, quote

log = logging.getLogger(__name__)

T = TypeVar("T")

# The database refused these rows: a value out of range, a constraint, a type, bad text.
_REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.DataError,  # SQLSTATE class 22
    asyncpg.IntegrityConstraintViolationError,  # class 23
    asyncpg.exceptions._base.DataError,  # the client could not encode a value
    ValueError,
    TypeError,
    OverflowError,
)
# The connection or the server went away, or the server asks to try later.
_RETRIABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.InterfaceError,  # "connection is closed", "connection was closed in the middle"
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections
    asyncpg.exceptions.TransactionRollbackError,  # 40: serialization failure, deadlock
    # The server went away mid-statement (e.g. a fast shutdown during COPY): the
    # transaction's ROLLBACK then meets a connection still consuming the error and asyncpg
    # raises this instead of the connection error. A retry takes a fresh connection.
    asyncpg.exceptions.InternalClientError,
)
# At connect: the server refused a setting the DSN's query gave it (unknown, bad value).
_DSN_SETTING: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.UndefinedObjectError,  # 42704: unrecognized configuration parameter
    asyncpg.exceptions.InvalidParameterValueError,  # 22023: invalid value for parameter
    asyncpg.exceptions.CantChangeRuntimeParamError,  # 55P02: cannot be changed now
)
_AUTH: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,  # 28: wrong password, no such role
    asyncpg.InvalidCatalogNameError,  # 3D000: no such database
)


@dataclass(frozen=True, slots=True)
class Refused:
    """A row the database refused: its index in the batch and the database's message."""

    index: int
    message: str


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """What the sink needs; built from the service's settings by the caller."""

    dsn: str = field(repr=False)
    table: Table
    pool_min: int = 1
    pool_max: int = 4
    command_timeout: float = 30.0
    connect_timeout: float = 10.0
    retry_deadline: float = 120.0


class SinkObserver(Protocol):
    """Where the sink reports what it did (``stream.metrics.SinkMetrics`` implements it)."""

    def written(self, rows: int, seconds: float) -> None: ...

    def error(self, reason: str) -> None: ...


class _NoObserver:
    def written(self, rows: int, seconds: float) -> None:
        pass

    def error(self, reason: str) -> None:
        pass


def where(dsn: str) -> str:
    """host:port/database of a URL DSN, for messages (never the user's password)."""
    unknown = "the --postgres-dsn server"
    try:
        parts = urlsplit(dsn)
        if parts.scheme not in ("postgres", "postgresql"):
            return unknown  # key=value form: its text may hold the password
        host = parts.hostname or "localhost"
        return f"{host}:{parts.port or 5432}{parts.path or ''}"
    except ValueError:
        return unknown


async def connect(config: SinkConfig) -> Any:
    """One connection (an ``asyncpg.Connection``), or one line saying why not:
    :class:`SinkUnavailable`, :class:`SinkAuthError`, or a :class:`UsageError` (exit 2)
    when the DSN is malformed (the driver refused it, or the server refused a setting in
    its query): a configuration error, never "unreachable"."""
    here = where(config.dsn)
    try:
        return await asyncpg.connect(
            config.dsn, timeout=config.connect_timeout, command_timeout=config.command_timeout
        )
    except _AUTH as exc:
        raise SinkAuthError(f"PostgreSQL at {here} refused the connection: {exc}") from None
    # Before _RETRIABLE: the driver's configuration error is also an InterfaceError.
    except (asyncpg.exceptions.ClientConfigurationError, ValueError):
        raise UsageError(
            "--postgres-dsn is not a valid PostgreSQL DSN (the driver refused it)"
        ) from None
    except _DSN_SETTING as exc:
        raise UsageError(
            f"--postgres-dsn: PostgreSQL at {here} refused a setting of its query: {exc}"
        ) from None
    except _RETRIABLE as exc:
        reason = str(exc) or type(exc).__name__
        raise SinkUnavailable(f"PostgreSQL at {here} is unreachable: {reason}") from None


class PostgresSink:
    """Writes result rows to one PostgreSQL table; ``start()`` before, ``close()`` after."""

    def __init__(
        self,
        config: SinkConfig,
        observer: SinkObserver | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self._observer = observer or _NoObserver()
        self._clock = clock
        self._sleep = sleep
        self._backoff = Backoff(deadline=config.retry_deadline)
        self._pool: asyncpg.Pool | None = None
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        table = config.table
        self._temp = f"stream_in_{table.bare_name}"
        columns = ", ".join(table.column_names)
        self._create_temp = (
            f"CREATE TEMP TABLE IF NOT EXISTS {self._temp} "
            f"(LIKE {quote(table.name)} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        self._insert = (
            f"INSERT INTO {quote(table.name)} ({columns}) "  # noqa: S608 - checked names
            f"SELECT {columns} FROM {self._temp} ON CONFLICT DO NOTHING"
        )
        offsets = quote(offsets_table(table))
        self._claim = (
            f"INSERT INTO {offsets} AS o (group_id, topic, partition, next_offset, generation) "  # noqa: S608
            "VALUES ($1, $2, $3, -1, 1) ON CONFLICT (group_id, topic, partition) DO UPDATE "
            "SET generation = o.generation + 1, updated_at = now() "
            "RETURNING next_offset, generation"
        )
        self._read_offset = (
            f"SELECT next_offset FROM {offsets} "  # noqa: S608 - a checked name
            "WHERE group_id = $1 AND topic = $2 AND partition = $3"
        )
        self._store_offset = (
            f"UPDATE {offsets} SET next_offset = GREATEST(next_offset, $4), "  # noqa: S608
            "updated_at = now() "
            "WHERE group_id = $1 AND topic = $2 AND partition = $3 AND generation = $5"
        )

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, check the tables, open the pool. Raises :class:`SinkUnavailable`,
        :class:`SinkAuthError` or :class:`~stream.sink.errors.SchemaError` with one line."""
        conn = await connect(self.config)
        try:
            await check_tables(conn, self.config.table)
        finally:
            await conn.close()
        try:
            self._pool = await asyncpg.create_pool(
                self.config.dsn,
                min_size=self.config.pool_min,
                max_size=self.config.pool_max,
                command_timeout=self.config.command_timeout,
                timeout=self.config.connect_timeout,
                init=self._init_connection,
            )
        except (*_AUTH, *_RETRIABLE) as exc:
            raise SinkUnavailable(f"PostgreSQL at {where(self.config.dsn)}: {exc}") from None

    async def _init_connection(self, conn: Any) -> None:
        await conn.execute(self._create_temp)

    async def close(self) -> None:
        """Close the pool, waiting for writes in progress at most the command timeout."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self.config.command_timeout)
        except TimeoutError:
            pool.terminate()

    def pool_connections(self) -> tuple[int, int]:
        """(in use, idle) connections of the pool."""
        if self._pool is None:
            return (0, 0)
        idle = self._pool.get_idle_size()
        return (self._pool.get_size() - idle, idle)

    # ---- writing --------------------------------------------------------------------------

    async def write(
        self, topic: str, partition: int, rows: Sequence[Row], *, position: Position | None = None
    ) -> list[Refused]:
        """Write a batch of one source partition and, with ``position``, in the same
        transaction move that partition's stored next offset there (never backwards).
        Returns the rows the database refused (the others are written). Raises
        :class:`SinkFenced` when a newer owner claimed the partition (nothing is written),
        :class:`SinkUnavailable` when the database stays away past the retry deadline."""
        lock = self._locks.setdefault((topic, partition), asyncio.Lock())
        offset = None
        if position is not None:
            offset = (position.group, topic, partition, position.next_offset, position.generation)
        async with lock:
            started = self._clock()
            refused = await self._retrying(lambda: self._write_once(rows, offset))
            self._observer.written(len(rows) - len(refused), self._clock() - started)
            for _ in refused:
                self._observer.error("sink_refused")
            return refused

    def forget(self, topic: str, partition: int) -> None:
        """Drop a revoked partition's ordering lock (call once its writes are done)."""
        lock = self._locks.get((topic, partition))
        if lock is not None and not lock.locked():
            del self._locks[(topic, partition)]

    async def stored_offset(self, group: str, topic: str, partition: int) -> int | None:
        """The next offset stored for a partition (None: none), without claiming it."""

        async def read() -> int | None:
            async with self._acquire() as conn:
                value: int | None = await conn.fetchval(self._read_offset, group, topic, partition)
                return None if value is None or value < 0 else value

        return await self._retrying(read)

    async def claim(self, group: str, topic: str, partition: int) -> Claim:
        """Take ownership of a partition's stored offset: a new generation, which fences
        every earlier owner's writes; the next offset stored so far (None: none)."""

        async def claim() -> Claim:
            async with self._acquire() as conn:
                row = await conn.fetchrow(self._claim, group, topic, partition)
                stored = int(row[0])
                return Claim(None if stored < 0 else stored, int(row[1]))

        return await self._retrying(claim)

    def _acquire(self) -> Any:
        if self._pool is None:
            raise SinkError("the PostgreSQL sink is not started")
        return self._pool.acquire()

    async def _write_once(
        self, rows: Sequence[Row], offset: tuple[Any, ...] | None
    ) -> list[Refused]:
        async with self._acquire() as conn:
            try:
                async with conn.transaction():
                    await self._store(conn, offset)  # first: it takes the row's lock
                    await self._copy_insert(conn, rows)
            except _REFUSED:
                pass  # some row is bad: again, isolating it
            else:
                return []
            async with conn.transaction():
                await self._store(conn, offset)
                return await self._bisect(conn, rows, 0)

    async def _store(self, conn: Any, offset: tuple[Any, ...] | None) -> None:
        if offset is None:
            return
        if await conn.execute(self._store_offset, *offset) != "UPDATE 1":
            group, topic, partition, _, generation = offset
            raise SinkFenced(
                f"{topic}[{partition}]: another owner claimed the partition's offset in the "
                f"database (group {group}, our generation {generation})"
            )

    async def _copy_insert(self, conn: Any, rows: Sequence[Row]) -> None:
        if not rows:
            return
        await conn.copy_records_to_table(
            self._temp, records=rows, columns=self.config.table.column_names
        )
        await conn.execute(self._insert)

    async def _bisect(self, conn: Any, rows: Sequence[Row], base: int) -> list[Refused]:
        """Write ``rows`` in savepoints, halving on refusal until the bad rows are alone."""
        try:
            async with conn.transaction():  # a savepoint
                await self._copy_insert(conn, rows)
                await conn.execute(f"TRUNCATE {self._temp}")
        except _REFUSED as exc:
            if len(rows) == 1:
                return [Refused(base, _message(exc))]
            half = len(rows) // 2
            first = await self._bisect(conn, rows[:half], base)
            return first + await self._bisect(conn, rows[half:], base + half)
        return []

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        first_failure: float | None = None
        tries = 0
        while True:
            try:
                return await attempt()
            except _REFUSED as exc:  # outside a write: a bug or a schema change, not a row
                self._observer.error("fatal")
                raise SinkError(f"PostgreSQL refused the statement: {_message(exc)}") from None
            except _AUTH as exc:
                self._observer.error("auth")
                raise SinkAuthError(f"PostgreSQL refused the connection: {exc}") from None
            except _RETRIABLE as exc:
                now = self._clock()
                first_failure = now if first_failure is None else first_failure
                delay = self._backoff.delay(tries, first_failure, now)
                self._observer.error("connection")
                reason = str(exc) or type(exc).__name__
                if delay is None:
                    raise SinkUnavailable(
                        f"PostgreSQL at {where(self.config.dsn)} did not answer for "
                        f"{self.config.retry_deadline:g}s: {reason}"
                    ) from None
                if tries == 0:
                    log.warning("PostgreSQL write failed (%s); retrying", reason)
                tries += 1
                await self._sleep(delay)
            except asyncpg.PostgresError as exc:
                self._observer.error("fatal")
                raise SinkError(f"PostgreSQL: {_message(exc)}") from None


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    detail = getattr(exc, "detail", None)
    return f"{text} ({detail})" if detail else text
