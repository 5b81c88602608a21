"""The report of a `stream bench` run: its JSON (assembled from the results), the table,
the targets it is measured against (exactly-once beside at-least-once, the io group's),
and the chart. Everything but ``assemble`` reads the report as JSON, so a saved results
file prints the same way as a fresh run (``stream bench --results PATH``)."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stream import __version__
from stream.bench.cases import PAIRS
from stream.bench.measure import Result
from stream.bench.windows import window_lines, windows
from stream.config import BenchSettings

# Issue 14: exactly-once at the speed of at-least-once, for both sizes of event.
EXACTLY_ONCE_THROUGHPUT = 0.9  # exactly-once's records/s, as a share of its twin's at least
EXACTLY_ONCE_P99_MS = 150.0  # exactly-once's p99 at most, at half its throughput
HALF_LOAD = 0.5


def assemble(
    settings: BenchSettings,
    *,
    run_id: str,
    cpus: int,
    matrix_size: int,
    payload_bytes: dict[str, float],
    readings: dict[str, int],
    results: list[Result],
) -> dict[str, Any]:
    """The report of a run, as saved with ``--output``."""
    ratios(results)
    report = {
        "version": __version__,
        "run_id": run_id,  # its topics were named bench-<run_id>-..., and deleted
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": cpus,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {
            "count": settings.count,
            "partitions": settings.partitions,
            "payload": settings.payload,
            "values": settings.values,
            "payload_bytes": payload_bytes,
            "readings_per_event": readings,  # sensor readings per event, by input
            "matrix_size": matrix_size,
            "load": settings.load,
            "rate": settings.rate,
            "quick": settings.quick,
        },
        "results": [asdict(r) for r in results],
        "sink_ratios": sink_ratios(results),
    }
    report["guarantees"] = guarantees(report)
    report["windows"] = windows(report)
    return report


def save(report: dict[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(report, indent=2), encoding="utf-8")


def ratios(results: list[Result]) -> None:
    """Each result's records/s against the same run's ``naive`` and ``ceiling`` cases."""
    by_name = {r.name: r for r in results if not r.error}
    naive, ceiling = by_name.get("naive"), by_name.get("ceiling")
    for r in results:
        if r.error:
            continue
        if naive is not None and naive.records_per_s:
            r.ratio_to_naive = r.records_per_s / naive.records_per_s
        if ceiling is not None and ceiling.records_per_s:
            r.ratio_to_ceiling = r.records_per_s / ceiling.records_per_s


def sink_ratios(results: list[Result]) -> dict[str, float]:
    """The PostgreSQL sink's rows/s against the per-row design and against the same
    transform with the Kafka sink (records/s), when those cases ran."""
    by_name = {r.name: r.records_per_s for r in results if not r.error and r.records_per_s}
    sink = by_name.get("sensor-features-postgres")
    if sink is None:
        return {}
    out = {}
    if "sink-per-row" in by_name:
        out["to_per_row"] = sink / by_name["sink-per-row"]
    if "sensor-features" in by_name:
        out["to_kafka_sink"] = sink / by_name["sensor-features"]
    return out


def guarantees(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per event size whose guarantee pair ran: exactly-once's records/s as a share of
    its at-least-once twin's, and both p99 latencies, against the targets. The p99 target
    is judged only when the latency runs offered half of each case's throughput."""
    ran = {r["name"]: r for r in report["results"]}
    ok = {name: r for name, r in ran.items() if not r["error"]}
    settings = report.get("settings", {})
    half = settings.get("load") == HALF_LOAD and not settings.get("rate")
    rows = []
    for pair in PAIRS:
        if pair.at_least_once not in ran and pair.exactly_once not in ran:
            continue
        alo, eo = ok.get(pair.at_least_once), ok.get(pair.exactly_once)
        share = None
        if alo and eo and alo["records_per_s"]:
            share = eo["records_per_s"] / alo["records_per_s"]
        p99 = {
            "at_least_once": alo["latency_ms"].get("p99") if alo else None,
            "exactly_once": eo["latency_ms"].get("p99") if eo else None,
        }
        rows.append(
            {
                "events": pair.payload,
                "bytes": settings.get("payload_bytes", {}).get(pair.payload),
                "readings": settings.get("readings_per_event", {}).get(pair.payload),
                "at_least_once": pair.at_least_once,
                "exactly_once": pair.exactly_once,
                "throughput_ratio": share,
                "throughput_target": EXACTLY_ONCE_THROUGHPUT,
                "throughput_met": None if share is None else share >= EXACTLY_ONCE_THROUGHPUT,
                "p99_ms": p99,
                "p99_target_ms": EXACTLY_ONCE_P99_MS,
                "p99_met": (
                    p99["exactly_once"] <= EXACTLY_ONCE_P99_MS
                    if half and p99["exactly_once"] is not None
                    else None
                ),
            }
        )
    return rows


