"""Lookup coroutines for ``--enrich module:function`` tests (loaded by import path)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from stream.enrich.user import RetryLater

calls: Counter[str] = Counter()
running = [0, 0]  # calls under way now, most at once


async def owner(record: Any, key: bytes | None) -> Any:
    """``{"owner": ...}`` for sensors a-*, None for n-*, an error for x-*, a retry for the
    first call of r-*, a late answer for slow-*."""
    sensor_id = str(record["sensor_id"])
    calls[sensor_id] += 1
    running[0] += 1
    running[1] = max(running)
    try:
        return await _owner(sensor_id, key)
    finally:
        running[0] -= 1


async def _owner(sensor_id: str, key: bytes | None) -> Any:
    await asyncio.sleep(0.01)
    if sensor_id.startswith("n-"):
        return None
    if sensor_id.startswith("x-"):
        raise KeyError(sensor_id)
    if sensor_id.startswith("r-") and calls[sensor_id] == 1:
        raise RetryLater("the database is failing over")
    if sensor_id.startswith("slow-"):
        await asyncio.sleep(10)
    return {"owner": sensor_id.upper(), "key": key.decode() if key else None}


def not_async(record: Any, key: bytes | None) -> Any:
    return None


async def broken(record: Any, key: bytes | None) -> Any:
    """A lookup with a bug: it always raises."""
    raise ZeroDivisionError("a bug in the lookup")
