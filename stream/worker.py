"""What runs inside a worker process: decode, transform, encode one batch.

Plain module-level functions (they are pickled by reference). A batch crosses the
process boundary once each way: raw record values in, encoded outputs and
per-record errors out. Errors for single records are returned, never raised;
workers record no metrics, they return their timings with their results.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson

from transforms import BadRecord, Transform, resolve, set_limits

log = logging.getLogger(__name__)

# Pinned before numpy loads in a worker: one BLAS thread per worker process, or
# N workers each start N threads and fight over the cores.
BLAS_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

_MAX_MESSAGE = 500


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Per record: the encoded output, or None where ``errors`` names the record.

    ``outputs`` is None for a passthrough transform: each output is its input, except
    where ``errors`` names the record (so the bytes need not cross back).
    """

    outputs: list[bytes | None] | None
    errors: list[tuple[int, str, str]]  # (index in batch, reason, message)
    seconds: float  # decode + transform + encode, wall time inside the worker
    pid: int

    def materialize(self, values: list[bytes | None]) -> list[bytes | None]:
        """The outputs, one per record, with None where the record failed."""
        if self.outputs is not None:
            return self.outputs
        failed = {index for index, _, _ in self.errors}
        return [None if i in failed else v for i, v in enumerate(values)]


@dataclass(frozen=True, slots=True)
class Enriched:
    """A batch with the enrichment stage's answers: ``enrichment[i]`` (JSON bytes, or None
    for nothing) goes into record ``i`` under ``field`` after it is decoded. A batch
    without enrichment crosses as a plain list, as before."""

    values: list[bytes | None]
    enrichment: list[bytes | None]
    field: str


_transforms: dict[str, Transform] = {}


def init_worker() -> None:
    """Ctrl-C and a SIGTERM sent to the whole process group are the parent's to handle:
    it drains, then stops the workers. A worker also exits when its parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def serve(conn: Connection, spec: str, max_record_bytes: int, max_array_length: int) -> None:
    """A worker process's main loop: batches in, results out, over one pipe.

    Says ``ready`` once the transform is loaded (or why it could not be); an empty
    message asks it to exit.
    """
    init_worker()
    try:
        set_limits(max_array_length)
        _transform(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops
        conn.send_bytes(f"{type(exc).__name__}: {exc}".encode())
        return
    conn.send_bytes(b"ready")
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent is gone
        if not data:
            return
        batch = pickle.loads(data)  # noqa: S301 - from our own parent process
        try:
            if isinstance(batch, Enriched):
                result = process_batch(
                    spec, batch.values, max_record_bytes, batch.enrichment, batch.field
                )
            else:
                result = process_batch(spec, batch, max_record_bytes)
        except Exception:
            log.error("a batch failed outside the transform", exc_info=True)
            raise
        conn.send_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


def _transform(spec: str) -> Transform:
    transform = _transforms.get(spec)
    if transform is None:
        transform = _transforms[spec] = resolve(spec)
    return transform


def warm_up(spec: str, until: float = 0.0) -> int:
    """Load the transform (and numpy) before the first batch, stay busy until ``until``
    (unix time); returns the worker's pid."""
    _transform(spec)
    delay = until - time.time()
    if delay > 0:
        time.sleep(delay)
    return os.getpid()


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _decode(value: bytes | None, max_bytes: int) -> Any:
    if not value:
        raise BadRecord("empty", "the record has no value")
    if len(value) > max_bytes:
        raise BadRecord("too_large", f"{len(value)} bytes is more than the limit of {max_bytes}")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        reason = "invalid_utf8" if "UTF-8" in str(exc) else "invalid_json"
        raise BadRecord(reason, _short(str(exc))) from None


def _apply(transform: Transform, items: list[Any]) -> list[Any]:
    """Run the batch function; if it raises, isolate the culprit record by record."""
    try:
        results = transform.fn(items)
        if len(results) == len(items):
            return results
        problem = f"returned {len(results)} results for {len(items)} records"
    except Exception as exc:  # noqa: BLE001 - a transform bug must not lose the batch
        problem = f"{type(exc).__name__}: {exc}"
    if len(items) == 1:
        return [BadRecord("transform_error", _short(problem))]
    return [_apply(transform, [item])[0] for item in items]


def _merge(item: Any, extra: bytes, field: str) -> Any:
    """The decoded record with the enrichment's answer under ``field`` (replacing it)."""
    if not isinstance(item, dict):
        raise BadRecord(
            "enrich_failed", f"the record is not a JSON object, so it cannot take {field!r}"
        )
    try:
        item[field] = orjson.loads(extra)
    except orjson.JSONDecodeError as exc:
        raise BadRecord("enrich_failed", _short(f"the enrichment is not JSON: {exc}")) from None
    return item


def process_batch(
    spec: str,
    values: list[bytes | None],
    max_record_bytes: int,
    enrichment: list[bytes | None] | None = None,
    field: str = "meta",
) -> BatchResult:
    """Decode, (merge the enrichment,) transform and encode one batch; one result or one
    error per record."""
    started = time.perf_counter()
    transform = _transform(spec)
    errors: list[tuple[int, str, str]] = []
    outputs: list[bytes | None] = [None] * len(values)
    good_index: list[int] = []
    good_items: list[Any] = []
    merged = False
    for index, value in enumerate(values):
        try:
            item = _decode(value, max_record_bytes)
            if enrichment is not None and (extra := enrichment[index]) is not None:
                item = _merge(item, extra, field)
                merged = True
            good_items.append(item)
            good_index.append(index)
        except BadRecord as bad:
            errors.append((index, bad.reason, bad.message))
    results = _apply(transform, good_items) if good_items else []
    if transform.passthrough and not merged:  # an enriched record is not its input
        for index, result in zip(good_index, results, strict=True):
            if isinstance(result, BadRecord):
                errors.append((index, result.reason, _short(result.message)))
        errors.sort()
        return BatchResult(None, errors, time.perf_counter() - started, os.getpid())
    for index, result in zip(good_index, results, strict=True):
        if isinstance(result, BadRecord):
            errors.append((index, result.reason, _short(result.message)))
            continue
        try:
            encoded = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:
            errors.append((index, "encode_error", _short(str(exc))))
            continue
        if len(encoded) > max_record_bytes:
            message = (
                f"the output is {len(encoded)} bytes, more than the limit of {max_record_bytes}"
            )
            errors.append((index, "output_too_large", message))
            continue
        outputs[index] = encoded
    errors.sort()
    return BatchResult(outputs, errors, time.perf_counter() - started, os.getpid())
