"""The deploy kit's monitoring files as the tests read them: where they are, the Grafana
dashboard's panels and queries, and the alerts the rules file must hold. Shared by the
unit checks of those files, promtool's checks and the broker tests of a live service."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "stream.json"

ALERT_NAMES = {
    "StreamLagGrowing",
    "StreamNoProgress",
    "StreamDeadLetterRate",
    "StreamWorkerRestarts",
    "StreamTargetDown",
    "StreamEventLoopLagHigh",
    "StreamSinkErrors",
}

QUERIED_NAME = re.compile(r"\bstream_[a-z_]+")  # a metric name in a dashboard query


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))  # panels nested in collapsed rows


def exprs(panel: dict[str, Any]) -> list[str]:
    return [str(t.get("expr", "")) for t in panel.get("targets", [])]


def dashboard_metric_names() -> set[str]:
    """Every ``stream_*`` name the dashboard queries: its panels' and its variables'."""
    board = dashboard()
    queries: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            queries.extend(t["expr"] for t in panel.get("targets", []) if "expr" in t)
            walk(panel.get("panels", []))  # rows hold their collapsed panels

    walk(board["panels"])
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        queries.append(text)
    assert len(queries) >= 10
    return {name for expr in queries for name in QUERIED_NAME.findall(expr)}
