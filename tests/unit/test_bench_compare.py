"""`stream bench --compare`: a run against a previous results file, judged on within-run
ratios (no broker: hand-made reports, and the committed reference results)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stream.bench.compare import (
    NotBenchResults,
    compare,
    comparison_lines,
    load_results,
    regression_line,
)
from stream.cli import main
from tests.unit.bench_reports import report, result

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_RESULTS = ROOT / "tests" / "bench" / "results" / "bench-2cpu.json"


def baseline(
    scale: float = 1.0, changes: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A run's report; ``scale`` multiplies every rate (a busier or quieter machine), and
    ``changes`` sets fields of the named cases."""
    rows = {
        "ceiling": result("ceiling", 100_000 * scale, p99=40, cpu=6),
        "sensor-features": result("sensor-features", 70_000 * scale, p99=60, cpu=20),
        "sensor-features, exactly-once": result(
            "sensor-features, exactly-once", 63_000 * scale, p99=90, cpu=19
        ),
    }
    for name, change in (changes or {}).items():
        rows[name] |= change
    return report(*rows.values())


def test_a_case_that_fell_behind_its_reference_regressed() -> None:
    slower = baseline(
        changes={"sensor-features": {"records_per_s": 49_000.0}}
    )  # 0.7x, ceiling as before
    comparison = compare(baseline(), slower, threshold=0.2)
    (row,) = comparison.regressed
    assert row.name == "sensor-features"
    assert row.throughput.within == pytest.approx(0.7)
    assert row.regressions == ("throughput -30%",)
    line = regression_line(comparison, "old.json")
    assert "\n" not in line
    assert line.startswith("1 case regressed against old.json")
    assert "sensor-features: throughput -30%" in line
    assert "--compare-threshold 0.2" in line


def test_a_busier_machine_slows_every_case_alike_and_nothing_regressed() -> None:
    busy = baseline(scale=0.5)
    comparison = compare(baseline(), busy)
    assert comparison.regressed == []
    assert regression_line(comparison, "old.json") == ""
    row = {r.name: r for r in comparison.rows}["sensor-features"]
    assert row.throughput.raw == pytest.approx(0.5)  # printed beside the judged ratio
    assert row.throughput.within == pytest.approx(1.0)


def test_changes_within_the_thresholds_are_not_regressions() -> None:
    current = baseline(
        changes={"sensor-features": {"records_per_s": 60_000.0, "cpu_us_per_record": 23.0}}
    )  # -14% and +15%
    current["results"][2]["latency_ms"]["p99"] = 120.0  # +33%: under the latency threshold
    assert compare(baseline(), current, threshold=0.2, latency_threshold=0.5).regressed == []


def test_cpu_per_record_and_p99_regress_past_their_own_thresholds() -> None:
    current = baseline(changes={"sensor-features": {"cpu_us_per_record": 26.0}})  # +30%
    current["results"][2]["latency_ms"]["p99"] = 180.0  # 2x
    comparison = compare(baseline(), current, threshold=0.2, latency_threshold=0.5)
    regressions = {row.name: row.regressions for row in comparison.regressed}
    assert regressions == {
        "sensor-features": ("CPU/record +30%",),
        "sensor-features, exactly-once": ("p99 +100%",),
    }
    loose = compare(baseline(), current, threshold=0.5, latency_threshold=1.5)
    assert loose.regressed == []


def test_cases_in_one_file_only_or_failed_in_one_are_listed_not_judged() -> None:
    previous = baseline()
    previous["results"].append(result("matrix-inverse", 600.0))
    current = baseline(
        changes={"sensor-features": {"error": "the case did not start", "records_per_s": 0.0}}
    )
    current["results"].append(result("sensor-features-large", 50_000.0))
    comparison = compare(previous, current)
    assert [row.name for row in comparison.rows] == ["ceiling", "sensor-features, exactly-once"]
    assert comparison.only_previous == ["sensor-features", "matrix-inverse"]
    assert comparison.only_current == ["sensor-features-large"]
    assert comparison.regressed == []
    lines = comparison_lines(comparison, "old.json", "this run")
    assert "measured only in old.json: sensor-features, matrix-inverse" in lines
    assert "measured only in this run: sensor-features-large" in lines


