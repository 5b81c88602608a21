"""`stream bench --quick` runs end to end on the real broker and writes results of the
documented shape. Speed is not asserted here: that is what the bench reports."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.helpers import STREAM

pytestmark = pytest.mark.broker


async def test_quick_bench_writes_a_complete_report(bootstrap: str, tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    done = await asyncio.to_thread(
        subprocess.run,
        [
            STREAM,
            "bench",
            "--quick",
            "--bootstrap-servers",
            bootstrap,
            "--count",
            "5000",
            # The latency runs offer 2% of each case's throughput for 1 s, not half of it
            # for 2 s: the same measurement on a few thousand records, not a million.
            "--load",
            "0.02",
            "--latency-seconds",
            "1",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(output.read_text())
    assert report["machine"]["cpus"] >= 1
    assert report["settings"]["count"] == 5000
    names = [r["name"] for r in report["results"]]
    assert names == ["ceiling", "naive", "identity", "sensor-features"]
    for result in report["results"]:
        assert result["error"] == "", result
        assert result["records"] >= 2
        assert result["records_per_s"] > 0
        assert result["cpu_us_per_record"] > 0
        assert result["peak_rss_mb"] > 0
        assert set(result["latency_ms"]) == {"p50", "p99", "max"}
        assert 0 <= result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
        assert result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
        assert result["ratio_to_naive"] is not None
        assert result["ratio_to_ceiling"] is not None
    by_name = {r["name"]: r for r in report["results"]}
    assert by_name["naive"]["ratio_to_naive"] == pytest.approx(1.0)
    assert by_name["ceiling"]["ratio_to_ceiling"] == pytest.approx(1.0)
    # The table names every case; the bench cleaned up its topics.
    for name in names:
        assert name in done.stdout
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        prefix = f"bench-{report['run_id']}-"
        left = [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()
    assert left == []


async def test_sink_cases_report_rows_per_s_and_leave_no_table(
    bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    output = tmp_path / "bench.json"
    done = await asyncio.to_thread(
        subprocess.run,
        [
            STREAM,
            "bench",
            "--cases",
            "sink",
            "--bootstrap-servers",
            bootstrap,
            "--count",
            "2000",
            "--case-seconds",
            "60",
            "--output",
            str(output),
        ],
        env={**os.environ, "STREAM_BENCH_POSTGRES_DSN": postgres_dsn},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(output.read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["sink-per-row", "sensor-features-postgres"]
    for result in report["results"]:
        assert result["error"] == "", result
        assert result["records"] == 2000, result  # every input became a row
        assert result["records_per_s"] > 0
    assert set(report["sink_ratios"]) == {"to_per_row"}
    assert "x the per-row design" in done.stdout
    assert postgres_dsn not in done.stdout + done.stderr
    conn = await asyncpg.connect(postgres_dsn)
    try:
        left = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE $1",
            f"bench_{report['run_id']}_%",
        )
    finally:
        await conn.close()
    assert left == []


async def test_sink_cases_without_a_dsn_are_skipped_with_one_line(bootstrap: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STREAM_BENCH_POSTGRES_DSN"}
    done = await asyncio.to_thread(
        subprocess.run,
        [STREAM, "bench", "--cases", "sink", "--bootstrap-servers", bootstrap, "--count", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sink cases skipped: give --postgres-dsn" in done.stderr


def bench_command(bootstrap: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREAM, "bench", "--bootstrap-servers", bootstrap, "--matrix-size", "8", *extra],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


async def test_formats_cases_run_through_a_registry(
    bootstrap: str, schema_registry_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "bench.json"
    done = await asyncio.to_thread(
        bench_command,
        bootstrap,
        "--cases",
        "formats",
        "--count",
        "2000",
        "--latency-seconds",
        "1",
        "--load",
        "0.02",
        "--schema-registry-url",
        schema_registry_url,
        "--output",
        str(output),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(output.read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["sensor-features-avro", "sensor-features-protobuf"]
    for result in report["results"]:
        assert result["error"] == "", result
        assert result["group"] == "formats"
        assert result["records"] >= 2
        assert result["cpu_us_per_record"] > 0
    assert set(report["settings"]["payload_bytes"]) == {"sensor-avro", "sensor-protobuf"}


async def test_formats_cases_are_skipped_in_one_line_without_a_registry(bootstrap: str) -> None:
    done = await asyncio.to_thread(
        bench_command,
        bootstrap,
        "--cases",
        "formats,ceiling",  # the cheapest case that runs, to show the others still do
        "--count",
        "500",
        "--latency-seconds",
        "1",
        "--load",
        "0.02",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    skipped = [line for line in done.stderr.splitlines() if "formats cases skipped" in line]
    assert len(skipped) == 1, done.stderr
    assert "--schema-registry-url" in skipped[0]
    assert "ceiling" in done.stdout
    assert "sensor-features-avro" not in done.stdout
