"""Transforms that misbehave on purpose, for the chaos tests (used by import path)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any


def misbehave(records: Sequence[Any]) -> list[Any]:
    """Keep sensor_id and seq; die on {"poison": true}, hang on {"hang": true}."""
    out: list[Any] = []
    for record in records:
        if record.get("poison"):
            os._exit(3)  # like a segfault or the OOM killer: no exception, no cleanup
        if record.get("hang"):
            time.sleep(3600)
        out.append({"sensor_id": record["sensor_id"], "seq": record["seq"]})
    return out


def slow(records: Sequence[Any]) -> list[Any]:
    """Keep sensor_id and seq, at about 1 ms per record (a slow consumer)."""
    time.sleep(0.001 * len(records))
    return [{"sensor_id": r["sensor_id"], "seq": r["seq"]} for r in records]
