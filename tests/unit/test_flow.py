"""InFlight caps and split_batches."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.flow import InFlight, split_batches

# --- InFlight -------------------------------------------------------------------------------


def test_inflight_starts_empty_with_room_for_the_record_cap() -> None:
    flow = InFlight(max_records=10, max_bytes=1000)
    assert not flow.full
    assert flow.room == 10
    assert (flow.records, flow.bytes) == (0, 0)


def test_inflight_full_at_the_record_cap() -> None:
    flow = InFlight(max_records=10, max_bytes=1000)
    flow.add(9, 100)
    assert not flow.full
    assert flow.room == 1
    flow.add(1, 10)
    assert flow.full
    assert flow.room == 0
    flow.add(5, 10)  # one fetch may overshoot
    assert flow.full
    assert flow.room == 0
    flow.remove(5, 10)
    assert flow.full  # exactly at the cap is still full
    flow.remove(1, 0)
    assert not flow.full
    assert flow.room == 1


def test_inflight_full_at_the_byte_cap() -> None:
    flow = InFlight(max_records=10, max_bytes=1000)
    flow.add(2, 999)
    assert not flow.full
    assert flow.room == 8
    flow.add(1, 1)
    assert flow.full  # bytes at the cap, records well below it
    assert flow.room == 0
    flow.add(1, 5000)  # a large fetch overshoots the byte cap
    assert flow.full
    flow.remove(1, 5000)
    flow.remove(1, 1)
    assert not flow.full
    assert flow.room == 8
    assert (flow.records, flow.bytes) == (2, 999)


def test_inflight_negative_records_raise() -> None:
    flow = InFlight(max_records=10, max_bytes=1000)
    flow.add(1, 10)
    with pytest.raises(RuntimeError, match="negative"):
        flow.remove(2, 10)


def test_inflight_negative_bytes_raise() -> None:
    flow = InFlight(max_records=10, max_bytes=1000)
    flow.add(1, 10)
    with pytest.raises(RuntimeError, match="negative"):
        flow.remove(1, 11)


@settings(max_examples=200, deadline=None)
@given(
    caps=st.tuples(st.integers(1, 50), st.integers(1, 5000)),
    moves=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 2000)), max_size=30),
)
def test_inflight_room_and_full_agree_with_the_counts(
    caps: tuple[int, int], moves: list[tuple[int, int]]
) -> None:
    max_records, max_bytes = caps
    flow = InFlight(max_records, max_bytes)
    records = nbytes = 0
    for count, size in moves:
        flow.add(count, size)
        records += count
        nbytes += size
        full = records >= max_records or nbytes >= max_bytes
        assert flow.full is full
        assert flow.room == (0 if full else max_records - records)
        assert 0 <= flow.room <= max_records
    for count, size in reversed(moves):
        flow.remove(count, size)
    assert (flow.records, flow.bytes) == (0, 0)
    assert flow.room == max_records


# --- split_batches --------------------------------------------------------------------------


def _len(record: bytes) -> int:
    return len(record)


def test_split_batches_empty() -> None:
    assert split_batches([], 10, 100, _len) == []


def test_split_batches_by_record_cap() -> None:
    records = [b"a"] * 7
    batches = split_batches(records, 3, 1000, _len)
    assert [len(b) for b, _ in batches] == [3, 3, 1]
    assert [n for _, n in batches] == [3, 3, 1]


def test_split_batches_by_byte_cap() -> None:
    records = [b"x" * 40, b"y" * 40, b"z" * 30, b"w" * 1]
    batches = split_batches(records, 100, 100, _len)
    # 40 + 40 = 80; + 30 would be 110 > 100: cut. 30 + 1 fits.
    assert batches == [([b"x" * 40, b"y" * 40], 80), ([b"z" * 30, b"w"], 31)]


def test_split_batches_exactly_at_the_byte_cap_is_one_batch() -> None:
    records = [b"a" * 60, b"b" * 40]
    assert split_batches(records, 10, 100, _len) == [(records, 100)]


def test_split_batches_oversized_record_gets_its_own_batch() -> None:
    big = b"B" * 500
    records = [b"a" * 10, big, b"c" * 10, big, big]
    batches = split_batches(records, 100, 100, _len)
    assert batches == [
        ([b"a" * 10], 10),
        ([big], 500),
        ([b"c" * 10], 10),
        ([big], 500),
        ([big], 500),
    ]


def test_split_batches_uses_the_size_function_once_per_record() -> None:
    calls: list[str] = []

    def size(record: str) -> int:
        calls.append(record)
        return 10

    records = ["a", "b", "c", "d", "e"]
    batches = split_batches(records, 2, 1000, size)
    assert calls == records
    assert batches == [(["a", "b"], 20), (["c", "d"], 20), (["e"], 10)]


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=300), max_size=80),
    max_records=st.integers(min_value=1, max_value=20),
    max_bytes=st.integers(min_value=1, max_value=600),
)
def test_split_batches_properties(sizes: list[int], max_records: int, max_bytes: int) -> None:
    # Records are (position, size) so that order and identity are both checked.
    records = list(enumerate(sizes))
    batches = split_batches(records, max_records, max_bytes, lambda r: r[1])

    # Order preserved, nothing lost or repeated.
    assert [r for batch, _ in batches for r in batch] == records
    for index, (batch, nbytes) in enumerate(batches):
        assert batch, "no empty batches"
        # Byte sum right.
        assert nbytes == sum(size for _, size in batch)
        # Caps respected; only a lone record may exceed the byte cap.
        assert len(batch) <= max_records
        if nbytes > max_bytes:
            assert len(batch) == 1
        # Greedy: a batch is only cut when the next record would not fit.
        if index + 1 < len(batches):
            following = batches[index + 1][0][0]
            assert len(batch) == max_records or nbytes + following[1] > max_bytes
    # Every record larger than the cap is alone in its batch.
    for batch, _ in batches:
        if any(size > max_bytes for _, size in batch):
            assert len(batch) == 1
