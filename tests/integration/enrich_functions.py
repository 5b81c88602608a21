"""A transform and a lookup coroutine for the enrichment pipeline tests (loaded by the
service by import path: ``--transform tests.integration.enrich_functions:keep_meta``,
``--enrich tests.integration.enrich_functions:owner``)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

NO_OWNER = "sensor-0007"  # the sensor ``owner`` knows nothing about


def keep_meta(records: Sequence[Any]) -> list[Any]:
    """Keep ``sensor_id`` and ``seq``, and the enrichment field ``meta`` when it is there."""
    out: list[Any] = []
    for record in records:
        kept = {"sensor_id": record["sensor_id"], "seq": record["seq"]}
        if "meta" in record:
            kept["meta"] = record["meta"]
        out.append(kept)
    return out


async def owner(record: Any, key: bytes | None) -> Any:
    """``{"owner": SENSOR_ID, "key": key}`` after 0-30 ms (shuffled latencies); None for
    ``NO_OWNER``."""
    await asyncio.sleep(random.uniform(0, 0.03))
    sensor_id = str(record["sensor_id"])
    if sensor_id == NO_OWNER:
        return None
    return {"owner": sensor_id.upper(), "key": key.decode() if key is not None else None}
