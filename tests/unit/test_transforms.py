"""Unit tests for the pure transforms package: built-ins against per-record numpy references,
bad-record isolation, the registry and ``resolve``."""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transforms
from transforms import (
    BadRecord,
    RecordField,
    Transform,
    UnknownTransformError,
    available,
    record_transform,
    register,
    resolve,
)
from transforms import base as transforms_base
from transforms.builtin import (
    MAX_MATRIX_SIZE,
    MAX_VALUES,
    identity,
    matrix_inverse,
    sensor_features,
)
from transforms.checks import check_size, decode_json, load_json
from transforms.messages import MAX_MESSAGE_CHARS, bounded
from transforms.reasons import Reason

EPS = float(np.finfo(np.float64).eps)
HYPOTHESIS = settings(
    database=None,
    deadline=None,
    derandomize=True,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- objects resolved by import path in the resolve() tests --------------------------------------


def double(records: Sequence[Any]) -> list[Any]:
    """Double every record.

    The second paragraph is not part of the description.
    """
    return [record * 2 for record in records]


def halve(record: Any) -> Any:
    """Halve one record (a per-record function)."""
    if record == 0:
        raise ZeroDivisionError("refusing to halve zero")
    return record / 2


halve.__dict__["__stream_per_record__"] = True


def undocumented(records: Sequence[Any]) -> list[Any]:
    return list(records)


class Holder:
    @staticmethod
    def negate(records: Sequence[Any]) -> list[Any]:
        """Negate every record."""
        return [-record for record in records]


NOT_CALLABLE = 42


# --- references ----------------------------------------------------------------------------------


def json_roundtrip(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def reference_sensor(record: dict[str, Any]) -> dict[str, Any]:
    """Straightforward one-record-at-a-time sensor-features."""
    x = np.asarray(record["values"], dtype=np.float64)
    mean = float(np.mean(x))
    std = float(np.std(x))
    magnitudes = np.abs(np.fft.rfft(x - mean))
    peaks = sorted(range(1, len(magnitudes)), key=lambda b: -magnitudes[b])[:3]
    zscore = float((x[-1] - mean) / std) if std > 0 else 0.0
    expected: dict[str, Any] = {"sensor_id": record["sensor_id"], "ts": float(record["ts"])}
    if "seq" in record:
        expected["seq"] = record["seq"]
    expected.update(
        n=len(x),
        mean=mean,
        std=std,
        min=float(np.min(x)),
        max=float(np.max(x)),
        peak_bins=peaks,
        zscore=zscore,
        anomaly=abs(zscore) > 3.0,
    )
    return expected


SENSOR_KEYS = ["sensor_id", "ts", "n", "mean", "std", "min", "max", "peak_bins", "zscore"]


def assert_sensor_matches(got: Any, expected: dict[str, Any]) -> None:
    assert isinstance(got, dict), got
    assert list(got) == list(expected)  # same keys, same order
    for key in ("sensor_id", "ts", "n", "peak_bins", "anomaly"):
        assert got[key] == expected[key], key
    if "seq" in expected:
        assert got["seq"] == expected["seq"]
        assert type(got["seq"]) is int
    for key in ("mean", "std", "min", "max", "zscore"):
        assert type(got[key]) is float, key
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, atol=1e-12, err_msg=key)
    assert type(got["ts"]) is float
    assert type(got["n"]) is int
    assert type(got["anomaly"]) is bool
    assert all(type(b) is int for b in got["peak_bins"])


def reference_matrix(record: dict[str, Any]) -> dict[str, Any] | None:
    """One-matrix-at-a-time matrix-inverse; None where a singular_matrix is expected."""
    a = np.asarray(record["matrix"], dtype=np.float64)
    with np.errstate(all="ignore"):
        condition = float(np.linalg.cond(a))
    if not math.isfinite(condition) or condition > 1 / EPS:
        return None
    return {
        "id": record["id"],
        "inverse": np.linalg.inv(a),
        "determinant": float(np.linalg.det(a)),
        "condition": condition,
    }


def assert_matrix_matches(got: Any, expected: dict[str, Any]) -> None:
    assert isinstance(got, dict), got
    assert list(got) == ["id", "inverse", "determinant", "condition"]
    assert got["id"] == expected["id"]
    assert type(got["id"]) is type(expected["id"])
    inverse = got["inverse"]
    assert isinstance(inverse, list)
    assert all(isinstance(row, list) and all(type(v) is float for v in row) for row in inverse)
    np.testing.assert_allclose(np.array(inverse), expected["inverse"], rtol=1e-9, atol=1e-12)
    assert type(got["determinant"]) is float
    np.testing.assert_allclose(got["determinant"], expected["determinant"], rtol=1e-9)
    assert type(got["condition"]) is float
    np.testing.assert_allclose(got["condition"], expected["condition"], rtol=1e-9)


def make_sensor_batch(seed: int, count: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    lengths = [1, 2, 3, 4, 5, 7, 8, 16, 63, 64, 65, 100, 257]
    batch: list[Any] = []
    for i in range(count):
        n = int(rng.choice(lengths))
        scale = float(rng.choice([1e-3, 1.0, 50.0, 1e6]))
        values: list[Any] = (rng.normal(size=n) * scale + rng.normal() * scale).tolist()
        if i % 7 == 0:
            values = rng.integers(-1000, 1000, size=n).tolist()  # plain ints
        elif i % 11 == 0 and n > 10:
            values[-1] = values[0] + 40 * scale  # a spike: most likely an anomaly
        record: dict[str, Any] = {
            "sensor_id": f"sensor-{i % 17}",
            "ts": 1_700_000_000 + i if i % 3 == 0 else 1_700_000_000.5 + i,
            "values": values,
        }
        if i % 2 == 0:
            record["seq"] = i
        batch.append(json_roundtrip(record))
    return batch


def well_conditioned(rng: np.random.Generator, n: int) -> list[list[float]]:
    result: list[list[float]] = (rng.normal(size=(n, n)) + n * np.eye(n)).tolist()
    return result


GOOD_SENSOR_A: dict[str, Any] = {"sensor_id": "a", "ts": 1.5, "seq": 1, "values": [1.0, 2.0, 4.0]}
GOOD_SENSOR_B: dict[str, Any] = {
    "sensor_id": "b",
    "ts": 2,
    "values": [0.5, -1.0, 3.25, 8.0, 2.0, 1.0, 0.0, -7.5],
}


# --- identity ------------------------------------------------------------------------------------


def test_identity_returns_every_value_unchanged() -> None:
    batch: list[Any] = [{"a": 1}, [1, 2], "text", 3.5, None, True, {"values": [float("nan")]}]
    out = identity(batch)
    assert len(out) == len(batch)
    assert all(got is value for got, value in zip(out, batch, strict=True))
    assert out is not batch


# --- sensor-features -----------------------------------------------------------------------------


def test_sensor_features_matches_per_record_reference_on_mixed_batch() -> None:
    batch = make_sensor_batch(seed=20240601, count=400)
    out = sensor_features(batch)
    assert len(out) == len(batch)
    for got, record in zip(out, batch, strict=True):
        assert_sensor_matches(got, reference_sensor(record))
    # The batch is varied enough for the comparison to mean something.
    assert len({record["n"] for record in out}) > 10
    assert any(record["anomaly"] for record in out)
    assert not all(record["anomaly"] for record in out)
    assert any("seq" in record for record in out)
    assert any("seq" not in record for record in out)


def test_sensor_features_output_is_plain_json() -> None:
    batch = make_sensor_batch(seed=7, count=60)
    out = sensor_features(batch)
    # No OPT_SERIALIZE_NUMPY: the outputs must be plain Python values.
    assert orjson.loads(orjson.dumps(out)) == out


def test_sensor_features_known_spectrum() -> None:
    t = np.arange(64)
    x = (
        3.0 * np.sin(2 * np.pi * 5 * t / 64)
        + 2.0 * np.cos(2 * np.pi * 12 * t / 64)
        + 1.0 * np.sin(2 * np.pi * 3 * t / 64)
        + 10.0
    )
    (got,) = sensor_features([{"sensor_id": "s", "ts": 0.0, "values": x.tolist()}])
    assert got["peak_bins"] == [5, 12, 3]
    assert got["mean"] == pytest.approx(10.0)
    assert got["n"] == 64


@pytest.mark.parametrize(
    ("n", "expected_peaks"), [(1, 0), (2, 1), (3, 1), (4, 2), (5, 2), (6, 3), (9, 3)]
)
def test_sensor_features_short_series_have_fewer_peak_bins(n: int, expected_peaks: int) -> None:
    values = [float((i * 7919) % 13) for i in range(n)]
    record = {"sensor_id": "s", "ts": 1.0, "values": values}
    (got,) = sensor_features([record])
    assert len(got["peak_bins"]) == expected_peaks
    assert_sensor_matches(got, reference_sensor(record))


def test_sensor_features_constant_values_have_zero_zscore() -> None:
    (got,) = sensor_features([{"sensor_id": "s", "ts": 3, "values": [2.5] * 16}])
    assert got["std"] == 0.0
    assert got["zscore"] == 0.0
    assert got["anomaly"] is False
    assert got["peak_bins"] == [1, 2, 3]  # all magnitudes are 0: ties go to the lowest bins
    assert got["min"] == got["max"] == got["mean"] == 2.5


def test_sensor_features_flags_a_spike_as_anomaly() -> None:
    values = [0.0] * 99 + [100.0]
    (got,) = sensor_features([{"sensor_id": "s", "ts": 3, "values": values}])
    # mean 1, population std sqrt(99): zscore (100 - 1) / sqrt(99) = sqrt(99)
    assert got["zscore"] == pytest.approx(math.sqrt(99))
    assert got["anomaly"] is True
    (calm,) = sensor_features([{"sensor_id": "s", "ts": 3, "values": [0.0] * 50 + [1.0] * 50}])
    assert calm["zscore"] == pytest.approx(1.0)
    assert calm["anomaly"] is False
    (low,) = sensor_features([{"sensor_id": "s", "ts": 3, "values": [1.0] * 99 + [-99.0]}])
    assert low["zscore"] == pytest.approx(-math.sqrt(99))
    assert low["anomaly"] is True


def test_sensor_features_accepts_numpy_scalars_from_python_callers() -> None:
    record = {
        "sensor_id": "np",
        "ts": np.float64(12.5),
        "seq": np.int64(9),
        "values": [np.float64(1.0), np.int32(2), 3, np.float32(4.5)],
    }
    (got,) = sensor_features([record])
    assert got["seq"] == 9
    assert type(got["seq"]) is int
    assert type(got["ts"]) is float
    assert got["mean"] == pytest.approx(2.625)
    orjson.dumps(got)


def test_sensor_features_accepts_exactly_max_values() -> None:
    rng = np.random.default_rng(3)
    record = {"sensor_id": "big", "ts": 1.0, "values": rng.normal(size=MAX_VALUES).tolist()}
    out = sensor_features([record, GOOD_SENSOR_A])
    assert_sensor_matches(out[0], reference_sensor(record))
    assert_sensor_matches(out[1], reference_sensor(GOOD_SENSOR_A))


SENSOR_BAD_CASES: list[tuple[str, Any, str, str]] = [
    ("array", [1, 2, 3], "schema", "object"),
    ("null", None, "schema", "object"),
    ("string", "values", "schema", "object"),
    ("number", 12, "schema", "object"),
    ("missing values", {"sensor_id": "s", "ts": 1.0}, "schema", "values"),
    ("missing sensor_id", {"ts": 1.0, "values": [1.0]}, "schema", "sensor_id"),
    ("missing ts", {"sensor_id": "s", "values": [1.0]}, "schema", "ts"),
    ("int sensor_id", {"sensor_id": 5, "ts": 1.0, "values": [1.0]}, "schema", "sensor_id"),
    ("null sensor_id", {"sensor_id": None, "ts": 1.0, "values": [1.0]}, "schema", "sensor_id"),
    ("string ts", {"sensor_id": "s", "ts": "1.0", "values": [1.0]}, "schema", "ts"),
    ("bool ts", {"sensor_id": "s", "ts": True, "values": [1.0]}, "schema", "ts"),
    ("null ts", {"sensor_id": "s", "ts": None, "values": [1.0]}, "schema", "ts"),
    ("nan ts", {"sensor_id": "s", "ts": math.nan, "values": [1.0]}, "invalid_value", "ts"),
    ("inf ts", {"sensor_id": "s", "ts": math.inf, "values": [1.0]}, "invalid_value", "ts"),
    ("huge int ts", {"sensor_id": "s", "ts": 10**400, "values": [1.0]}, "invalid_value", "ts"),
    ("string seq", {"sensor_id": "s", "ts": 1, "seq": "7", "values": [1.0]}, "schema", "seq"),
    ("bool seq", {"sensor_id": "s", "ts": 1, "seq": True, "values": [1.0]}, "schema", "seq"),
    ("float seq", {"sensor_id": "s", "ts": 1, "seq": 1.5, "values": [1.0]}, "schema", "seq"),
    ("string values", {"sensor_id": "s", "ts": 1, "values": "1,2"}, "schema", "values"),
    ("object values", {"sensor_id": "s", "ts": 1, "values": {"a": 1}}, "schema", "values"),
    ("number values", {"sensor_id": "s", "ts": 1, "values": 4.0}, "schema", "values"),
    ("empty values", {"sensor_id": "s", "ts": 1, "values": []}, "schema", "empty"),
    ("string in values", {"sensor_id": "s", "ts": 1, "values": [1.0, "2"]}, "schema", "values[1]"),
    ("bool in values", {"sensor_id": "s", "ts": 1, "values": [1.0, True]}, "schema", "values[1]"),
    ("null in values", {"sensor_id": "s", "ts": 1, "values": [None, 1.0]}, "schema", "values[0]"),
    ("nested values", {"sensor_id": "s", "ts": 1, "values": [[1.0], [2.0]]}, "schema", "values[0]"),
    (
        "nan in values",
        {"sensor_id": "s", "ts": 1, "values": [1.0, math.nan]},
        "invalid_value",
        "[1]",
    ),
    ("inf in values", {"sensor_id": "s", "ts": 1, "values": [math.inf]}, "invalid_value", "[0]"),
    ("-inf", {"sensor_id": "s", "ts": 1, "values": [1.0, 2.0, -math.inf]}, "invalid_value", "[2]"),
    ("huge int", {"sensor_id": "s", "ts": 1, "values": [1, 10**400]}, "invalid_value", "[1]"),
    ("overflow", {"sensor_id": "s", "ts": 1, "values": [1.7e308] * 4}, "invalid_value", "overflow"),
    (
        "too long",
        {"sensor_id": "s", "ts": 1, "values": [0.0] * (MAX_VALUES + 1)},
        "limit",
        "100000",
    ),
]


@pytest.mark.parametrize(
    ("record", "reason", "fragment"),
    [
        pytest.param(record, reason, fragment, id=name)
        for name, record, reason, fragment in SENSOR_BAD_CASES
    ],
)
def test_sensor_features_bad_record_is_isolated(record: Any, reason: str, fragment: str) -> None:
    out = sensor_features([GOOD_SENSOR_A, record, GOOD_SENSOR_B, GOOD_SENSOR_A])
    assert len(out) == 4
    bad = out[1]
    assert isinstance(bad, BadRecord), bad
    assert bad.reason == reason
    assert fragment in bad.message
    assert 0 < len(bad.message) <= 500
    assert "\n" not in bad.message
    assert_sensor_matches(out[0], reference_sensor(GOOD_SENSOR_A))
    assert_sensor_matches(out[2], reference_sensor(GOOD_SENSOR_B))
    assert_sensor_matches(out[3], reference_sensor(GOOD_SENSOR_A))


def test_sensor_features_bad_values_inside_a_group_of_the_same_length() -> None:
    """Bad records whose values have the group's length must not spoil the stacked group."""
    batch = [rec for rec in make_sensor_batch(seed=11, count=300) if len(rec["values"]) == 8][:40]
    assert len(batch) >= 20
    poisons: dict[int, tuple[list[Any], str]] = {
        3: ([1.0] * 7 + [True], "schema"),
        9: ([1.0] * 7 + ["x"], "schema"),
        10: ([math.nan] + [1.0] * 7, "invalid_value"),
        15: ([1.0] * 7 + [10**400], "invalid_value"),
        16: ([1.0] * 7 + [None], "schema"),
        19: ([1.7e308] * 8, "invalid_value"),
    }
    for position, (values, _) in poisons.items():
        batch[position] = {"sensor_id": "poison", "ts": 1.0, "values": values}
    out = sensor_features(batch)
    assert len(out) == len(batch)
    for i, (got, record) in enumerate(zip(out, batch, strict=True)):
        if i in poisons:
            assert isinstance(got, BadRecord)
            assert got.reason == poisons[i][1]
        else:
            assert_sensor_matches(got, reference_sensor(record))


def test_sensor_features_empty_batch() -> None:
    assert sensor_features([]) == []


# --- matrix-inverse ------------------------------------------------------------------------------


def test_matrix_inverse_matches_per_record_reference_on_mixed_batch() -> None:
    rng = np.random.default_rng(1234)
    sizes = [1, 2, 3, 4, 7, 16, 33]
    batch: list[Any] = []
    for i in range(150):
        n = int(rng.choice(sizes))
        matrix = well_conditioned(rng, n) if i % 3 else rng.normal(size=(n, n)).tolist()
        record_id: str | int = i if i % 2 else f"m-{i}"
        batch.append(json_roundtrip({"id": record_id, "matrix": matrix}))
    out = matrix_inverse(batch)
    assert len(out) == len(batch)
    compared = 0
    for got, record in zip(out, batch, strict=True):
        expected = reference_matrix(record)
        if expected is None:
            assert isinstance(got, BadRecord)
            assert got.reason == "singular_matrix"
        else:
            assert_matrix_matches(got, expected)
            compared += 1
    assert compared >= 140
    assert orjson.loads(orjson.dumps(out[:3])) == out[:3]


def test_matrix_inverse_singular_matrices_in_the_middle_of_a_batch() -> None:
    rng = np.random.default_rng(99)
    singular_2 = [[1.0, 2.0], [2.0, 4.0]]
    zeros_2 = [[0.0, 0.0], [0.0, 0.0]]
    nearly_singular_2 = [[1.0, 1.0], [1.0, 1.0 + 2.0**-52]]  # condition number ~1.8e16
    zeros_3 = [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
    rank_2_of_3 = [[1, 2, 3], [4, 5, 6], [5, 7, 9]]
    matrices: list[Any] = [
        well_conditioned(rng, 2),
        singular_2,
        well_conditioned(rng, 2),
        zeros_2,
        well_conditioned(rng, 3),
        nearly_singular_2,
        zeros_3,
        well_conditioned(rng, 3),
        rank_2_of_3,
        well_conditioned(rng, 2),
    ]
    # The point of the test: inverting the stack in one call would fail for everyone.
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.inv(np.array([matrices[0], singular_2, matrices[2]]))

    batch = [{"id": i, "matrix": m} for i, m in enumerate(matrices)]
    out = matrix_inverse(batch)
    assert len(out) == len(batch)
    singular = {1, 3, 5, 6, 8}
    for i, (got, record) in enumerate(zip(out, batch, strict=True)):
        if i in singular:
            assert isinstance(got, BadRecord), i
            assert got.reason == "singular_matrix"
            assert "singular" in got.message
        else:
            expected = reference_matrix(record)
            assert expected is not None
            assert_matrix_matches(got, expected)


def test_matrix_inverse_one_by_one() -> None:
    (got,) = matrix_inverse([{"id": "one", "matrix": [[4]]}])
    assert got == {"id": "one", "inverse": [[0.25]], "determinant": 4.0, "condition": 1.0}


def test_matrix_inverse_identity_of_maximum_size() -> None:
    n = MAX_MATRIX_SIZE
    (got,) = matrix_inverse([{"id": 1, "matrix": np.eye(n).tolist()}])
    assert np.array_equal(np.array(got["inverse"]), np.eye(n))
    assert got["determinant"] == 1.0
    assert got["condition"] == 1.0


def test_matrix_inverse_numpy_id_becomes_int() -> None:
    (got,) = matrix_inverse([{"id": np.int64(5), "matrix": [[2.0, 0.0], [0.0, 4.0]]}])
    assert got["id"] == 5
    assert type(got["id"]) is int
    np.testing.assert_allclose(got["inverse"], [[0.5, 0.0], [0.0, 0.25]])


def test_matrix_inverse_determinant_overflow_is_null_not_inf() -> None:
    (got,) = matrix_inverse([{"id": 1, "matrix": [[1e200, 0.0], [0.0, 1e200]]}])
    assert got["determinant"] is None
    np.testing.assert_allclose(got["inverse"], [[1e-200, 0.0], [0.0, 1e-200]])
    assert got["condition"] == pytest.approx(1.0)


def test_matrix_inverse_inverse_overflow_is_invalid_value() -> None:
    out = matrix_inverse([{"id": 1, "matrix": [[1e-310]]}, {"id": 2, "matrix": [[2.0]]}])
    assert isinstance(out[0], BadRecord)
    assert out[0].reason == "invalid_value"
    assert out[1]["inverse"] == [[0.5]]


def _square(n: int) -> list[list[float]]:
    return [[float(i == j) for j in range(n)] for i in range(n)]


MATRIX_BAD_CASES: list[tuple[str, Any, str, str]] = [
    ("array", [[1.0]], "schema", "object"),
    ("null", None, "schema", "object"),
    ("missing id", {"matrix": [[1.0]]}, "schema", "id"),
    ("missing matrix", {"id": 1}, "schema", "matrix"),
    ("bool id", {"id": True, "matrix": [[1.0]]}, "schema", "id"),
    ("float id", {"id": 1.5, "matrix": [[1.0]]}, "schema", "id"),
    ("null id", {"id": None, "matrix": [[1.0]]}, "schema", "id"),
    ("list id", {"id": [1], "matrix": [[1.0]]}, "schema", "id"),
    ("string matrix", {"id": 1, "matrix": "[[1]]"}, "schema", "matrix"),
    ("number matrix", {"id": 1, "matrix": 3.0}, "schema", "matrix"),
    ("empty matrix", {"id": 1, "matrix": []}, "schema", "empty"),
    ("empty row", {"id": 1, "matrix": [[]]}, "schema", "square"),
    ("ragged", {"id": 1, "matrix": [[1.0, 2.0], [3.0]]}, "schema", "square"),
    ("not square", {"id": 1, "matrix": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}, "schema", "square"),
    ("flat", {"id": 1, "matrix": [1.0, 2.0]}, "schema", "matrix[0]"),
    ("string entry", {"id": 1, "matrix": [[1.0, "2"], [3.0, 4.0]]}, "schema", "matrix[0][1]"),
    ("bool entry", {"id": 1, "matrix": [[1.0, 2.0], [False, 4.0]]}, "schema", "matrix[1][0]"),
    ("null entry", {"id": 1, "matrix": [[1.0, 2.0], [3.0, None]]}, "schema", "matrix[1][1]"),
    ("nested", {"id": 1, "matrix": [[[1.0], 2.0], [3.0, 4.0]]}, "schema", "matrix[0][0]"),
    ("nan", {"id": 1, "matrix": [[1.0, 2.0], [math.nan, 4.0]]}, "invalid_value", "[1][0]"),
    ("inf", {"id": 1, "matrix": [[math.inf, 2.0], [3.0, 4.0]]}, "invalid_value", "[0][0]"),
    ("huge int", {"id": 1, "matrix": [[1, 2], [3, 10**400]]}, "invalid_value", "[1][1]"),
    ("too big", {"id": 1, "matrix": _square(MAX_MATRIX_SIZE + 1)}, "limit", "512"),
]


@pytest.mark.parametrize(
    ("record", "reason", "fragment"),
    [
        pytest.param(record, reason, fragment, id=name)
        for name, record, reason, fragment in MATRIX_BAD_CASES
    ],
)
def test_matrix_inverse_bad_record_is_isolated(record: Any, reason: str, fragment: str) -> None:
    good_2 = {"id": "g2", "matrix": [[2.0, 1.0], [1.0, 3.0]]}
    good_1 = {"id": 7, "matrix": [[5.0]]}
    out = matrix_inverse([good_2, record, good_1, good_2])
    assert len(out) == 4
    bad = out[1]
    assert isinstance(bad, BadRecord), bad
    assert bad.reason == reason
    assert fragment in bad.message
    assert 0 < len(bad.message) <= 500
    for index, good in ((0, good_2), (2, good_1), (3, good_2)):
        expected = reference_matrix(good)
        assert expected is not None
        assert_matrix_matches(out[index], expected)


@HYPOTHESIS
@given(
    st.lists(
        st.integers(min_value=1, max_value=4).flatmap(
            lambda n: st.lists(
                st.lists(st.integers(-3, 3), min_size=n, max_size=n), min_size=n, max_size=n
            )
        ),
        max_size=12,
    )
)
def test_matrix_inverse_small_integer_matrices_property(matrices: list[list[list[int]]]) -> None:
    """Small integer matrices are often singular: each must be judged on its own."""
    batch = [{"id": i, "matrix": m} for i, m in enumerate(matrices)]
    out = matrix_inverse(batch)
    assert len(out) == len(batch)
    for got, record in zip(out, batch, strict=True):
        expected = reference_matrix(record)
        if expected is None:
            assert isinstance(got, BadRecord)
            assert got.reason == "singular_matrix"
        else:
            assert_matrix_matches(got, expected)
            a = np.array(record["matrix"], dtype=np.float64)
            np.testing.assert_allclose(a @ np.array(got["inverse"]), np.eye(len(a)), atol=1e-9)


# --- sensor-features properties ------------------------------------------------------------------

_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
_valid_sensor = st.fixed_dictionaries(
    {
        "sensor_id": st.text(max_size=5),
        "ts": st.one_of(_finite, st.integers(0, 2**40)),
        "values": st.lists(st.one_of(_finite, st.integers(-1000, 1000)), min_size=1, max_size=40),
    },
    optional={"seq": st.integers(0, 2**62)},
)
_junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), _finite, st.text(max_size=3)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
_almost_sensor = st.fixed_dictionaries(
    {"sensor_id": st.one_of(st.text(max_size=3), _junk), "ts": _junk, "values": _junk}
)


@HYPOTHESIS
@given(st.lists(st.one_of(_valid_sensor, _valid_sensor, _almost_sensor, _junk), max_size=25))
def test_sensor_features_property(batch: list[Any]) -> None:
    out = sensor_features(batch)
    assert len(out) == len(batch)
    for got, record in zip(out, batch, strict=True):
        alone = sensor_features([record])[0]
        if isinstance(got, BadRecord):
            assert isinstance(alone, BadRecord)
            assert (got.reason, got.message) == (alone.reason, alone.message)
            assert got.reason in {"schema", "invalid_value"}
            continue
        orjson.dumps(got)
        expected = reference_sensor(record)
        x = np.asarray(record["values"], dtype=np.float64)
        scale = max(1.0, float(np.max(np.abs(x))))
        assert list(got) == list(expected)
        for key in ("sensor_id", "ts", "n"):
            assert got[key] == expected[key]
        for key in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-9, atol=1e-9 * scale)
        assert got["anomaly"] == (abs(got["zscore"]) > 3.0)
        assert abs(got["zscore"]) <= math.sqrt(len(x)) + 1e-9
        if expected["std"] > 1e-6 * scale:
            np.testing.assert_allclose(got["zscore"], expected["zscore"], rtol=1e-6, atol=1e-9)
        # Peak bins: the right number of distinct non-DC bins carrying the top magnitudes.
        magnitudes = np.abs(np.fft.rfft(x - np.mean(x)))
        peaks = got["peak_bins"]
        assert len(peaks) == min(3, len(magnitudes) - 1)
        assert len(set(peaks)) == len(peaks)
        assert all(1 <= b < len(magnitudes) for b in peaks)
        top = np.sort(magnitudes[1:])[::-1][: len(peaks)]
        tolerance = 1e-9 * scale * len(x)
        np.testing.assert_allclose(magnitudes[peaks], top, rtol=1e-9, atol=tolerance)


# --- record_transform ----------------------------------------------------------------------------


CUSTOM_BAD = BadRecord("custom", "zero is not allowed")


def picky(record: Any) -> Any:
    """A per-record function with several ways to fail."""
    if record == 0:
        raise CUSTOM_BAD
    if record < 0:
        raise ValueError("negative")
    return record * 10


def test_record_transform_isolates_failures() -> None:
    batch_fn = record_transform(picky)
    out = batch_fn([1, -1, 0, 2, "x"])
    assert len(out) == 5
    assert out[0] == 10
    assert isinstance(out[1], BadRecord)
    assert out[1].reason == "transform_error"
    assert out[1].message == "ValueError: negative"
    assert out[2] is CUSTOM_BAD
    assert out[3] == 20
    assert isinstance(out[4], BadRecord)
    assert out[4].reason == "transform_error"
    assert out[4].message.startswith("TypeError: ")
    assert batch_fn([]) == []
    assert batch_fn.__name__ == "picky"
    assert batch_fn.__doc__ == picky.__doc__


def test_record_transform_bounds_long_messages() -> None:
    def shout(record: Any) -> Any:
        raise RuntimeError("x" * 5000)

    (bad,) = record_transform(shout)([1])
    assert isinstance(bad, BadRecord)
    assert bad.message.startswith("RuntimeError: xxx")
    assert len(bad.message) <= 500


def test_record_transform_lets_base_exceptions_through() -> None:
    class Stop(BaseException):
        pass

    def stop(record: Any) -> Any:
        raise Stop

    with pytest.raises(Stop):
        record_transform(stop)([1])


# --- resolve / registry --------------------------------------------------------------------------


BUILTIN_NAMES = ["identity", "matrix-inverse", "sensor-features"]


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("identity", identity),
        ("sensor-features", sensor_features),
        ("matrix-inverse", matrix_inverse),
    ],
)
def test_resolve_builtin_by_name(name: str, fn: Any) -> None:
    transform = resolve(name)
    assert isinstance(transform, Transform)
    assert transform.name == name
    assert transform.fn is fn
    assert transform.description
    assert resolve(f"  {name} ") is transform


