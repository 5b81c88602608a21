"""`stream bench`'s report: exactly-once beside at-least-once for both event sizes, and
where each case's throughput is timed from (no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from stream.bench.measure import timed_span
from stream.bench.report import guarantee_lines, guarantees, table
from tests.unit.bench_reports import report, result


def run(
    load: float = 0.5, rate: float = 0.0, changes: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A report of both guarantee pairs; ``changes`` sets fields of the named cases."""
    rows = [
        result("sensor-features", 70_000.0, p99=60),
        result("sensor-features, exactly-once", 66_500.0, p99=140),
        result("sensor-features-large", 40_000.0, p99=80),
        result("sensor-features-large, exactly-once", 32_000.0, p99=210),
    ]
    for row in rows:
        row.update((changes or {}).get(row["name"], {}))
    out = report(*rows)
    out["settings"] = {
        "load": load,
        "rate": rate,
        "payload_bytes": {"sensor": 1346.0, "sensor-large": 5094.0},
        "readings_per_event": {"sensor": 65, "sensor-large": 256},
    }
    return out


def test_each_size_has_its_exactly_once_share_and_both_p99_against_the_targets() -> None:
    small, large = guarantees(run())
    assert small["events"] == "sensor"
    assert small["throughput_ratio"] == pytest.approx(0.95)
    assert small["throughput_met"] is True
    assert small["p99_ms"] == {"at_least_once": 60, "exactly_once": 140}
    assert small["p99_met"] is True
    assert large["events"] == "sensor-large"
    assert large["readings"] == 256
    assert large["throughput_ratio"] == pytest.approx(0.8)
    assert large["throughput_met"] is False
    assert large["p99_met"] is False
    assert (small["throughput_target"], small["p99_target_ms"]) == (0.9, 150.0)
    lines = guarantee_lines(run())
    assert lines[2] == (
        "  sensor events (1,346 B, 65 readings): throughput 0.95x (met); "
        "p99 60 ms at-least-once, 140 ms exactly-once (met)"
    )
    assert lines[3] == (
        "  sensor-large events (5,094 B, 256 readings): throughput 0.80x (missed); "
        "p99 80 ms at-least-once, 210 ms exactly-once (missed)"
    )
    assert "\n".join(lines) in table(run())


def test_the_p99_target_is_judged_only_at_half_load() -> None:
    for other in (run(load=0.8), run(rate=5000.0)):
        small, _ = guarantees(other)
        assert small["p99_met"] is None
        assert small["throughput_met"] is True
        assert "not judged: the latency runs were not at half load" in guarantee_lines(other)[2]


def test_a_pair_with_a_failed_or_missing_case_shows_what_did_not_run() -> None:
    failed = run(
        changes={"sensor-features-large, exactly-once": {"error": "the case did not start"}}
    )
    _, large = guarantees(failed)
    assert large["throughput_ratio"] is None
    assert large["p99_ms"]["exactly_once"] is None
    assert guarantee_lines(failed)[3] == (
        "  sensor-large events (5,094 B, 256 readings): throughput - (not run); "
        "p99 80 ms at-least-once, - exactly-once (not run)"
    )
    only_small = run()
    only_small["results"] = only_small["results"][:2]
    assert [row["events"] for row in guarantees(only_small)] == ["sensor"]
    assert guarantees(report(result("identity", 1.0))) == []
    assert guarantee_lines(report(result("identity", 1.0))) == []


def test_the_table_fits_long_case_names_and_says_which_were_timed_from_ready() -> None:
    out = run()
    out["results"].append(result("lookups: enrich, cold cache", 1800.0) | {"timed_from": "ready"})
    lines = table(out).splitlines()
    head, rule = lines[0], lines[1]
    assert len(rule) == len(head)
    name = "sensor-features-large, exactly-once"
    (row,) = [line for line in lines if line.startswith(name)]
    assert row[len(name)] == " "
    assert row.index("32,000") + len("32,000") == head.index("records/s") + len("records/s")
    assert "records/s from the ready line, not the first output: lookups: enrich, cold cache" in (
        lines
    )


def test_throughput_from_the_first_output_or_from_the_ready_line() -> None:
    stamps = [12.0, 10.0, 11.0, 14.0]  # outputs finished at these seconds
    assert timed_span(stamps, None) == (10.0, 3, 4.0)  # 3 outputs after the first, in 4 s
    # Ready at 6 s: a cold cache's first output came 4 s later; those 4 s count.
    assert timed_span(stamps, 6.0) == (6.0, 4, 8.0)
    # A clock that puts the ready line after the first output: from the first output.
    assert timed_span(stamps, 10.5) == (10.0, 4, 4.0)
    assert timed_span([5.0, 5.0], None) == (5.0, 1, 1e-3)
