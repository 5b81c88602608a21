"""Sinks beside the output topic: today PostgreSQL (``stream.sink.postgres``).

``schema`` declares the tables, ``rows`` turns a transform's output into a row (pure),
``retry`` decides when to try again (pure), ``postgres`` writes over an asyncpg pool
(``stream.bench.sink`` measures that write path).
"""