def test_resolve_import_path_batch_function() -> None:
    spec = f"{__name__}:double"
    transform = resolve(spec)
    assert transform.name == spec
    assert transform.description == "Double every record."
    assert transform.fn is double
    assert transform.fn([1, 2.5, "a"]) == [2, 5.0, "aa"]


def test_resolve_import_path_per_record_function_is_wrapped() -> None:
    transform = resolve(f"{__name__}:halve")
    assert transform.fn is not halve
    assert transform.description == "Halve one record (a per-record function)."
    out = transform.fn([4, 0, "x", 3])
    assert out[0] == 2.0
    assert isinstance(out[1], BadRecord)
    assert out[1].reason == "transform_error"
    assert out[1].message == "ZeroDivisionError: refusing to halve zero"
    assert isinstance(out[2], BadRecord)
    assert out[2].message.startswith("TypeError")
    assert out[3] == 1.5


def test_resolve_import_path_without_docstring_and_dotted_attribute() -> None:
    assert resolve(f"{__name__}:undocumented").description == ""
    negate = resolve(f"{__name__}:Holder.negate")
    assert negate.description == "Negate every record."
    assert negate.fn([1, -2]) == [-1, 2]


def test_resolve_import_path_from_the_standard_library() -> None:
    transform = resolve("builtins:list")  # list(records) is a valid batch function
    assert transform.fn([1, 2]) == [1, 2]


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("no-such-transform", ["'no-such-transform'", *BUILTIN_NAMES, "package.module:function"]),
        ("", ["unknown transform", *BUILTIN_NAMES]),
        ("tests.unit.no_such_module_xyz:fn", ["cannot import", "tests.unit.no_such_module_xyz"]),
        ("no_such_package_xyz.mod:fn", ["cannot import", "ModuleNotFoundError"]),
        (f"{__name__}:no_such_function", ["no attribute", "no_such_function"]),
        (f"{__name__}:Holder.missing", ["no attribute", "Holder.missing"]),
        (f"{__name__}:NOT_CALLABLE", ["not a callable", "int"]),
        (f"{__name__}:", ["package.module:function"]),
        (":double", ["package.module:function"]),
    ],
)
def test_resolve_unknown_spec_raises_helpful_error(spec: str, fragments: list[str]) -> None:
    with pytest.raises(UnknownTransformError) as caught:
        resolve(spec)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert isinstance(caught.value, ValueError)


