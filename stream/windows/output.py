"""A closed window as an output record value: a JSON object with ``window_start`` and
``window_end`` (epoch ms) and one field per aggregate asked for, in the order asked
(an aggregate of one's own under its import path).
Plain code, no I/O."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from stream.windows.spec import AGGREGATES
from stream.windows.store import WindowResult


def window_value(result: WindowResult, aggregates: Sequence[str]) -> bytes:
    """The output value of ``result``: ``{"window_start": ..., "window_end": ...,
    "<aggregate>": ..., ...}`` as JSON bytes. ``count`` is an integer, the rest floats
    (``std`` the population standard deviation). A non-finite value is written as
    ``null`` (JSON has no NaN)."""
    unknown = [name for name in aggregates if name not in AGGREGATES and name not in result.extra]
    if unknown:
        raise ValueError(f"aggregates: unknown {', '.join(unknown)}")
    fields: dict[str, int | float] = {
        "window_start": result.start,
        "window_end": result.end,
    }
    for name in aggregates:
        fields[name] = result.extra[name] if name in result.extra else getattr(result, name)
    # A copy of exact size: the bytes orjson returns keep its ~4 kB working buffer
    # behind them, and a million windows closing together would hold 4 GB.
    return bytes(memoryview(orjson.dumps(fields)))
