"""What runs inside a worker process: decode, transform, encode one batch through the
run's codecs (JSON, Avro or Protobuf), by :func:`transforms.batch.run_batch`, the core
``stream try`` and the testing helper share.

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

from stream.formats.registry import RegistryError
from stream.formats.spec import JSON, Codecs, FormatSpec
from stream.formats.spec import build as build_codecs
from stream.windows.aggregates import Records
from stream.windows.extract import WindowInput, window_batch
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
    # Not empty: the schema registry could not be reached; nothing was processed and
    # the batch must be run again (the pool does that; callers never see it).
    unavailable: str = ""
    # A windowed run: each record's event time and partial (``outputs`` is then empty:
    # the windows' outputs are made on the event loop, where the state is).
    window: Records | None = None

    def materialize(self, values: list[bytes | None]) -> list[bytes | None]:
        """The outputs, one per record, with None where the record failed."""
        if self.outputs is not None:
            return self.outputs
        failed = {index for index, _, _ in self.errors}
        return [None if i in failed else v for i, v in enumerate(values)]


@dataclass(frozen=True, slots=True)
class Job:
    """What crosses to a worker: a batch (``probe``: answered record by record), with the
    enrichment stage's answers if any (``enrichment[i]``: JSON bytes for record ``i``'s
    ``field``, or None)."""

    values: list[bytes | None]
    probe: bool = False
    enrichment: list[bytes | None] | None = None
    field: str = "meta"
    timestamps: list[int] | None = None  # the records' Kafka timestamps (windowed runs)

    def records(self) -> list[Job]:
        return [self.part(i, i + 1, probe=False) for i in range(len(self.values))]

    def part(self, start: int, end: int | None = None, *, probe: bool | None = None) -> Job:
        extra = None if self.enrichment is None else self.enrichment[start:end]
        stamps = None if self.timestamps is None else self.timestamps[start:end]
        return Job(
            self.values[start:end],
            self.probe if probe is None else probe,
            extra,
            self.field,
            stamps,
        )


_transforms: dict[str, Transform] = {}
_formats: dict[FormatSpec, Codecs] = {}


def init_worker() -> None:
    """Ctrl-C and a SIGTERM sent to the whole process group are the parent's to handle:
    it drains, then stops the workers. A worker also exits when its parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def serve(  # noqa: PLR0917 - the worker process's arguments, given in order
    conn: Connection,
    spec: str,
    max_record_bytes: int,
    max_array_length: int,
    formats: FormatSpec = JSON,
    windowing: WindowInput | None = None,
) -> None:
    """A worker process's main loop: batches in, results out, over one pipe.

    Says ``ready`` once the transform is loaded (or why it could not be); an empty
    message asks it to exit. A message is ``(probe, values)``: a batch answered with one
    result, or (probe) records answered one result each, as each is done.
    """
    init_worker()
    try:
        set_limits(max_array_length)
        load_transform(spec)
        _codecs(formats)
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
        job: Job = pickle.loads(data)  # noqa: S301 - from our own parent process
        try:
            if job.probe:
                # One record at a time, each answered at once: the parent then knows
                # which record a crash or a hang is on.
                for one in job.records():
                    result = process_job(spec, one, max_record_bytes, formats, windowing)
                    conn.send_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
                continue
            result = process_job(spec, job, max_record_bytes, formats, windowing)
        except Exception:
            log.error("a batch failed outside the transform", exc_info=True)
            raise
        conn.send_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


def load_transform(spec: str) -> Transform:
    """The transform of ``spec``, resolved once per worker process."""
    transform = _transforms.get(spec)
    if transform is None:
        transform = _transforms[spec] = resolve(spec)
    return transform


def _codecs(formats: FormatSpec) -> Codecs:
    found = _formats.get(formats)
    if found is None:
        found = _formats[formats] = build_codecs(formats)
    return found


def process_job(
    spec: str,
    job: Job,
    max_record_bytes: int,
    formats: FormatSpec,
    windowing: WindowInput | None,
) -> BatchResult:
    """One job: a batch through the transform, or through a windowed run's reduction."""
    if windowing is None:
        return process_batch(
            spec,
            job.values,
            max_record_bytes,
            formats,
            enrichment=job.enrichment,
            field=job.field,
        )
    return process_window_batch(
        spec,
        job.values,
        job.timestamps or [0] * len(job.values),
        max_record_bytes,
        windowing=windowing,
        formats=formats,
    )


def process_window_batch(
    spec: str,
    values: list[bytes | None],
    timestamps: list[int],
    max_record_bytes: int,
    *,
    windowing: WindowInput,
    formats: FormatSpec = JSON,
) -> BatchResult:
    """Decode, transform and reduce each record's readings (``stream.windows.extract``)."""
    started = time.perf_counter()
    transform = load_transform(spec)
    codecs = _codecs(formats)
    try:
        errors, records = window_batch(
            transform, values, timestamps, max_record_bytes, windowing, decoder=codecs.decoder
        )
    except RegistryError as exc:
        log.warning("%s; the batch will be retried", exc)
        return BatchResult([], [], time.perf_counter() - started, os.getpid(), str(exc))
    return BatchResult([], errors, time.perf_counter() - started, os.getpid(), window=records)


def process_batch(
    spec: str,
    values: list[bytes | None],
    max_record_bytes: int,
    formats: FormatSpec = JSON,
    *,
    enrichment: list[bytes | None] | None = None,
    field: str = "meta",
) -> BatchResult:
    """Decode, transform and encode one batch; one result or one error per record.

    A schema registry that cannot be reached (after the client's retries), or refuses
    our credentials mid-run, fails no record: the result says ``unavailable`` and the
    pool runs the batch again later. Only what the registry says about a record's own
    id is that record's fault: no such id (``unknown_schema``), or a lasting refusal of
    it (``schema_refused``).
    """
    started = time.perf_counter()
    transform = load_transform(spec)
    codecs = _codecs(formats)
    try:
        outcome = run_batch(
            transform,
            values,
            max_record_bytes,
            enrichment,
            field,
            decoder=codecs.decoder,
            encoder=codecs.encoder,
            same_bytes=formats.same_bytes,
        )
    except RegistryError as exc:  # SchemaNotFound/SchemaRefused never get here: per record
        log.warning("%s; the batch will be retried", exc)
        return BatchResult([], [], time.perf_counter() - started, os.getpid(), str(exc))
    return BatchResult(outcome.outputs, outcome.errors, time.perf_counter() - started, os.getpid())
