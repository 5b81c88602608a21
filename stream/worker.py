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

from stream.reasons import Reason
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


_transforms: dict[str, Transform] = {}


def init_worker() -> None:
    """Ctrl-C and a SIGTERM sent to the whole process group are the parent's to handle:
    it drains, then stops the workers. A worker also exits when its parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def serve(conn: Connection, spec: str, max_record_bytes: int, max_array_length: int) -> None:
    """A worker process's main loop: batches in, results out, over one pipe.

    Says ``ready`` once the transform is loaded (or why it could not be); an empty
    message asks it to exit. A message is ``(probe, values)``: a batch answered with one
    result, or (probe) records answered one result each, as each is done.
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
        probe, values = pickle.loads(data)  # noqa: S301 - from our own parent process
        try:
            if probe:
                # One record at a time, each answered at once: the parent then knows
                # which record a crash or a hang is on.
                for value in values:
                    result = process_batch(spec, [value], max_record_bytes)
                    conn.send_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
                continue
            result = process_batch(spec, values, max_record_bytes)
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
        raise BadRecord(Reason.EMPTY, "the record has no value")
    if len(value) > max_bytes:
        raise BadRecord(
            Reason.TOO_LARGE, f"{len(value)} bytes is more than the limit of {max_bytes}"
        )
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        reason = Reason.INVALID_UTF8 if "UTF-8" in str(exc) else Reason.INVALID_JSON
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
        return [BadRecord(Reason.TRANSFORM_ERROR, _short(problem))]
    return [_apply(transform, [item])[0] for item in items]


def process_batch(spec: str, values: list[bytes | None], max_record_bytes: int) -> BatchResult:
    """Decode, transform and encode one batch; one result or one error per record."""
    started = time.perf_counter()
    transform = _transform(spec)
    errors: list[tuple[int, str, str]] = []
    outputs: list[bytes | None] = [None] * len(values)
    good_index: list[int] = []
    good_items: list[Any] = []
    for index, value in enumerate(values):
        try:
            good_items.append(_decode(value, max_record_bytes))
            good_index.append(index)
        except BadRecord as bad:
            errors.append((index, bad.reason, bad.message))
    results = _apply(transform, good_items) if good_items else []
    if transform.passthrough:
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
            errors.append((index, Reason.ENCODE_ERROR, _short(str(exc))))
            continue
        if len(encoded) > max_record_bytes:
            message = (
                f"the output is {len(encoded)} bytes, more than the limit of {max_record_bytes}"
            )
            errors.append((index, Reason.OUTPUT_TOO_LARGE, message))
            continue
        outputs[index] = encoded
    errors.sort()
    return BatchResult(outputs, errors, time.perf_counter() - started, os.getpid())