def test_register_rejects_duplicates_and_bad_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("identity", "again")
    with pytest.raises(ValueError, match="invalid transform name"):
        register("pkg.mod:fn", "colons are for import paths")
    with pytest.raises(ValueError, match="invalid transform name"):
        register("", "empty")


def test_register_adds_to_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transforms_base, "_REGISTRY", dict(transforms_base._REGISTRY))

    @register("test-reverse", "Reverse every list.\nIgnored second line.")
    def reverse(records: Sequence[Any]) -> list[Any]:
        return [list(reversed(r)) for r in records]

    transform = resolve("test-reverse")
    assert transform.fn is reverse
    assert transform.description == "Reverse every list."
    assert [t.name for t in available()] == sorted([*BUILTIN_NAMES, "test-reverse"])
    with pytest.raises(ValueError, match="already registered"):
        register("test-reverse", "twice")


def test_available_lists_the_builtins() -> None:
    listed = available()
    assert [t.name for t in listed] == BUILTIN_NAMES
    for transform in listed:
        assert isinstance(transform, Transform)
        assert transform.description.strip()
        assert "\n" not in transform.description
        assert transform.fn([]) == []


def test_package_exports_the_contract() -> None:
    for name in (
        "BadRecord",
        "Transform",
        "BatchFn",
        "register",
        "resolve",
        "available",
        "record_transform",
        "UnknownTransformError",
    ):
        assert hasattr(transforms, name), name
        assert name in transforms.__all__


