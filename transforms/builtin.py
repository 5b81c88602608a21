"""The built-in transforms: ``identity``, ``sensor-features`` and ``matrix-inverse``.

Each one is vectorised over the batch: records are validated cheaply, grouped by array shape,
stacked into one ``ndarray`` per group (in chunks of at most :data:`CHUNK_ELEMENTS` numbers, to
bound memory; :mod:`transforms.arrays`) and processed with one numpy call per chunk. A record
that fails validation or computation gets a :class:`~transforms.base.BadRecord` in its slot;
the others are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from transforms.arrays import (
    CHUNK_ELEMENTS,
    FloatArray,
    chunks,
    describe,
    is_integer,
    is_number,
    stack_floats,
)
from transforms.base import LIMITS, BadRecord, register
from transforms.reasons import Reason
from transforms.schema import RecordField, RecordSchema, fields

__all__ = [
    "ANOMALY_ZSCORE",
    "CHUNK_ELEMENTS",
    "MAX_MATRIX_SIZE",
    "MAX_VALUES",
    "SENSOR_FEATURES_SCHEMA",
    "SENSOR_READING_SCHEMA",
    "identity",
    "matrix_inverse",
    "sensor_features",
]

MAX_VALUES: Final = 100_000
"""Default longest ``values`` array accepted by ``sensor-features`` (``set_limits`` changes it)."""

MAX_MATRIX_SIZE: Final = 512
"""Largest ``n`` of an ``n x n`` matrix accepted by ``matrix-inverse``."""

ANOMALY_ZSCORE: Final = 3.0
"""``sensor-features`` flags a reading as an anomaly when ``|zscore|`` exceeds this."""

_SINGULAR_CONDITION: Final = 1.0 / float(np.finfo(np.float64).eps)
_PEAKS: Final = 3


# --- identity -----------------------------------------------------------------------------------


@register("identity", "Return every record unchanged.", passthrough=True)
def identity(records: Sequence[Any]) -> list[Any]:
    """Return every record unchanged."""
    return list(records)


# --- sensor-features ----------------------------------------------------------------------------


def _check_sensor(record: Any) -> BadRecord | None:
    """Cheap per-record checks of everything but the individual numbers in ``values``."""
    if not isinstance(record, dict):
        return BadRecord(Reason.SCHEMA, f"expected a JSON object, got {describe(record)}")
    missing = [key for key in ("sensor_id", "ts", "values") if key not in record]
    if missing:
        return BadRecord(Reason.SCHEMA, f"missing field(s): {', '.join(missing)}")
    if not isinstance(record["sensor_id"], str):
        return BadRecord(
            Reason.SCHEMA, f"sensor_id must be a string, got {describe(record['sensor_id'])}"
        )
    ts = record["ts"]
    if not is_number(ts):
        return BadRecord(Reason.SCHEMA, f"ts must be a number, got {describe(ts)}")
    try:
        ts_ok = math.isfinite(float(ts))
    except OverflowError:
        ts_ok = False
    if not ts_ok:
        return BadRecord(Reason.INVALID_VALUE, f"ts must be a finite number, got {describe(ts)}")
    if "seq" in record and not is_integer(record["seq"]):
        return BadRecord(Reason.SCHEMA, f"seq must be an integer, got {describe(record['seq'])}")
    values = record["values"]
    if not isinstance(values, list):
        return BadRecord(
            Reason.SCHEMA, f"values must be an array of numbers, got {describe(values)}"
        )
    if not values:
        return BadRecord(Reason.SCHEMA, "values must not be empty")
    limit = LIMITS.max_array_length
    if len(values) > limit:
        return BadRecord(Reason.LIMIT, f"values has {len(values)} numbers, more than {limit}")
    return None


def _sensor_group(
    records: Sequence[Any], kept: list[int], values: FloatArray, out: list[Any]
) -> None:
    """Features of ``len(kept)`` readings of equal length, stacked in ``values`` (k x n)."""
    n = values.shape[1]
    with np.errstate(all="ignore"):  # overflow of huge-but-finite inputs is detected below
        mean = values.mean(axis=1)
        std = values.std(axis=1)
        magnitudes = np.abs(np.fft.rfft(values - mean[:, np.newaxis], axis=1))
        zscore = np.zeros_like(mean)
        np.divide(values[:, -1] - mean, std, out=zscore, where=std > 0)
    usable: NDArray[np.bool_] = (
        np.isfinite(mean)
        & np.isfinite(std)
        & np.isfinite(zscore)
        & np.isfinite(magnitudes).all(axis=1)
    )
    # Largest magnitude first, DC bin excluded, ties broken by the lower bin index.
    n_peaks = min(_PEAKS, magnitudes.shape[1] - 1)
    peaks = (np.argsort(-magnitudes[:, 1:], axis=1, kind="stable")[:, :n_peaks] + 1).tolist()

    columns = zip(
        kept,
        usable,
        mean.tolist(),
        std.tolist(),
        values.min(axis=1).tolist(),
        values.max(axis=1).tolist(),
        peaks,
        zscore.tolist(),
        (np.abs(zscore) > ANOMALY_ZSCORE).tolist(),
        strict=True,
    )
    for index, ok, mean_k, std_k, min_k, max_k, peaks_k, z_k, anomaly_k in columns:
        if not ok:
            out[index] = BadRecord(
                Reason.INVALID_VALUE, "values are too large: the statistics overflow float64"
            )
            continue
        record = records[index]
        result: dict[str, Any] = {"sensor_id": record["sensor_id"], "ts": float(record["ts"])}
        if "seq" in record:
            result["seq"] = int(record["seq"])
        result["n"] = n
        result["mean"] = mean_k
        result["std"] = std_k
        result["min"] = min_k
        result["max"] = max_k
        result["peak_bins"] = peaks_k
        result["zscore"] = z_k
        result["anomaly"] = anomaly_k
        out[index] = result


SENSOR_READING_SCHEMA: Final = RecordSchema(
    "SensorReading",
    fields(("sensor_id", "string"), ("seq", "long"), ("ts", "double"), ("values", "double[]")),
)
"""The demo sensor event (``stream produce``), the input ``sensor-features`` expects."""

SENSOR_FEATURES_SCHEMA: Final = RecordSchema(
    "SensorFeatures",
    (
        RecordField("sensor_id", "string"),
        RecordField("ts", "double"),
        RecordField("seq", "long", optional=True),
        RecordField("n", "long", minimum=1),
        RecordField("mean", "double"),
        RecordField("std", "double", minimum=0),
        RecordField("min", "double"),
        RecordField("max", "double"),
        RecordField("peak_bins", "long[]"),
        RecordField("zscore", "double"),
        RecordField("anomaly", "boolean"),
    ),
)
"""What ``sensor-features`` returns for each record (``seq`` only when the input has it)."""


@register(
    "sensor-features",
    "Per-reading mean, std, min, max, top-3 FFT peak bins and z-score anomaly flag.",
    output=SENSOR_FEATURES_SCHEMA,
)
def sensor_features(records: Sequence[Any]) -> list[Any]:
    """Summarise sensor readings ``{"sensor_id", "ts", "values", ["seq"]}``.

    Output per record: ``sensor_id``, ``ts`` (float), ``seq`` (if given), ``n``, ``mean``,
    ``std`` (population), ``min``, ``max``, ``peak_bins`` (the up to 3 non-DC bins of
    ``rfft(values - mean)`` with the largest magnitude, largest first), ``zscore`` (of the last
    value; 0.0 when ``std == 0``) and ``anomaly`` (``|zscore| > 3``).
    """
    out: list[Any] = [None] * len(records)
    groups: dict[int, list[int]] = {}
    for index, record in enumerate(records):
        problem = _check_sensor(record)
        if problem is None:
            groups.setdefault(len(record["values"]), []).append(index)
        else:
            out[index] = problem
    for n, indices in groups.items():
        for chunk in chunks(indices, n):
            kept, values = stack_floats(records, chunk, "values", (n,), out)
            if kept:
                _sensor_group(records, kept, values, out)
    return out


# --- matrix-inverse -----------------------------------------------------------------------------


def _check_matrix(record: Any) -> BadRecord | int:
    """Per-record structure checks; returns the matrix size ``n`` or a BadRecord."""
    if not isinstance(record, dict):
        return BadRecord(Reason.SCHEMA, f"expected a JSON object, got {describe(record)}")
    missing = [key for key in ("id", "matrix") if key not in record]
    if missing:
        return BadRecord(Reason.SCHEMA, f"missing field(s): {', '.join(missing)}")
    record_id = record["id"]
    if not (isinstance(record_id, str) or is_integer(record_id)):
        return BadRecord(
            Reason.SCHEMA, f"id must be a string or an integer, got {describe(record_id)}"
        )
    matrix = record["matrix"]
    if not isinstance(matrix, list):
        return BadRecord(
            Reason.SCHEMA, f"matrix must be an array of arrays of numbers, got {describe(matrix)}"
        )
    n = len(matrix)
    if n == 0:
        return BadRecord(Reason.SCHEMA, "matrix must not be empty")
    max_rows = min(MAX_MATRIX_SIZE, LIMITS.max_array_length)
    if n > max_rows:
        return BadRecord(Reason.LIMIT, f"matrix has {n} rows, more than {max_rows}")
    for r, row in enumerate(matrix):
        if not isinstance(row, list):
            return BadRecord(Reason.SCHEMA, f"matrix[{r}] must be an array, got {describe(row)}")
        if len(row) != n:
            return BadRecord(
                Reason.SCHEMA,
                f"matrix must be square: it has {n} rows but matrix[{r}] has {len(row)}",
            )
    return n


def _invert_group(
    records: Sequence[Any], kept: list[int], matrices: FloatArray, out: list[Any]
) -> None:
    """Invert ``len(kept)`` matrices of equal size, stacked in ``matrices`` (k x n x n)."""
    with np.errstate(all="ignore"):  # singular matrices give inf/nan condition numbers
        condition = np.linalg.cond(matrices)
    invertible = np.isfinite(condition) & (condition <= _SINGULAR_CONDITION)
    for k in np.flatnonzero(~invertible).tolist():
        out[kept[k]] = BadRecord(
            Reason.SINGULAR_MATRIX,
            f"matrix is singular or numerically singular (condition number {condition[k]:.3g})",
        )
    good = np.flatnonzero(invertible)
    if good.size == 0:
        return
    subset = matrices if good.size == len(kept) else matrices[good]

    failed = np.zeros(len(subset), dtype=bool)
    with np.errstate(all="ignore"):
        try:
            inverses = np.linalg.inv(subset)
        except np.linalg.LinAlgError:  # an exactly zero pivot despite a moderate condition
            inverses = np.full_like(subset, np.nan)
            for j in range(len(subset)):
                try:
                    inverses[j] = np.linalg.inv(subset[j])
                except np.linalg.LinAlgError:
                    failed[j] = True
        determinants = np.linalg.det(subset)
    finite = np.isfinite(inverses).all(axis=(1, 2))

    columns = zip(
        good.tolist(),
        failed.tolist(),
        finite.tolist(),
        determinants.tolist(),
        condition[good].tolist(),
        strict=True,
    )
    for j, (k, failed_j, finite_j, det_j, cond_j) in enumerate(columns):
        index = kept[k]
        if failed_j:
            out[index] = BadRecord(Reason.SINGULAR_MATRIX, "matrix is singular (zero pivot)")
        elif not finite_j:
            out[index] = BadRecord(Reason.INVALID_VALUE, "the inverse overflows float64")
        else:
            record_id = records[index]["id"]
            out[index] = {
                "id": record_id if isinstance(record_id, str) else int(record_id),
                "inverse": inverses[j].tolist(),
                # None when |det| overflows float64 (the matrix is still well conditioned)
                "determinant": det_j if math.isfinite(det_j) else None,
                "condition": cond_j,
            }


@register(
    "matrix-inverse",
    "Inverse, determinant and condition number of an n x n matrix (n <= 512).",
)  # no output schema: a list of lists has no Avro/Protobuf form here; JSON output only
def matrix_inverse(records: Sequence[Any]) -> list[Any]:
    """Invert matrices ``{"id": str | int, "matrix": [[...], ...]}``.

    Output per record: ``id``, ``inverse`` (n x n list of lists), ``determinant`` (``None`` if it
    overflows float64) and ``condition`` (2-norm condition number).  A matrix whose condition
    number exceeds ``1 / eps`` is rejected as ``singular_matrix``.
    """
    out: list[Any] = [None] * len(records)
    groups: dict[int, list[int]] = {}
    for index, record in enumerate(records):
        checked = _check_matrix(record)
        if isinstance(checked, BadRecord):
            out[index] = checked
        else:
            groups.setdefault(checked, []).append(index)
    for n, indices in groups.items():
        for chunk in chunks(indices, n * n):
            kept, matrices = stack_floats(records, chunk, "matrix", (n, n), out)
            if kept:
                _invert_group(records, kept, matrices, out)
    return out
