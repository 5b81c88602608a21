"""The batch histogram counts exactly as per-value observe does."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from stream.metrics import BatchHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)


def samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(name) and not s.name.endswith("_created")
    }


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=0, max_value=100, allow_nan=False),
            st.sampled_from(BUCKETS),  # exactly on a bound: counted in that bucket (le)
        ),
        max_size=50,
    )
)
def test_observe_many_equals_observe_one_by_one(values: list[float]) -> None:
    one, many = CollectorRegistry(), CollectorRegistry()
    single = Histogram("h", "h", buckets=BUCKETS, registry=one)
    batch = BatchHistogram("h", "h", buckets=BUCKETS, registry=many)
    for value in values:
        single.observe(value)
    batch.observe_many(np.array(values, dtype=float))
    want, got = samples(one, "h"), samples(many, "h")
    assert want.keys() == got.keys()
    for key, value in want.items():
        assert got[key] == value or abs(got[key] - value) < 1e-9 * max(1.0, abs(value)), key