def test_transform_is_frozen_with_slots() -> None:
    transform = resolve("identity")
    with pytest.raises(dataclasses.FrozenInstanceError):
        transform.name = "other"  # type: ignore[misc]
    assert not hasattr(transform, "__dict__")


# --- BadRecord -----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_bad_record_pickles(protocol: int) -> None:
    original = BadRecord("singular_matrix", "matrix is singular")
    restored = pickle.loads(pickle.dumps([original, 1], protocol=protocol))[0]  # noqa: S301
    assert type(restored) is BadRecord
    assert restored.reason == "singular_matrix"
    assert restored.message == "matrix is singular"
    assert str(restored) == str(original) == "singular_matrix: matrix is singular"


def test_bad_record_from_a_batch_pickles() -> None:
    (bad,) = sensor_features([{"sensor_id": "s", "ts": 1.0, "values": []}])
    restored = pickle.loads(pickle.dumps(bad))  # noqa: S301
    assert (restored.reason, restored.message) == (bad.reason, bad.message)


def test_bad_record_bounds_the_message_and_is_an_exception() -> None:
    bad = BadRecord("schema", "y" * 2000)
    assert len(bad.message) <= 500
    assert bad.message.startswith("yyy")
    assert bad.message.endswith("...")
    assert isinstance(bad, Exception)
    with pytest.raises(BadRecord) as caught:
        raise bad
    assert caught.value.reason == "schema"
    assert BadRecord("schema", "short").message == "short"


