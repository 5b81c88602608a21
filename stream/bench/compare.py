"""`stream bench --compare PREVIOUS`: each case of a run against the same case of a
previous results file. Plain logic on two reports: no broker.

Absolute figures move with the machine's load (other jobs on the cores, a broker
elsewhere busy), so a case is judged on **within-run ratios**: its throughput, p99
latency and CPU per record each divided by the same figure of its *reference case* in
the same run, and that ratio compared between the two files. A machine twice as busy
slows the reference as it slows the case, and the within-run ratio stays; a change that
slows only the case moves it. The reference is the ``ceiling`` (the client's I/O
ceiling on the same broker) for the cases on sensor events, ``matrix-inverse, batched
inline`` for the matrix cases and ``sink-per-row`` for the sink cases; each result names
its own (``reference`` in the JSON; ``ceiling`` for files older than that field).

A case regressed when, within the run, its throughput fell by more than
``threshold`` (0.2: below 0.8x the previous ratio) or its CPU per record rose by more
than ``threshold`` (above 1.2x), or its p99 latency rose by more than
``latency_threshold`` (0.5: above 1.5x; a p99 from a short latency run at half load is
the noisiest figure of all). Raw ratios (new / previous) are printed beside them. When
a case's reference did not run in both files it falls back to the ``ceiling``, and
without that to its raw ratios, and the table says so. A reference case itself is
printed, not judged (within its own run it is always 1). Cases in only one file (or
failed in one) are listed, not judged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.errors import UsageError

# The fields of every result that `stream bench --output` has written.
RESULT_FIELDS = (
    "name",
    "group",
    "records",
    "seconds",
    "records_per_s",
    "mb_per_s",
    "cpu_us_per_record",
    "peak_rss_mb",
    "offered_rate",
    "latency_ms",
    "ratio_to_naive",
    "ratio_to_ceiling",
    "error",
)
FALLBACK = "ceiling"  # the reference of files without the field, and when one is missing


class NotBenchResults(UsageError):
    """A file given as a bench results file is not one (or cannot be read)."""


def load_results(path: str, option: str = "--compare") -> dict[str, Any]:
    """A results file written by ``stream bench --output``, checked for the fields the
    table and the comparison read; else one line saying what is wrong."""
    where = f"{option} {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise NotBenchResults(f"{where}: cannot read it ({exc.strerror or exc})") from None
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise NotBenchResults(f"{where} is not a stream bench results file: {exc}") from None
    problem = _problem(report)
    if problem:
        raise NotBenchResults(f"{where} is not a stream bench results file: {problem}")
    return report  # type: ignore[no-any-return]


def _problem(report: Any) -> str:
    """What keeps ``report`` from being a bench report ('' if nothing)."""
    if not isinstance(report, dict):
        return "not a JSON object"
    for key in ("settings", "machine", "results"):
        if key not in report:
            return f"no {key!r}"
    if not isinstance(report["results"], list):
        return "'results' is not a list"
    for number, result in enumerate(report["results"], 1):
        if not isinstance(result, dict):
            return f"result {number} is not an object"
        missing = [name for name in RESULT_FIELDS if name not in result]
        if missing:
            return f"result {number} has no {', '.join(missing)}"
        if not isinstance(result["records_per_s"], int | float):
            return f"result {number}: records_per_s is not a number"
        if not isinstance(result["latency_ms"], dict):
            return f"result {number}: latency_ms is not an object"
    return ""


@dataclass(frozen=True, slots=True)
class Change:
    """One figure of a case, new against previous: raw, and within the run (the figure
    over its reference's figure in the same run); None where either is missing."""

    raw: float | None
    within: float | None


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    reference: str  # judged against it; "" when judged on raw ratios
    judged: bool  # False for a reference case itself
    throughput: Change
    p99: Change
    cpu: Change
    regressions: tuple[str, ...]  # e.g. "throughput -29%"


@dataclass(frozen=True, slots=True)
class Comparison:
    rows: list[Row]
    only_previous: list[str]  # measured in the previous file only (absent or failed here)
    only_current: list[str]  # measured in the current file only
    threshold: float
    latency_threshold: float

    @property
    def regressed(self) -> list[Row]:
        return [row for row in self.rows if row.regressions]


def compare(
    previous: dict[str, Any],
    current: dict[str, Any],
    threshold: float = 0.2,
    latency_threshold: float = 0.5,
) -> Comparison:
    """Every case measured in both reports, judged as the module says."""
    old = {r["name"]: r for r in previous["results"] if not r["error"]}
    new = {r["name"]: r for r in current["results"] if not r["error"]}
    rows = [
        _row(name, old, new, threshold, latency_threshold)
        for name in [r["name"] for r in current["results"]]
        if name in old and name in new
    ]
    return Comparison(
        rows,
        only_previous=[name for name in old if name not in new],
        only_current=[name for name in new if name not in old],
        threshold=threshold,
        latency_threshold=latency_threshold,
    )


def _row(
    name: str,
    old: dict[str, dict[str, Any]],
    new: dict[str, dict[str, Any]],
    threshold: float,
    latency_threshold: float,
) -> Row:
    reference = new[name].get("reference") or old[name].get("reference") or FALLBACK
    if reference not in old or reference not in new:
        reference = FALLBACK if FALLBACK in old and FALLBACK in new else ""
    judged = reference != name

    def change(figure: str) -> Change:
        raw = _ratio(_figure(new[name], figure), _figure(old[name], figure))
        if not reference:
            return Change(raw, None)
        ref_raw = _ratio(_figure(new[reference], figure), _figure(old[reference], figure))
        return Change(raw, _ratio(raw, ref_raw))

    throughput, p99, cpu = change("throughput"), change("p99"), change("cpu")
    regressions: list[str] = []
    raw = "" if reference else " (raw)"
    if judged:
        value = _judged(throughput, reference)
        if value is not None and value < 1 - threshold:
            regressions.append(f"throughput {value - 1:+.0%}{raw}")
        value = _judged(p99, reference)
        if value is not None and value > 1 + latency_threshold:
            regressions.append(f"p99 {value - 1:+.0%}{raw}")
        value = _judged(cpu, reference)
        if value is not None and value > 1 + threshold:
            regressions.append(f"CPU/record {value - 1:+.0%}{raw}")
    return Row(name, reference, judged, throughput, p99, cpu, tuple(regressions))


def _figure(result: dict[str, Any], figure: str) -> float | None:
    value: Any = {
        "throughput": result["records_per_s"],
        "p99": result["latency_ms"].get("p99"),
        "cpu": result["cpu_us_per_record"],
    }[figure]
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _ratio(new: float | None, old: float | None) -> float | None:
    return new / old if new is not None and old else None


def _judged(change: Change, reference: str) -> float | None:
    return change.within if reference else change.raw


def comparison_lines(comparison: Comparison, previous: str, current: str) -> list[str]:
    """The comparison as a table: a line per case, then the cases in one file only."""
    width = max([34, *(len(row.name) + 2 for row in comparison.rows)])
    lines = [
        "",
        f"{current} against {previous}, new / previous:",
        "  within: each figure over its reference case's in the same run (judged); raw: as is",
        f"{'case':<{width}}{'reference':<32}{'records/s':>16}{'p99':>16}{'CPU/record':>16}",
        f"{'':<{width + 32}}" + f"{'within':>9}{'raw':>7}" * 3,
    ]
    lines.append("-" * len(lines[-1]))
    for row in comparison.rows:
        if not row.judged:
            reference = "(reference: not judged)"
        else:
            reference = row.reference or "(none in both: raw judged)"
        cells = "".join(
            f"{_cell(change.within):>9}{_cell(change.raw):>7}"
            for change in (row.throughput, row.p99, row.cpu)
        )
        flag = "  regressed" if row.regressions else ""
        lines.append(f"{row.name:<{width}}{reference[:31]:<32}{cells}{flag}")
    if comparison.only_previous:
        lines.append(f"measured only in {previous}: " + ", ".join(comparison.only_previous))
    if comparison.only_current:
        lines.append(f"measured only in {current}: " + ", ".join(comparison.only_current))
    return lines


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def regression_line(comparison: Comparison, previous: str) -> str:
    """One line naming every regressed case and by how much ('' when none did)."""
    regressed = comparison.regressed
    if not regressed:
        return ""
    cases = "; ".join(f"{row.name}: {', '.join(row.regressions)}" for row in regressed)
    return (
        f"{len(regressed)} case{'s' if len(regressed) > 1 else ''} regressed against "
        f"{previous} (within-run ratios; --compare-threshold {comparison.threshold:g}, "
        f"--compare-latency-threshold {comparison.latency_threshold:g}): {cases}"
    )
