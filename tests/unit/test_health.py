"""The stall verdict (stream.engine.health.judge) on plain numbers: a stall is time
without progress since work was waiting, and work moving within its bounds is progress
in hand (issue 20, item 1)."""

from __future__ import annotations

from dataclasses import dataclass

from stream.engine.health import Limits, Work, judge

LIMITS = Limits(stall_timeout=120.0, batch_timeout=60.0, delivery_timeout=120.0)
NOW = 10_000.0


@dataclass(frozen=True)
class Workers:
    busy_since: float | None = None
    last_step: float = 0.0
    isolating: int = 0
    waiting_for_registry: int = 0


def work(
    *,
    lag: int = 5,
    last_progress: float = 0.0,
    last_fetch: float = 0.0,
    waiting_since: float | None = None,
    delivering_since: float | None = None,
) -> Work:
    return Work(lag, last_progress, last_fetch, waiting_since, delivering_since)


def test_idle_with_nothing_waiting_is_alive() -> None:
    verdict = judge(NOW, work(lag=0), Workers(), LIMITS)
    assert verdict.alive
    assert verdict.reason == "alive: idle"


def test_after_a_quiet_spell_the_clock_starts_when_work_began_waiting() -> None:
    """The last batch finished an hour ago; a record arrived 30 s ago and its batch is
    slow: 30 s without progress, not an hour."""
    verdict = judge(NOW, work(waiting_since=NOW - 30), Workers(), LIMITS)
    assert verdict.alive
    assert verdict.stalled_for == 30.0


def test_work_waiting_past_the_stall_timeout_with_nothing_in_hand_is_a_stall() -> None:
    verdict = judge(NOW, work(waiting_since=NOW - 121), Workers(), LIMITS)
    assert not verdict.alive
    assert "no progress for 121s while lagging" in verdict.reason


def test_a_batch_within_its_batch_timeout_is_progress_in_hand() -> None:
    busy = Workers(busy_since=NOW - 59, last_step=NOW - 59)
    verdict = judge(NOW, work(waiting_since=NOW - 500), busy, LIMITS)
    assert verdict.alive
    assert "a batch in the workers for 59s (--batch-timeout 60s)" in verdict.reason
    overrun = Workers(busy_since=NOW - 61, last_step=NOW - 61)
    assert not judge(NOW, work(waiting_since=NOW - 500), overrun, LIMITS).alive


def test_an_isolation_in_progress_is_progress_in_hand_while_it_steps() -> None:
    stepping = Workers(busy_since=NOW - 200, last_step=NOW - 10, isolating=1)
    verdict = judge(NOW, work(waiting_since=NOW - 500), stepping, LIMITS)
    assert verdict.alive
    assert "isolating the record" in verdict.reason
    stuck = Workers(busy_since=NOW - 200, last_step=NOW - 100, isolating=1)
    assert not judge(NOW, work(waiting_since=NOW - 500), stuck, LIMITS).alive


def test_a_registry_outage_is_progress_in_hand() -> None:
    waiting = Workers(last_step=NOW - 300, waiting_for_registry=3)
    verdict = judge(NOW, work(waiting_since=NOW - 600), waiting, LIMITS)
    assert verdict.alive
    assert "schema registry" in verdict.reason


def test_a_delivery_within_the_delivery_timeout_is_progress_in_hand() -> None:
    verdict = judge(
        NOW, work(waiting_since=NOW - 300, delivering_since=NOW - 100), Workers(), LIMITS
    )
    assert verdict.alive
    assert "delivering for 100s (--delivery-timeout 120s)" in verdict.reason
    late = work(waiting_since=NOW - 300, delivering_since=NOW - 130)
    assert not judge(NOW, late, Workers(), LIMITS).alive


def test_lag_with_nothing_fetched_for_long_is_a_stall() -> None:
    """Lagging, nothing in flight, nothing fetched: the consumer is stuck."""
    verdict = judge(NOW, work(last_progress=NOW - 200, last_fetch=NOW - 130), Workers(), LIMITS)
    assert not verdict.alive
    assert judge(NOW, work(last_progress=NOW - 200, last_fetch=NOW - 5), Workers(), LIMITS).alive
