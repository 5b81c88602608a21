"""promtool checks the monitoring files in deploy/: the Prometheus configuration, the alert
rules and their unit tests (deploy/prometheus/alerts_test.yml), and the dashboard's queries
as PromQL. They need Debian's ``prometheus`` package (``make deps``; ``make test`` runs it),
so they live outside tests/unit: ``make test-unit`` needs neither root nor apt.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.dashboard import (
    ALERT_NAMES,
    ALERTS,
    ALERTS_TEST,
    CONFIG,
    ROOT,
    all_panels,
    dashboard,
    exprs,
)

# Grafana variables in the dashboard's queries, replaced to check them as PromQL.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
    "${instance}": ".*",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed (or not on PATH): run `make test`, which installs it "
            "(`make deps` installs only Debian's `prometheus` package, which provides it).",
            pytrace=False,
        )
    return path


def run_promtool(*args: str | Path) -> str:
    result = subprocess.run(
        [promtool(), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = f"$ promtool {' '.join(map(str, args))}\n{result.stdout}{result.stderr}"
    assert result.returncode == 0, output
    return output


def test_prometheus_config_is_valid() -> None:
    output = run_promtool("check", "config", CONFIG)
    assert "1 rule files found" in output, output


def test_alert_rules_are_valid() -> None:
    output = run_promtool("check", "rules", ALERTS)
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in output, output


def test_alert_rules_pass_their_unit_tests() -> None:
    output = run_promtool("test", "rules", ALERTS_TEST)
    assert "SUCCESS" in output, output


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query, as a recording rule, with Grafana's variables set."""
    rules = []
    for panel in all_panels(dashboard()["panels"]):
        for n, expr in enumerate(exprs(panel)):
            query = expr
            for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
                query = query.replace(variable, GRAFANA_VARIABLES[variable])
            assert "$" not in query, f"{panel['title']}: unknown variable in {expr}"
            rules.append({"record": f"dashboard:panel_{panel['id']}_{n}", "expr": query})
    path = tmp_path / "dashboard_rules.yml"
    # JSON is YAML: promtool reads it as a rule file.
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = run_promtool("check", "rules", path)
    assert f"SUCCESS: {len(rules)} rules found" in output, output