# --- the record checks and the message bound, decided once ------------------------------------


def test_record_checks_name_each_reason() -> None:
    assert check_size(b"{}", 2) == b"{}"
    cases: list[tuple[bytes | None, Reason]] = [
        (None, Reason.EMPTY),
        (b"", Reason.EMPTY),
        (b"123", Reason.TOO_LARGE),
        (b"{", Reason.INVALID_JSON),
        (b"\xff", Reason.INVALID_UTF8),
    ]
    for value, reason in cases:
        with pytest.raises(BadRecord) as caught:
            decode_json(value, 2)
        assert caught.value.reason == reason
    assert load_json(b'{"a": 1}') == {"a": 1}


def test_one_bound_for_every_message() -> None:
    assert bounded("short") == "short"
    cut = bounded("x" * (MAX_MESSAGE_CHARS + 1))
    assert len(cut) == MAX_MESSAGE_CHARS
    assert cut.endswith("...")
    assert bounded("abcdef", 5) == "ab..."
    assert BadRecord("schema", "y" * 1000).message == bounded("y" * 1000)


def test_only_a_number_field_declares_a_minimum() -> None:
    assert RecordField("n", "long", minimum=1).minimum == 1
    with pytest.raises(ValueError, match="only a number field"):
        RecordField("name", "string", minimum=0)
