"""Sensor readings from degrees Fahrenheit to Celsius: the README's example transform."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from transforms import BadRecord


def to_celsius(records: Sequence[Any]) -> list[Any]:
    """Each event's readings in degrees Celsius, with their mean and maximum."""
    good = [
        i
        for i, r in enumerate(records)
        if isinstance(r, dict)
        and isinstance(r.get("values"), list)
        and r["values"]
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in r["values"])
    ]
    out: list[Any] = [
        BadRecord("schema", "expected an object with a non-empty list of numbers in 'values'")
    ] * len(records)
    if not good:
        return out
    # One numpy call for the whole batch: every record's readings in one flat array.
    fahrenheit = np.concatenate([np.asarray(records[i]["values"], float) for i in good])
    celsius = np.round((fahrenheit - 32.0) * 5.0 / 9.0, 3)
    start = 0
    for i in good:
        end = start + len(records[i]["values"])
        readings = celsius[start:end]
        out[i] = {
            "sensor_id": records[i].get("sensor_id"),
            "celsius": readings,
            "mean": round(float(readings.mean()), 3),
            "max": float(readings.max()),
        }
        start = end
    return out
