"""Hand-made `stream bench` reports for the unit tests of its report and comparison."""

from __future__ import annotations

from typing import Any


def result(
    name: str,
    records_per_s: float,
    *,
    p99: float = 50.0,
    cpu: float = 20.0,
    reference: str = "ceiling",
    error: str = "",
) -> dict[str, Any]:
    return {
        "name": name,
        "group": "pipeline",
        "records": 1000,
        "seconds": 1.0,
        "records_per_s": records_per_s,
        "mb_per_s": 1.0,
        "cpu_us_per_record": cpu,
        "peak_rss_mb": 100.0,
        "offered_rate": records_per_s / 2,
        "latency_ms": {"p50": p99 / 2, "p99": p99, "max": p99 * 2},
        "ratio_to_naive": None,
        "ratio_to_ceiling": None,
        "error": error,
        "reference": reference,
    }


def report(*results: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "0",
        "machine": {"cpus": 2},
        "settings": {"count": 1000, "load": 0.5},
        "results": list(results),
    }