def test_the_reference_itself_is_not_judged_and_without_one_raw_ratios_are() -> None:
    previous = report(result("identity", 70_000.0), result("ceiling", 100_000.0))
    current = report(result("identity", 70_000.0), result("ceiling", 50_000.0))
    rows = {row.name: row for row in compare(previous, current).rows}
    assert not rows["ceiling"].judged
    assert rows["ceiling"].regressions == ()  # half the rate: the machine, not our code
    assert rows["identity"].throughput.within == pytest.approx(2.0)
    # --cases identity: no ceiling in either run, so identity is judged on raw ratios.
    alone = compare(report(result("identity", 70_000.0)), report(result("identity", 40_000.0)))
    (row,) = alone.rows
    assert row.reference == ""
    assert row.throughput.within is None
    assert row.regressions == ("throughput -43% (raw)",)


def test_a_missing_reference_falls_back_to_the_ceiling() -> None:
    matrix = "matrix-inverse, batched inline"
    previous = report(
        result("ceiling", 100_000.0), result("matrix-inverse", 600.0, reference=matrix)
    )
    current = report(result("ceiling", 50_000.0), result("matrix-inverse", 300.0, reference=matrix))
    (_, row) = compare(previous, current).rows
    assert row.reference == "ceiling"
    assert row.regressions == ()


def test_the_table_prints_within_run_and_raw_ratios_for_every_case() -> None:
    lines = comparison_lines(compare(baseline(), baseline(scale=0.5)), "old.json", "new.json")
    assert lines[1] == "new.json against old.json, new / previous:"
    (row,) = [line for line in lines if line.startswith("sensor-features  ")]
    assert row.split()[-6:] == ["1.00", "0.50", "1.00", "1.00", "1.00", "1.00"]
    (ceiling,) = [line for line in lines if line.startswith("ceiling ")]
    assert "(reference: not judged)" in ceiling


def write(tmp_path: Path, name: str, content: Any) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("not json at all", "is not a stream bench results file: Expecting value"),
        ([1, 2], "not a JSON object"),
        ({"results": []}, "no 'settings'"),
        ({"settings": {}, "machine": {}, "results": {}}, "'results' is not a list"),
        ({"settings": {}, "machine": {}, "results": [{"name": "x"}]}, "result 1 has no group"),
    ],
)
def test_a_file_that_is_not_a_results_file_is_one_clear_line(
    tmp_path: Path, content: Any, reason: str
) -> None:
    path = write(tmp_path, "other.json", content)
    with pytest.raises(NotBenchResults, match=reason) as caught:
        load_results(path)
    assert str(caught.value).startswith(f"--compare {path}")
    assert "\n" not in str(caught.value)


def test_the_cli_compares_two_files_without_a_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = write(tmp_path, "old.json", baseline())
    new = write(tmp_path, "new.json", baseline(scale=0.6))
    assert main(["bench", "--results", new, "--compare", old]) == 0
    out = capsys.readouterr()
    assert "sensor-features, exactly-once" in out.out  # the table of new.json
    assert f"{new} against {old}, new / previous:" in out.out
    assert out.err == ""
    worse = write(
        tmp_path, "worse.json", baseline(changes={"sensor-features": {"records_per_s": 40_000.0}})
    )
    assert main(["bench", "--results", worse, "--compare", old]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"stream bench: 1 case regressed against {old}")
    assert "sensor-features: throughput -43%" in err[0]
    assert main(["bench", "--results", worse, "--compare", old, "--compare-threshold", "0.5"]) == 0


def test_the_cli_refuses_a_bad_file_before_running_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path, "bad.json", {"hello": "world"})
    # No broker answers on port 1: a run would fail, but the file is refused first.
    code = main(["bench", "--bootstrap-servers", "127.0.0.1:1", "--compare", bad])
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"stream bench: error: --compare {bad} is not a stream bench results file: no 'settings'"
    ]
    assert main(["bench", "--results", str(tmp_path / "missing.json")]) == 2
    assert "--results" in capsys.readouterr().err


def test_the_committed_reference_results_load_and_match_themselves() -> None:
    reference = load_results(str(REFERENCE_RESULTS))
    comparison = compare(reference, reference)
    assert comparison.regressed == []
    assert comparison.only_previous == comparison.only_current == []
    assert {row.name for row in comparison.rows} == {r["name"] for r in reference["results"]}
