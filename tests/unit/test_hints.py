"""The warning for a service whose records all fail alike: when it speaks, what it says,
and how often (a clock of the test's own)."""

from __future__ import annotations

from stream.hints import DeadLetterStreak


def streak(**kwargs: float) -> DeadLetterStreak:
    return DeadLetterStreak("sensor-features", "json", "in.dlq", **kwargs)  # type: ignore[arg-type]


def test_a_batch_all_dead_lettered_alike_warns_with_the_option_to_check() -> None:
    warning = streak().observe(500, ["schema"] * 500, now=0.0)
    assert warning == (
        "all of the last 500 records were dead-lettered (reason schema): is --transform "
        "sensor-features right for this input? (see them with `stream read in.dlq`)"
    )


def test_the_hint_follows_the_reason() -> None:
    hints = streak()
    assert hints.hint("invalid_json") == "is --input-format json right for this input?"
    assert "--schema-registry-url" in hints.hint("unknown_schema")
    assert "/apis/ccompat/v7" in hints.hint("unknown_schema")
    assert "--enrich-url" in hints.hint("enrich_failed")
    assert "stream db init" in hints.hint("sink_refused")
    assert hints.hint("my_own_reason") == "is --transform sensor-features right for this input?"


def test_one_good_record_or_mixed_reasons_say_nothing() -> None:
    hints = streak()
    assert hints.observe(100, ["schema"] * 99, now=0.0) is None  # one went through
    assert hints.observe(100, ["schema"] * 50 + ["limit"] * 50, now=1.0) is None
    assert hints.observe(0, [], now=2.0) is None


def test_a_few_bad_records_say_nothing_a_streak_across_batches_does() -> None:
    hints = streak(min_records=10)
    for second in range(4):  # a trickle: batches of 3, all bad alike
        warning = hints.observe(3, ["invalid_json"] * 3, now=float(second))
    assert warning is not None  # 12 in a row
    assert warning.startswith("all of the last 12 records were dead-lettered (reason invalid_json)")
    fresh = streak(min_records=10)
    fresh.observe(3, ["invalid_json"] * 3, now=0.0)
    fresh.observe(3, ["schema"] * 3, now=1.0)  # another reason starts another streak
    fresh.observe(1, [], now=2.0)  # a good record ends it
    assert fresh.observe(9, ["schema"] * 9, now=3.0) is None


def test_rate_limited_to_one_warning_per_interval() -> None:
    hints = streak(interval=60.0)
    assert hints.observe(50, ["schema"] * 50, now=0.0) is not None
    assert hints.observe(50, ["schema"] * 50, now=30.0) is None
    assert hints.observe(50, ["schema"] * 50, now=59.9) is None
    assert hints.observe(50, ["schema"] * 50, now=60.0) is not None


def test_a_transforms_own_reason_is_shown_quoted_and_cut() -> None:
    reason = "\x1b[2J" + "x" * 200
    warning = streak().observe(20, [reason] * 20, now=0.0)
    assert warning is not None
    assert "\x1b" not in warning
    assert "x" * 70 not in warning


def test_made_from_the_run_settings() -> None:
    from stream.config import RunSettings

    settings = RunSettings(transform="identity", input_topic="events", input_format="json")
    hints = DeadLetterStreak.of(settings)
    warning = hints.observe(10, ["invalid_json"] * 10, now=0.0)
    assert warning is not None
    assert warning.endswith(
        "is --input-format json right for this input? (see them with `stream read events.dlq`)"
    )