def guarantee_lines(report: dict[str, Any]) -> list[str]:
    """The exactly-once targets under the table, a line per event size (none if no pair ran)."""
    rows = guarantees(report)
    if not rows:
        return []
    lines = [
        "",
        f"exactly-once against at-least-once (targets: >= {EXACTLY_ONCE_THROUGHPUT:g}x the "
        f"throughput; exactly-once p99 <= {EXACTLY_ONCE_P99_MS:g} ms at half load):",
    ]
    for row in rows:
        size = f"{row['bytes']:,.0f} B" if row["bytes"] else "? B"
        if row["readings"]:
            size += f", {row['readings']} readings"
        share = row["throughput_ratio"]
        throughput = "- (not run)" if share is None else f"{share:.2f}x"
        if share is not None:
            throughput += f" ({_verdict(row['throughput_met'])})"
        p99 = row["p99_ms"]
        verdict = (
            _verdict(row["p99_met"])
            if row["p99_met"] is not None or p99["exactly_once"] is None
            else "not judged: the latency runs were not at half load"
        )
        lines.append(
            f"  {row['events']} events ({size}): throughput {throughput}; p99 "
            f"{_ms(p99['at_least_once'])} at-least-once, {_ms(p99['exactly_once'])} "
            f"exactly-once ({verdict})"
        )
    return lines


