"""The seam between the service's settings and the sink: the sink's configuration from
``stream run``'s options, and ``stream db init``."""

from __future__ import annotations

from stream.config import DbSettings, RunSettings, postgres_dsn_value
from stream.sink.postgres import SinkConfig, connect
from stream.sink.schema import init_tables, offsets_table, result_table


def sink_config(settings: RunSettings) -> SinkConfig:
    """The PostgreSQL sink's configuration for ``stream run``: its table follows the
    transform; lost connections are retried for up to --delivery-timeout."""
    return SinkConfig(
        dsn=postgres_dsn_value(settings),
        table=result_table(settings.transform, settings.postgres_table),
        pool_min=settings.postgres_pool_min,
        pool_max=settings.postgres_pool_max,
        command_timeout=settings.postgres_command_timeout,
        connect_timeout=settings.connect_timeout,
        retry_deadline=settings.delivery_timeout,
    )


async def db_init(settings: DbSettings) -> list[str]:
    """Create the result table and the offsets table unless they exist (idempotent).
    Returns one line per table saying what was done."""
    table = result_table(settings.transform, settings.postgres_table)
    config = SinkConfig(
        dsn=postgres_dsn_value(settings),
        table=table,
        command_timeout=settings.postgres_command_timeout,
        connect_timeout=settings.connect_timeout,
    )
    conn = await connect(config)
    try:
        created = await init_tables(conn, table)
    finally:
        await conn.close()
    return [
        f"{name}: {'created' if name in created else 'exists'}"
        for name in (table.name, offsets_table(table))
    ]
