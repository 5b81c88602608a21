"""A user's own lookup coroutine: ``--enrich package.module:function``.

The function is ``async def lookup(record: Any, key: bytes | None) -> Any``: it gets
the decoded JSON record (usually a dict) and the Kafka key, and returns a
JSON-serialisable value to store under ``--enrich-field``, or None when there is
nothing to add (a 404, as ``--enrich-missing`` decides). It runs on the event loop
under the stage's rules: at most ``--enrich-concurrency`` calls at once, each attempt
cancelled after ``--enrich-timeout``, retried (with backoff) when it times out or
raises ``RetryLater``; any other exception fails the record (reason
``enrich_failed``). It must not block: await I/O (asyncpg, aiohttp), never sleep or
compute for long. Example, with an asyncpg pool made on first use:

    async def lookup(record, key):
        row = await (await pool()).fetchrow("SELECT * FROM sensors WHERE id = $1",
                                            record["sensor_id"])
        return dict(row) if row else None
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from stream.config import ConfigError
from stream.enrich.outcome import Attempt, Failed, Found, Missing, Retry
from transforms.messages import bounded

LookupFunction = Callable[[Any, bytes | None], Awaitable[Any]]

_MAX_MESSAGE = 300  # characters of a failed lookup's message


class RetryLater(Exception):
    """Raise from a lookup coroutine for a failure another attempt may not have."""


class LookupLoadError(ConfigError):
    """``--enrich`` names something that is not an importable coroutine function (a bad
    option: the CLI prints it as one line and exits 2)."""


def load_function(spec: str) -> LookupFunction:
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise LookupLoadError(f"--enrich: expected package.module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LookupLoadError(f"--enrich: cannot import {module_name!r}: {exc}") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise LookupLoadError(f"--enrich: {module_name!r} has no {name!r}")
    if not inspect.iscoroutinefunction(fn):
        raise LookupLoadError(f"--enrich: {spec} is not an async def function")
    lookup: LookupFunction = fn
    return lookup


class UserLookup:
    def __init__(self, fn: LookupFunction) -> None:
        self.fn = fn

    async def call(self, record: Any, key: bytes | None) -> Attempt:
        try:
            value = await self.fn(record, key)
        except RetryLater as exc:
            return Retry(bounded(f"RetryLater: {exc}", _MAX_MESSAGE), "error")
        except TimeoutError as exc:  # the function's own timeout (ours cancels it instead)
            return Retry(bounded(f"TimeoutError: {exc}", _MAX_MESSAGE), "timeout")
        except Exception as exc:  # noqa: BLE001 - a failing lookup fails its record only
            return Failed(bounded(f"{type(exc).__name__}: {exc}", _MAX_MESSAGE))
        if value is None:
            return Missing("the lookup returned None")
        try:
            return Found(orjson.dumps(value))
        except TypeError as exc:
            return Failed(
                bounded(f"the lookup's answer is not JSON-serialisable: {exc}", _MAX_MESSAGE)
            )