def _verdict(met: bool | None) -> str:
    return "not run" if met is None else "met" if met else "missed"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def table(report: dict[str, Any]) -> str:
    """The main table, a line per case, then the targets of the groups that ran."""
    width = max([34, *(len(r["name"]) + 2 for r in report["results"])])
    head = (
        f"{'case':<{width}}{'records/s':>11}{'MB/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'RSS MB':>8}{'CPU us/rec':>11}{'x naive':>9}{'x ceiling':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        if r["error"]:
            lines.append(f"{r['name']:<{width}}failed: {r['error'][:80]}")
            continue
        lat = r["latency_ms"]
        lines.append(
            f"{r['name']:<{width}}{r['records_per_s']:>11,.0f}{r['mb_per_s']:>7.1f}"
            f"{lat.get('p50', 0):>8.1f}{lat.get('p99', 0):>8.1f}{lat.get('max', 0):>8.1f}"
            f"{r['peak_rss_mb']:>8.0f}{r['cpu_us_per_record']:>11.1f}"
            f"{_ratio(r['ratio_to_naive']):>9}{_ratio(r['ratio_to_ceiling']):>10}"
        )
    timed = [r["name"] for r in report["results"] if r.get("timed_from") == "ready"]
    if timed:
        lines.append("records/s from the ready line, not the first output: " + ", ".join(timed))
    timed = [r["name"] for r in report["results"] if r.get("timed_from") == "input end"]
    if timed:
        lines.append("input records/s from the ready line to the last output: " + ", ".join(timed))
    sink = report.get("sink_ratios") or {}
    if sink:
        parts = []
        if "to_per_row" in sink:
            parts.append(f"{sink['to_per_row']:.1f}x the per-row design")
        if "to_kafka_sink" in sink:
            parts.append(f"{sink['to_kafka_sink']:.2f}x the Kafka sink (sensor-features)")
        lines.append("PostgreSQL sink (sensor-features-postgres, rows/s): " + ", ".join(parts))
    return "\n".join(lines + guarantee_lines(report) + window_lines(report) + io_table(report))


def _ratio(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


# The two-row table: the same three designs for CPU-bound and for I/O-bound work.
CPU_ROW = {
    "threads": "matrix-inverse, batched thread",
    "processes": "matrix-inverse, batched process",
    "async": "matrix-inverse, batched inline",  # on the event loop
}
IO_ROW = {"threads": "threads(10)", "processes": "processes(10)", "async": "asyncio+aiohttp(100)"}


def io_table(report: dict[str, Any]) -> list[str]:
    """The io group's lines under the main table: every client, the threads / processes /
    async table beside the CPU-bound row, and the issue's targets (empty without io)."""
    settings = report.get("io_settings")
    if not settings:
        return []
    delay_ms = settings["delay"] * 1000
    lines = ["", f"I/O-bound: {settings['requests']:,} GETs, each answered after {delay_ms:g} ms"]
    if report["io_error"]:
        lines.append(f"  the clients failed: {report['io_error'][-300:]}")
    clients = {r["case"]: r for r in report["io"]}
    base = clients.get("threads(10)")
    for r in report["io"]:
        times = f"{base['seconds'] / r['seconds']:6.1f}x" if base and r["seconds"] else "     -"
        lines.append(
            f"  {r['case']:<24}{r['seconds']:8.2f} s{r['per_second']:9,.0f} req/s {times} "
            f"threads(10)  client CPU {r['cpu_seconds'] / r['requests'] * 1e3:5.2f} ms/req  "
            f"errors {r['errors']}"
        )
    service = {r["name"]: r for r in report["results"] if not r["error"]}

    def cell(row: dict[str, Any] | None, key: str) -> str:
        return f"{row[key]:,.0f}" if row else "-"

    head = f"{'':<34}{'threads':>12}{'processes':>12}{'async':>12}"
    lines += ["", head, "-" * len(head)]
    lines.append(
        f"{'CPU: matrix-inverse, records/s':<34}"
        + "".join(f"{cell(service.get(name), 'records_per_s'):>12}" for name in CPU_ROW.values())
    )
    lines.append(
        f"{'I/O: GETs of ' + format(delay_ms, 'g') + ' ms, requests/s':<34}"
        + "".join(f"{cell(clients.get(name), 'per_second'):>12}" for name in IO_ROW.values())
    )
    lines.append("  CPU: batches on a thread pool, a process pool, the event loop itself")
    lines.append("  I/O: 10 threads, 10 processes, 100 requests in flight on one event loop")
    lines += ["", "targets:"]
    lines += [f"  {text}" for text in io_targets(report)]
    return lines


def io_targets(report: dict[str, Any]) -> list[str]:
    """The issue's three targets for I/O-bound work, each measured or '-' (not run)."""
    settings = report["io_settings"]
    clients = {r["case"]: r["per_second"] for r in report["io"]}
    service = {r["name"]: r["records_per_s"] for r in report["results"] if not r["error"]}
    allowed = settings["concurrency"] / settings["delay"]  # lookups in flight / seconds each

    def verdict(value: float | None, target: float, unit: str) -> str:
        if value is None:
            return "- (not run)"
        return f"{value:,.2f}{unit} ({'met' if value >= target else 'missed'})"

    threads, asyncio_ = clients.get(IO_ROW["threads"]), clients.get(IO_ROW["async"])
    plain = service.get("lookups: no enrichment")
    warm = service.get("lookups: enrich, 99% cache hits")
    cold = service.get("lookups: enrich, cold cache")
    return [
        "async >= 5x threads(10) on the GETs: "
        + verdict(asyncio_ / threads if asyncio_ and threads else None, 5.0, "x"),
        "99% cache hits >= 0.9x the service without enrichment: "
        + verdict(warm / plain if warm and plain else None, 0.9, "x"),
        f"cold cache >= 80% of the {allowed:,.0f} records/s that "
        f"{settings['concurrency']} lookups in flight allow: "
        + verdict(cold / allowed if cold is not None else None, 0.8, "x"),
    ]


def chart(report: dict[str, Any], path: str) -> bool:
    """A PNG of throughput and latency per case, if matplotlib is installed."""
    try:
        import matplotlib as mpl  # noqa: PLC0415

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    results = [r for r in report["results"] if not r["error"]]
    names = [r["name"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.5 * len(names) + 2))
    rates = [r["records_per_s"] for r in results]
    left.barh(names, rates, color="#3b7dd8")
    left.set_xscale("log")
    left.set_xlabel("records/s, log scale (higher is better)")
    left.invert_yaxis()
    for y, rate in enumerate(rates):
        left.text(rate, y, f" {rate:,.0f}", va="center", fontsize=8)
    for key, color in (("p50", "#6bbf59"), ("p99", "#e0a030"), ("max", "#d05050")):
        right.scatter([r["latency_ms"].get(key, 0) for r in results], names, label=key, c=color)
    right.set_xscale("log")
    right.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    right.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    right.set_xlabel("end-to-end latency, ms, log scale (at half each case's throughput)")
    right.invert_yaxis()
    right.legend()
    cpus = report["machine"]["cpus"]
    fig.suptitle(f"stream bench, {cpus} CPUs, {report['settings']['count']:,} records per case")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
