"""The built-in transforms: ``identity``, ``sensor-features`` and ``matrix-inverse``.

Each one is vectorised over the batch: records are validated cheaply, grouped by array shape,
stacked into one ``ndarray`` per group (in chunks of at most :data:`CHUNK_ELEMENTS` numbers, to
bound memory) and processed with one numpy call per chunk.  A record that fails validation or
computation gets a :class:`~transforms.base.BadRecord` in its slot; the others are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from transforms.base import LIMITS, BadRecord, register
from transforms.messages import bounded
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

CHUNK_ELEMENTS: Final = 1 << 22
"""At most this many float64 numbers (32 MiB) are stacked into one array for one numpy call."""

ANOMALY_ZSCORE: Final = 3.0
"""``sensor-features`` flags a reading as an anomaly when ``|zscore|`` exceeds this."""

_SINGULAR_CONDITION: Final = 1.0 / float(np.finfo(np.float64).eps)
_PEAKS: Final = 3

_FloatArray = NDArray[np.float64]
_NUMBER_TYPES: Final = (int, float, np.integer, np.floating)
_INTEGER_TYPES: Final = (int, np.integer)
# Exact types that np.array(..., dtype=float64) converts faithfully (bool is deliberately absent).
_PLAIN_NUMBER_TYPES: Final = frozenset({int, float})


# --- validation helpers -------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, _INTEGER_TYPES) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, _NUMBER_TYPES):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _describe(value: Any) -> str:
    """``'string "abc"'``-style description of a value for error messages (bounded length)."""
    kind = _json_type(value)
    if value is None:
        return kind
    return f"{kind} {bounded(repr(value), 40)}"


def _walk(item: Any, depth: int, path: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``("[i][j]", value)`` for every scalar of a nested list ``depth`` levels deep."""
    for index, value in enumerate(item):
        here = f"{path}[{index}]"
        if depth == 1:
            yield here, value
        else:
            yield from _walk(value, depth - 1, here)


def _one_to_floats(item: Any, depth: int, field: str) -> _FloatArray | BadRecord:
    """Convert one nested list of numbers, explaining precisely what is wrong if it cannot."""
    for path, value in _walk(item, depth):
        if not _is_number(value):
            return BadRecord("schema", f"{field}{path} is {_describe(value)}, expected a number")
    try:
        return np.array(item, dtype=np.float64)
    except OverflowError:
        for path, value in _walk(item, depth):
            try:
                float(value)
            except OverflowError:
                return BadRecord(
                    "invalid_value", f"{field}{path} = {_describe(value)} is outside float64 range"
                )
        return BadRecord("invalid_value", f"{field} has a value outside float64 range")
    except (TypeError, ValueError) as exc:
        return BadRecord("schema", f"{field} is not numeric: {type(exc).__name__}: {exc}")


def _stack_floats(
    records: Sequence[Any],
    indices: list[int],
    field: str,
    shape: tuple[int, ...],
    out: list[Any],
) -> tuple[list[int], _FloatArray]:
    """Stack ``records[i][field]`` (each a nested list of the given shape) for ``i in indices``.

    Records whose numbers are not all finite real numbers get a BadRecord in ``out``.  Returns the
    indices that were kept and the stacked ``(len(kept), *shape)`` float64 array.

    The fast path checks the element types of the whole group in one C-level pass and converts
    the group with a single ``np.array`` call; only if that fails are records converted one by one.
    """
    items = [records[i][field] for i in indices]
    scalars: Any = items
    for _ in shape:
        scalars = chain.from_iterable(scalars)

    stacked: _FloatArray | None = None
    if set(map(type, scalars)) <= _PLAIN_NUMBER_TYPES:
        try:
            stacked = np.array(items, dtype=np.float64)
        except OverflowError:  # an int beyond float64 range: diagnose record by record below
            stacked = None

    kept: list[int]
    if stacked is not None:
        kept = list(indices)
    else:
        kept, arrays = [], []
        for index, item in zip(indices, items, strict=True):
            converted = _one_to_floats(item, len(shape), field)
            if isinstance(converted, BadRecord):
                out[index] = converted
            else:
                kept.append(index)
                arrays.append(converted)
        if not arrays:
            return kept, np.empty((0, *shape), dtype=np.float64)
        stacked = np.stack(arrays)

    finite = np.isfinite(stacked).reshape(len(kept), -1).all(axis=1)
    if not finite.all():
        for k in np.flatnonzero(~finite).tolist():
            row = stacked[k]
            position = np.unravel_index(int(np.argmin(np.isfinite(row))), shape)
            path = "".join(f"[{int(p)}]" for p in position)
            out[kept[k]] = BadRecord(
                "invalid_value", f"{field}{path} is not a finite number ({float(row[position])!r})"
            )
        good = np.flatnonzero(finite)
        kept = [kept[k] for k in good.tolist()]
        stacked = stacked[good]
    return kept, stacked


