"""OffsetTracker / PartitionOffsets: never commit past an unfinished record."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.offsets import OffsetTracker, PartitionOffsets, Ticket

# --- the property test ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    offsets: list[int]  # strictly increasing, with gaps
    ranges: list[list[int]]  # consecutive cuts of ``offsets``: one batch each
    order: list[int]  # the order in which the ranges finish (a permutation)
    initial_commit: int | None  # what Kafka had committed when the partition was assigned


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(min_value=2, max_value=60))
    start = draw(st.integers(min_value=0, max_value=10**12))
    gaps = draw(st.lists(st.integers(min_value=1, max_value=7), min_size=n - 1, max_size=n - 1))
    # Not contiguous: at least one hole, as after compaction or a transaction marker.
    hole = draw(st.integers(min_value=0, max_value=n - 2))
    gaps[hole] = max(gaps[hole], 2)
    offsets = [start]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=n - 1), max_size=n - 1)))
    bounds = [0, *cuts, n]
    ranges = [offsets[a:b] for a, b in itertools.pairwise(bounds)]
    order = draw(st.permutations(range(len(ranges))))
    initial_commit = draw(st.none() | st.integers(min_value=0, max_value=start))
    return Scenario(offsets, ranges, list(order), initial_commit)


def _expected_position(ranges: list[list[int]], done: set[int]) -> int | None:
    """Reference model: the end of the longest prefix of finished ranges."""
    position = None
    for index, batch in enumerate(ranges):
        if index not in done:
            break
        position = batch[-1] + 1
    return position


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_never_commits_past_an_unfinished_offset(scenario: Scenario, data: st.DataObject) -> None:
    ranges = scenario.ranges
    tracker: OffsetTracker[str] = OffsetTracker()
    state = tracker.assign("p0", committed=scenario.initial_commit)
    tickets: list[Ticket] = []
    done: set[int] = set()
    committed_history: list[int] = []
    last_committed = scenario.initial_commit

    def track_up_to(index: int) -> None:
        while len(tickets) <= index:
            batch = ranges[len(tickets)]
            ticket = state.track(batch[0], batch[-1], len(batch), float(batch[0]), float(batch[-1]))
            tickets.append(ticket)

    def check() -> None:
        position = state.position
        assert position == _expected_position(ranges, done)
        incomplete = [i for i in range(len(ranges)) if i not in done]
        if position is not None:
            # (a) never past the first offset of the earliest unfinished range
            if incomplete:
                assert position <= ranges[incomplete[0]][0]
            # (b) every offset before the position belongs to a finished range
            for index, batch in enumerate(ranges):
                if batch[0] < position:
                    assert index in done, (index, position)
        if state.committed is not None and incomplete:
            assert state.committed <= ranges[incomplete[0]][0]
        # (c) the committed position never moves backwards
        assert committed_history == sorted(committed_history)
        assert state.committed == last_committed
        # bookkeeping of what is pending
        tracked_open = [i for i in range(len(tickets)) if i not in done]
        assert state.pending_records == sum(len(ranges[i]) for i in tracked_open)
        expected_oldest = float(ranges[tracked_open[0]][0]) if tracked_open else None
        assert state.oldest_pending_timestamp == expected_oldest
        # the oldest record read and not yet committed
        floor = -1 if last_committed is None else last_committed
        not_committed = [i for i in range(len(tickets)) if ranges[i][-1] + 1 > floor]
        expected = float(ranges[not_committed[0]][0]) if not_committed else None
        assert state.oldest_uncommitted_timestamp == expected
        # the newest record of the finished prefix
        prefix = [batch for batch in ranges if batch[0] < (position or -1)]
        assert state.last_finished_timestamp == (float(prefix[-1][-1]) if prefix else None)
        assert state.first_offset == (ranges[0][0] if tickets else None)

    for step, index in enumerate(scenario.order):
        # Batches are read (tracked) ahead of their completion, a few at a time.
        read_ahead = data.draw(st.integers(min_value=0, max_value=3), label=f"read ahead {step}")
        track_up_to(min(len(ranges) - 1, max(index, len(tickets) - 1 + read_ahead)))
        check()
        state.complete(tickets[index])
        done.add(index)
        check()

        if data.draw(st.booleans(), label=f"commit {step}"):
            offered = tracker.committable()
            position = state.position
            can_move = position is not None and (
                last_committed is None or position > last_committed
            )
            if can_move:
                assert offered == {"p0": position}
            else:
                # (e) nothing new: nothing to commit
                assert offered == {}
                assert state.committable() is None
            acknowledged = data.draw(st.booleans(), label=f"acknowledged {step}")
            if offered and acknowledged:
                tracker.mark_committed(offered)
                last_committed = offered["p0"]
                committed_history.append(last_committed)
                # (e) right after a commit there is nothing new to commit
                assert state.committable() is None
                assert tracker.committable() == {}
            check()

        if last_committed is not None and data.draw(st.booleans(), label=f"stale ack {step}"):
            # A late acknowledgement of an older commit must not move the position back.
            tracker.mark_committed({"p0": last_committed - data.draw(st.integers(1, 50))})
            check()

    # (d) all finished: the position is one past the last offset
    end = scenario.offsets[-1] + 1
    assert state.position == end
    assert state.pending_records == 0
    assert state.oldest_pending_timestamp is None
    assert state.last_finished_timestamp == float(scenario.offsets[-1])
    assert not state.pending
    if last_committed is None or last_committed < end:
        assert tracker.committable() == {"p0": end}
        tracker.mark_committed({"p0": end})
    assert state.committed == end
    assert state.committable() is None
    assert tracker.committable() == {}
    assert state.oldest_uncommitted_timestamp is None
    assert not state.uncommitted


# --- plain tests ----------------------------------------------------------------------------


def test_commit_position_skips_offset_gaps() -> None:
    state = PartitionOffsets()
    first = state.track(10, 14, count=3)  # 10, 12, 14: offsets 11 and 13 were compacted away
    second = state.track(20, 20)
    assert state.committable() is None
    state.complete(second)
    assert state.position is None  # 10..14 is unfinished
    assert state.committable() is None
    state.complete(first)
    assert state.position == 21
    assert state.committable() == 21


def test_overlapping_or_backwards_ranges_raise() -> None:
    state = PartitionOffsets()
    ticket = state.track(10, 20)
    with pytest.raises(ValueError, match="overlaps"):
        state.track(15, 25)
    with pytest.raises(ValueError, match="overlaps"):
        state.track(20, 30)  # 20 is already in the first range
    with pytest.raises(ValueError, match="overlaps"):
        state.track(0, 5)  # backwards
    with pytest.raises(ValueError, match="empty"):
        state.track(30, 29)
    state.track(21, 21)  # right after is fine
    assert len(state.pending) == 2

    # Once the ranges are finished and gone from ``pending``, the position still guards.
    state.complete(ticket)
    state.complete(state.pending[0])
    assert state.position == 22
    assert not state.pending
    with pytest.raises(ValueError, match="overlaps"):
        state.track(21, 25)
    state.track(22, 25)


def test_completing_twice_is_harmless() -> None:
    state = PartitionOffsets()
    first = state.track(0, 4, count=5)
    second = state.track(5, 9, count=5)
    state.complete(first)
    state.complete(first)
    assert state.position == 5
    assert state.pending_records == 5
    state.complete(second)
    assert state.position == 10


def test_revoked_partition_ignores_late_completions() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    state = tracker.assign("p0", committed=100)
    ticket = state.track(100, 109, count=10)
    tracker.revoke("p0")
    assert state.closed
    assert tracker.get("p0") is None
    assert tracker.partitions() == []

    state.complete(ticket)  # its batch finished after the partition was taken away
    assert state.position is None
    assert state.committable() is None
    assert tracker.committable() == {}
    tracker.mark_committed({"p0": 110})  # a late commit result for it is ignored too
    assert state.committed == 100

    # Assigned again: a fresh state from the group's committed offset, untouched by the old one.
    again = tracker.assign("p0", committed=100)
    assert again is not state
    assert again.position is None
    assert not again.pending
    assert tracker.committable() == {}
    tracker.revoke("p0")
    tracker.revoke("p0")  # revoking what is not assigned is a no-op
    tracker.revoke("never-assigned")


def test_pending_records_and_oldest_pending_timestamp() -> None:
    state = PartitionOffsets()
    assert state.pending_records == 0
    assert state.oldest_pending_timestamp is None
    a = state.track(0, 9, count=10, timestamp=100.0)
    b = state.track(10, 14, count=5, timestamp=200.0)
    c = state.track(20, 22, count=2, timestamp=300.0)  # 2 records: one offset is a marker
    assert state.pending_records == 17
    assert state.oldest_pending_timestamp == 100.0

    state.complete(b)  # finished out of order: no longer pending, but not committable
    assert state.pending_records == 12
    assert state.oldest_pending_timestamp == 100.0
    assert state.committable() is None

    state.complete(a)
    assert state.pending_records == 2
    assert state.oldest_pending_timestamp == 300.0
    assert state.committable() == 15

    state.complete(c)
    assert state.pending_records == 0
    assert state.oldest_pending_timestamp is None
    assert state.committable() == 23


def test_committed_from_the_group_is_not_offered_again() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    state = tracker.assign("p0", committed=50)
    ticket = state.track(40, 44)  # re-read below the committed offset (reset by hand)
    state.complete(ticket)
    assert state.position == 45
    assert state.committable() is None  # behind what the group already has: never backwards
    later = state.track(50, 59)
    state.complete(later)
    assert tracker.committable() == {"p0": 60}


def test_partitions_are_independent() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    p0, p1, p2 = ("t", 0), ("t", 1), ("t", 2)
    s0 = tracker.assign(p0)
    s1 = tracker.assign(p1, committed=1000)
    s2 = tracker.assign(p2)
    assert tracker.partitions() == [p0, p1, p2]

    t0a = s0.track(0, 9, count=10)
    t0b = s0.track(10, 19, count=10)
    t1 = s1.track(1000, 1004, count=5)
    s2.track(7, 7)  # never finished

    s0.complete(t0b)
    s1.complete(t1)
    assert tracker.committable() == {p1: 1005}  # p0 waits for 0..9; p2 for 7
    s0.complete(t0a)
    assert tracker.committable() == {p0: 20, p1: 1005}

    tracker.mark_committed({p0: 20})
    assert tracker.committable() == {p1: 1005}
    assert s1.committed == 1000
    assert s2.committed is None

    tracker.revoke(p1)
    assert tracker.committable() == {}
    assert tracker.partitions() == [p0, p2]
    assert s0.pending_records == 0
    assert s2.pending_records == 1

    # Ranges of one partition do not constrain another's.
    s2.track(20, 29)
    s0.track(5_000, 5_001)
    assert tracker.get(p0) is s0
    assert tracker.get(p2) is s2


def test_oldest_uncommitted_timestamp_waits_for_the_commit() -> None:
    state = PartitionOffsets()
    a = state.track(0, 9, count=10, timestamp=100.0, last_timestamp=109.0)
    b = state.track(10, 19, count=10, timestamp=110.0, last_timestamp=119.0)
    assert state.first_offset == 0
    assert state.oldest_uncommitted_timestamp == 100.0
    assert state.last_finished_timestamp is None

    state.complete(a)  # finished, but not committed yet: still the oldest uncommitted
    assert state.oldest_pending_timestamp == 110.0
    assert state.oldest_uncommitted_timestamp == 100.0
    assert state.last_finished_timestamp == 109.0

    state.mark_committed(10)
    assert state.oldest_uncommitted_timestamp == 110.0
    state.complete(b)
    assert state.last_finished_timestamp == 119.0
    state.mark_committed(5)  # a stale acknowledgement changes nothing
    assert state.committed == 10
    assert state.oldest_uncommitted_timestamp == 110.0
    state.mark_committed(20)
    assert state.oldest_uncommitted_timestamp is None
    assert state.committable() is None
