"""What runs inside a worker process: decode, transform, encode one batch (the core of
that is :func:`transforms.batch.run_batch`, which ``stream try`` and the testing helper
share).

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

from transforms import Transform, resolve, set_limits
from transforms.batch import run_batch

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


def process_batch(spec: str, values: list[bytes | None], max_record_bytes: int) -> BatchResult:
    """Decode, transform and encode one batch; one result or one error per record."""
    started = time.perf_counter()
    outcome = run_batch(_transform(spec), values, max_record_bytes)
    return BatchResult(outcome.outputs, outcome.errors, time.perf_counter() - started, os.getpid())
