"""Test a transform the way the service runs it: ``run(transform, records)``.

The records go through :func:`transforms.batch.run_batch`, the code a worker process runs
(decode, size limit, the transform over the whole batch, encode), in this process::

    from transforms.testing import run

    def test_celsius() -> None:
        result = run("mypackage.celsius:to_celsius", [{"sensor_id": "a", "f": 212.0}])
        assert result.outputs == [{"sensor_id": "a", "c": 100.0}]
        assert result.dead_letters == []
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from transforms.base import LIMITS, BatchFn, Transform, resolve, set_limits
from transforms.batch import run_batch

__all__ = ["DEFAULT_MAX_RECORD_BYTES", "DeadLetter", "Result", "as_transform", "encode", "run"]

DEFAULT_MAX_RECORD_BYTES = 1 << 20
"""The service's default ``--max-record-bytes``."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the service would send to the dead-letter topic, and why."""

    index: int  # position in the records given to run()
    reason: str  # the stream.error.reason header, e.g. invalid_json, transform_error
    message: str
    value: bytes | None  # the record as it was given, encoded


@dataclass(frozen=True, slots=True)
class Result:
    """What ``run`` returns: outputs (decoded JSON, in input order, dead letters left out)
    and the dead letters; ``raw`` holds one encoded output or None per input record."""

    outputs: list[Any]
    dead_letters: list[DeadLetter]
    raw: list[bytes | None]


def encode(record: Any) -> bytes | None:
    """A record as the service receives it: bytes and None as they are, str as UTF-8,
    anything else as JSON."""
    if record is None or isinstance(record, bytes):
        return record
    if isinstance(record, str):
        return record.encode()
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)


def as_transform(transform: Transform | BatchFn | str) -> Transform:
    """A spec ("sensor-features", "package.module:function"), a Transform, or a batch
    function, as a Transform."""
    if isinstance(transform, Transform):
        return transform
    if isinstance(transform, str):
        return resolve(transform)
    name = getattr(transform, "__qualname__", "transform")
    return Transform(name=name, description="", fn=transform)


def run(
    transform: Transform | BatchFn | str,
    records: Iterable[Any],
    *,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    max_array_length: int | None = None,
    batch_size: int = 500,
) -> Result:
    """Run ``records`` through ``transform`` in batches of ``batch_size``, as a worker would.

    ``records`` may be bytes (the raw Kafka value), str, None (a record without a value) or
    any JSON-serialisable value. ``max_array_length`` sets the built-ins' limit for this
    call (default: as it is)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    resolved = as_transform(transform)
    values = [encode(record) for record in records]
    previous = LIMITS.max_array_length
    if max_array_length is not None:
        set_limits(max_array_length)
    try:
        raw, dead = _run(resolved, values, max_record_bytes, batch_size)
    finally:
        set_limits(previous)
    outputs = [orjson.loads(value) for value in raw if value is not None]
    return Result(outputs, dead, raw)


def _run(
    transform: Transform, values: Sequence[bytes | None], max_record_bytes: int, batch_size: int
) -> tuple[list[bytes | None], list[DeadLetter]]:
    raw: list[bytes | None] = []
    dead: list[DeadLetter] = []
    for start in range(0, len(values), batch_size):
        batch = values[start : start + batch_size]
        outcome = run_batch(transform, batch, max_record_bytes)
        failed = {index for index, _, _ in outcome.errors}
        if outcome.outputs is None:  # passthrough: an output is its input
            raw += [None if i in failed else v for i, v in enumerate(batch)]
        else:
            raw += outcome.outputs
        for index, reason, message in outcome.errors:
            dead.append(DeadLetter(start + index, reason, message, batch[index]))
    return raw, dead
