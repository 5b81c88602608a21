"""The commit policy on plain numbers: each rule that makes a commit due, and how long
the lifecycle waits when none does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.engine.policy import CAPS_SHARE, NOTHING, CommitPolicy, Pending

POLICY = CommitPolicy(interval=2.0, idle_interval=0.5, max_records=400, max_bytes=4000)


def pending(
    since: float = 10.0, records: int = 0, nbytes: int = 0, urgent: bool = False
) -> Pending:
    return Pending(since, records, nbytes, urgent)


def test_nothing_pending_is_never_due_and_waits_the_idle_interval() -> None:
    for now in (0.0, 10.0, 1e9):
        assert not POLICY.due(now, NOTHING)
        assert not POLICY.due(now, NOTHING, ending=True)
        assert POLICY.wait(now, NOTHING) == 0.5
    # counts without a time are not pending work
    assert not POLICY.due(100.0, Pending(None, records=400, nbytes=4000, urgent=True))
    assert POLICY.wait(100.0, Pending(None, records=400, urgent=True)) == 0.5


def test_the_interval_makes_a_commit_due_once_the_oldest_work_is_that_old() -> None:
    work = pending(since=10.0, records=1, nbytes=1)
    assert not POLICY.due(11.9, work)
    assert POLICY.wait(11.5, work) == pytest.approx(0.5)
    assert POLICY.wait(10.0, work) == pytest.approx(2.0)
    assert POLICY.due(12.0, work)
    assert POLICY.wait(12.0, work) == 0.0
    assert POLICY.due(50.0, work)
    assert POLICY.wait(50.0, work) == 0.0


def test_a_share_of_the_record_cap_makes_a_commit_due_at_once() -> None:
    share = POLICY.max_records // CAPS_SHARE  # 100
    assert not POLICY.due(10.0, pending(records=share - 1))
    assert POLICY.wait(10.0, pending(records=share - 1)) == pytest.approx(2.0)
    assert POLICY.due(10.0, pending(records=share))
    assert POLICY.wait(10.0, pending(records=share)) == 0.0


def test_a_share_of_the_byte_cap_makes_a_commit_due_at_once() -> None:
    share = POLICY.max_bytes // CAPS_SHARE  # 1000
    assert not POLICY.due(10.0, pending(records=1, nbytes=share - 1))
    assert POLICY.due(10.0, pending(records=1, nbytes=share))
    assert POLICY.wait(10.0, pending(records=1, nbytes=share)) == 0.0


def test_urgent_work_is_due_at_once() -> None:
    work = pending(urgent=True)
    assert POLICY.due(10.0, work)
    assert POLICY.wait(10.0, work) == 0.0
    assert not POLICY.due(10.0, pending(urgent=False))


def test_an_ending_partition_commits_what_it_holds_at_once() -> None:
    work = pending(records=1)
    assert not POLICY.due(10.0, work)
    assert POLICY.due(10.0, work, ending=True)


def test_a_clock_behind_the_work_waits_no_longer_than_the_interval() -> None:
    # work stamped after "now" (another clock read): still a bounded, non-negative wait
    assert POLICY.wait(9.0, pending(since=10.0)) == pytest.approx(3.0)


# Realistic magnitudes: clock readings up to ~11 days of monotonic time, intervals of a
# millisecond or more (an interval below the clock's float resolution would make
# ``since + interval`` round to ``since``: a wait of 0 that is not due).
times = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
ages = st.floats(min_value=-10.0, max_value=2e3, allow_nan=False)
policies = st.builds(
    CommitPolicy,
    interval=st.one_of(st.just(0.0), st.floats(min_value=1e-3, max_value=1e3)),
    idle_interval=st.floats(min_value=0.0, max_value=1e3),
    max_records=st.integers(min_value=1, max_value=10_000),
    max_bytes=st.integers(min_value=1, max_value=10_000_000),
)
pendings = st.builds(
    Pending,
    since=times,
    records=st.integers(min_value=0, max_value=3_000),
    nbytes=st.integers(min_value=0, max_value=3_000_000),
    urgent=st.booleans(),
)


@given(policies, pendings, ages)
def test_wait_is_zero_exactly_when_pending_work_is_due_and_never_negative(
    policy: CommitPolicy, work: Pending, age: float
) -> None:
    assert work.since is not None
    now = work.since + age
    wait = policy.wait(now, work)
    assert wait >= 0.0
    assert (wait == 0.0) == policy.due(now, work)
    if wait > 0.0 and age >= 0.0:
        assert wait <= policy.interval  # never longer than the interval from the work's start


@given(policies, pendings, ages, st.floats(min_value=0.0, max_value=1e3))
def test_once_due_a_commit_stays_due_as_time_passes(
    policy: CommitPolicy, work: Pending, age: float, later: float
) -> None:
    assert work.since is not None
    now = work.since + age
    if policy.due(now, work):
        assert policy.due(now + later, work)
        assert policy.due(now, work, ending=True)


@given(policies, times)
def test_with_nothing_pending_a_partition_looks_again_after_the_idle_interval(
    policy: CommitPolicy, now: float
) -> None:
    assert not policy.due(now, NOTHING, ending=True)
    assert policy.wait(now, NOTHING) == policy.idle_interval