def _chunks(indices: list[int], elements_per_record: int) -> Iterator[list[int]]:
    """Split ``indices`` so that one chunk holds at most CHUNK_ELEMENTS numbers (>= 1 record)."""
    per_chunk = max(1, CHUNK_ELEMENTS // max(1, elements_per_record))
    for start in range(0, len(indices), per_chunk):
        yield indices[start : start + per_chunk]


# --- identity -----------------------------------------------------------------------------------


@register("identity", "Return every record unchanged.", passthrough=True)
def identity(records: Sequence[Any]) -> list[Any]:
    """Return every record unchanged."""
    return list(records)


# --- sensor-features ----------------------------------------------------------------------------


def _check_sensor(record: Any) -> BadRecord | None:
    """Cheap per-record checks of everything but the individual numbers in ``values``."""
    if not isinstance(record, dict):
        return BadRecord("schema", f"expected a JSON object, got {_describe(record)}")
    missing = [key for key in ("sensor_id", "ts", "values") if key not in record]
    if missing:
        return BadRecord("schema", f"missing field(s): {', '.join(missing)}")
    if not isinstance(record["sensor_id"], str):
        return BadRecord(
            "schema", f"sensor_id must be a string, got {_describe(record['sensor_id'])}"
        )
    ts = record["ts"]
    if not _is_number(ts):
        return BadRecord("schema", f"ts must be a number, got {_describe(ts)}")
    try:
        ts_ok = math.isfinite(float(ts))
    except OverflowError:
        ts_ok = False
    if not ts_ok:
        return BadRecord("invalid_value", f"ts must be a finite number, got {_describe(ts)}")
    if "seq" in record and not _is_integer(record["seq"]):
        return BadRecord("schema", f"seq must be an integer, got {_describe(record['seq'])}")
    values = record["values"]
    if not isinstance(values, list):
        return BadRecord("schema", f"values must be an array of numbers, got {_describe(values)}")
    if not values:
        return BadRecord("schema", "values must not be empty")
    limit = LIMITS.max_array_length
    if len(values) > limit:
        return BadRecord("limit", f"values has {len(values)} numbers, more than {limit}")
    return None


def _sensor_group(
    records: Sequence[Any], kept: list[int], values: _FloatArray, out: list[Any]
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
                "invalid_value", "values are too large: the statistics overflow float64"
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
        for chunk in _chunks(indices, n):
            kept, values = _stack_floats(records, chunk, "values", (n,), out)
            if kept:
                _sensor_group(records, kept, values, out)
    return out


# --- matrix-inverse -----------------------------------------------------------------------------


def _check_matrix(record: Any) -> BadRecord | int:
    """Per-record structure checks; returns the matrix size ``n`` or a BadRecord."""
    if not isinstance(record, dict):
        return BadRecord("schema", f"expected a JSON object, got {_describe(record)}")
    missing = [key for key in ("id", "matrix") if key not in record]
    if missing:
        return BadRecord("schema", f"missing field(s): {', '.join(missing)}")
    record_id = record["id"]
    if not (isinstance(record_id, str) or _is_integer(record_id)):
        return BadRecord("schema", f"id must be a string or an integer, got {_describe(record_id)}")
    matrix = record["matrix"]
    if not isinstance(matrix, list):
        return BadRecord(
            "schema", f"matrix must be an array of arrays of numbers, got {_describe(matrix)}"
        )
    n = len(matrix)
    if n == 0:
        return BadRecord("schema", "matrix must not be empty")
    max_rows = min(MAX_MATRIX_SIZE, LIMITS.max_array_length)
    if n > max_rows:
        return BadRecord("limit", f"matrix has {n} rows, more than {max_rows}")
    for r, row in enumerate(matrix):
        if not isinstance(row, list):
            return BadRecord("schema", f"matrix[{r}] must be an array, got {_describe(row)}")
        if len(row) != n:
            return BadRecord(
                "schema", f"matrix must be square: it has {n} rows but matrix[{r}] has {len(row)}"
            )
    return n


def _invert_group(
    records: Sequence[Any], kept: list[int], matrices: _FloatArray, out: list[Any]
) -> None:
    """Invert ``len(kept)`` matrices of equal size, stacked in ``matrices`` (k x n x n)."""
    with np.errstate(all="ignore"):  # singular matrices give inf/nan condition numbers
        condition = np.linalg.cond(matrices)
    invertible = np.isfinite(condition) & (condition <= _SINGULAR_CONDITION)
    for k in np.flatnonzero(~invertible).tolist():
        out[kept[k]] = BadRecord(
            "singular_matrix",
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
            out[index] = BadRecord("singular_matrix", "matrix is singular (zero pivot)")
        elif not finite_j:
            out[index] = BadRecord("invalid_value", "the inverse overflows float64")
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
        for chunk in _chunks(indices, n * n):
            kept, matrices = _stack_floats(records, chunk, "matrix", (n, n), out)
            if kept:
                _invert_group(records, kept, matrices, out)
    return out
