"""The io baselines run end to end on a small scale and return complete numbers."""

from __future__ import annotations

import json

import pytest

from stream.bench.enrich_io import io_bench, loop_cost, main


def test_io_bench_runs_every_client_against_a_real_server() -> None:
    results = io_bench(requests=40, delay=0.02, process_workers=2)
    assert [r.case for r in results] == [
        "threads(10)",
        "threads(100)",
        "processes(2)",
        "asyncio+aiohttp(100)",
        "enricher(100)",
    ]
    assert all(r.requests == 40 for r in results)
    assert all(r.errors == 0 for r in results)
    # 40 answers of 20 ms: 10 threads need 4 rounds; 100 lookups in flight need one
    by_case = {r.case: r.seconds for r in results}
    assert by_case["threads(10)"] >= 0.08
    assert by_case["processes(2)"] >= 0.4  # 2 at a time: 20 rounds
    assert all(r.per_second > 0 for r in results)


def test_loop_cost_is_measured_per_record() -> None:
    cost = loop_cost(records=50, rounds=10)
    assert 0 < cost.key_url < 1000
    assert 0 < cost.field_url < 1000
    assert 0 < cost.worker_plain < 1000
    assert 0 < cost.worker_merge < 1000


def test_main_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--requests", "20", "--delay", "0.01", "--process-workers", "2", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert len(report["io"]) == 5
    assert set(report["loop_cost_us"]) == {"field_url", "key_url", "worker_plain", "worker_merge"}


def test_main_prints_the_clients_alone_for_stream_bench(capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "--requests",
            "20",
            "--delay",
            "0.01",
            "--process-workers",
            "2",
            "--json",
            "--no-loop-cost",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert [r["requests"] for r in report["io"]] == [20] * 5
    assert "loop_cost_us" not in report
