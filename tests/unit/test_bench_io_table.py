"""`stream bench`'s io section: the threads / processes / async table beside the CPU row,
and the issue's targets, computed from a report (no broker, no server)."""

from __future__ import annotations

from typing import Any

from stream.bench.report import io_table, io_targets, table


def result(name: str, group: str, records_per_s: float) -> dict[str, Any]:
    return {
        "name": name,
        "group": group,
        "records": 1000,
        "seconds": 1.0,
        "records_per_s": records_per_s,
        "mb_per_s": 1.0,
        "cpu_us_per_record": 10.0,
        "peak_rss_mb": 100.0,
        "offered_rate": 0.0,
        "latency_ms": {"p50": 1.0, "p99": 2.0, "max": 3.0},
        "ratio_to_naive": None,
        "ratio_to_ceiling": None,
        "error": "",
    }


def client(case: str, seconds: float) -> dict[str, Any]:
    return {
        "case": case,
        "requests": 1000,
        "concurrency": 10,
        "seconds": seconds,
        "errors": 0,
        "cpu_seconds": 0.5,
        "per_second": 1000 / seconds,
    }


def report(**service: float) -> dict[str, Any]:
    rates = {
        "matrix-inverse, batched thread": 412.0,
        "matrix-inverse, batched process": 447.0,
        "matrix-inverse, batched inline": 442.0,
        "lookups: no enrichment": 10_000.0,
        "lookups: enrich, cold cache": 1_700.0,
        "lookups: enrich, 99% cache hits": 8_000.0,
    } | {name.replace("_", " "): rate for name, rate in service.items()}
    return {
        "results": [result(name, "io", rate) for name, rate in rates.items()],
        "io": [
            client("threads(10)", 5.0),
            client("threads(100)", 1.0),
            client("processes(10)", 6.0),
            client("asyncio+aiohttp(100)", 0.8),
        ],
        "io_error": "",
        "io_settings": {
            "requests": 1000,
            "delay": 0.05,
            "concurrency": 100,
            "records_per_sensor": 100,
        },
    }


def test_the_two_row_table_puts_the_io_clients_beside_the_cpu_row() -> None:
    lines = io_table(report())
    (cpu,) = [line for line in lines if line.startswith("CPU: matrix-inverse")]
    (io,) = [line for line in lines if line.startswith("I/O: GETs of 50 ms")]
    assert cpu.split()[-3:] == ["412", "447", "442"]
    assert io.split()[-3:] == ["200", "167", "1,250"]
    assert any("threads" in line and "processes" in line and "async" in line for line in lines)
    assert "CPU: matrix-inverse" in table(report())  # under the main table


def test_targets_say_met_or_missed_from_the_measured_ratios() -> None:
    assert io_targets(report()) == [
        "async >= 5x threads(10) on the GETs: 6.25x (met)",
        "99% cache hits >= 0.9x the service without enrichment: 0.80x (missed)",
        "cold cache >= 80% of the 2,000 records/s that 100 lookups in flight allow: 0.85x (met)",
    ]


def test_cases_not_run_show_as_not_run() -> None:
    partial = report()
    partial["results"] = [r for r in partial["results"] if not r["name"].startswith("matrix")]
    partial["results"] = [r for r in partial["results"] if "cold" not in r["name"]]
    lines = io_table(partial)
    (cpu,) = [line for line in lines if line.startswith("CPU: matrix-inverse")]
    assert cpu.split()[-3:] == ["-", "-", "-"]
    assert io_targets(partial)[2].endswith("- (not run)")


def test_no_io_section_without_the_io_group() -> None:
    plain = report()
    del plain["io_settings"]
    assert io_table(plain) == []
    assert "I/O-bound" not in table(plain)
