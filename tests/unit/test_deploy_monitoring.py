"""The monitoring files in deploy/ are valid and only use metrics the service exports.

(promtool's checks of the same files are in tests/monitoring, as they need Debian's
``prometheus`` package); every ``stream_*`` name in the alerts and in the
Grafana dashboard must be a series that ``stream.metrics.Metrics`` exposes, so renaming
a metric without updating the dashboard or the alerts fails here.
"""

from __future__ import annotations

import functools
import re

from prometheus_client import generate_latest

from stream.metrics import Metrics
from tests.dashboard import (
    ALERT_NAMES,
    ALERTS,
    ALERTS_TEST,
    CONFIG,
    GRAFANA,
    all_panels,
    dashboard,
    exprs,
)

METRIC_NAME = re.compile(r"\bstream_[A-Za-z0-9_]*[A-Za-z0-9]")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# Panels an on-call engineer relies on; the alerts' descriptions refer to them by title.
REQUIRED_PANELS = {
    "Version": "stat",
    "Throughput in / out": "timeseries",
    "Consumer lag per partition": "timeseries",
    "Consumer lag (seconds)": "timeseries",
    "End-to-end latency": "timeseries",
    "Transform duration": "timeseries",
    "Dead letters by reason": "timeseries",
    "In-flight messages": "timeseries",
    "In-flight bytes": "timeseries",
    "Workers alive": "timeseries",
    "Worker restarts": "timeseries",
    "Rebalances": "timeseries",
    "Commit duration": "timeseries",
    "Event loop lag": "timeseries",
    "Batch size": "timeseries",
}

# The metric families (as prometheus_client names them) each of those panels shows.
PANEL_FAMILIES = {
    "Version": {"stream_build"},
    "Throughput in / out": {"stream_messages_consumed", "stream_messages_produced"},
    "Consumer lag per partition": {"stream_consumer_lag"},
    "Consumer lag (seconds)": {"stream_consumer_lag_seconds"},
    "End-to-end latency": {"stream_end_to_end_latency_seconds"},
    "Transform duration": {"stream_transform_duration_seconds"},
    "Dead letters by reason": {"stream_messages_dead_lettered"},
    "In-flight messages": {"stream_inflight_messages"},
    "In-flight bytes": {"stream_inflight_bytes"},
    "Workers alive": {"stream_pool_workers"},
    "Worker restarts": {"stream_worker_restarts"},
    "Rebalances": {"stream_rebalances"},
    "Commit duration": {"stream_commit_duration_seconds"},
    "Event loop lag": {"stream_event_loop_lag_seconds"},
    "Batch size": {"stream_batch_size"},
}

# ---- helpers ------------------------------------------------------------------------------


@functools.cache
def exposed_series() -> dict[str, str]:
    """Each series name the service exposes, mapped to its family's name.

    prometheus_client names a Counter family without ``_total`` and exposes
    ``<name>_total``; an Info family ``stream_build`` is exposed as ``stream_build_info``;
    a Histogram as ``<name>_bucket``, ``_sum`` and ``_count``. ``_created`` series are
    left out: dashboards and alerts have no business with them.
    """
    metrics = Metrics("identity", "in", "out", "in.dlq")
    series: dict[str, str] = {}
    for family in metrics.registry.collect():
        match family.type:
            case "counter":
                names = [f"{family.name}_total"]
            case "info":
                names = [f"{family.name}_info"]
            case "histogram":
                names = [family.name + suffix for suffix in HISTOGRAM_SUFFIXES]
            case "gauge":
                names = [family.name]
            case other:
                raise AssertionError(f"{family.name}: unexpected metric type {other}")
        for name in names:
            series[name] = family.name
    return series


def metric_names(text: str) -> set[str]:
    return set(METRIC_NAME.findall(text))


def unknown_names(used: set[str]) -> list[str]:
    """The names in ``used`` that the service does not expose.

    A histogram's ``_bucket``, ``_sum`` and ``_count`` are exposed; its bare family name
    is not a series, so a query on it is reported too.
    """
    series = exposed_series()
    histograms = {family for name, family in series.items() if name.endswith("_bucket")}
    problems = []
    for name in sorted(used - series.keys()):
        hint = f" (a histogram: use {name}_bucket, _sum or _count)" if name in histograms else ""
        problems.append(name + hint)
    return problems


def alert_blocks() -> dict[str, str]:
    """The text of each ``- alert:`` entry of alerts.yml, by alert name."""
    text = ALERTS.read_text(encoding="utf-8")
    parts = re.split(r"^\s*- alert:\s*", text, flags=re.MULTILINE)[1:]
    blocks = {}
    for part in parts:
        name, _, body = part.partition("\n")
        blocks[name.strip()] = body
    return blocks


# ---- the declared metrics -----------------------------------------------------------------


def test_the_service_declares_the_metrics_the_monitoring_files_are_built_on() -> None:
    series = exposed_series()
    expected = {
        "stream_messages_consumed_total",
        "stream_messages_produced_total",
        "stream_messages_failed_total",
        "stream_messages_dead_lettered_total",
        "stream_worker_restarts_total",
        "stream_rebalances_total",
        "stream_consumer_lag",
        "stream_consumer_lag_seconds",
        "stream_inflight_messages",
        "stream_inflight_bytes",
        "stream_pool_workers",
        "stream_event_loop_lag_seconds",
        "stream_last_processed_timestamp_seconds",
        "stream_build_info",
        *(
            h + s
            for h in (
                "stream_end_to_end_latency_seconds",
                "stream_transform_duration_seconds",
                "stream_batch_size",
                "stream_commit_duration_seconds",
            )
            for s in HISTOGRAM_SUFFIXES
        ),
    }
    assert sorted(expected - series.keys()) == []


def test_series_names_match_what_metrics_serves() -> None:
    """The names worked out from the families are the ones in the text /metrics serves.

    A labelled family has no series until a label set is used (the per-partition lag
    gauges: until partitions are assigned), so those are left out of the comparison.
    """
    metrics = Metrics("identity", "in", "out", "in.dlq")
    empty = {f.name for f in metrics.registry.collect() if not f.samples}
    text = generate_latest(metrics.registry).decode()
    served = {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    expected = {name for name, family in exposed_series().items() if family not in empty}
    assert {n for n in served if not n.endswith("_created")} == expected


# ---- Prometheus ---------------------------------------------------------------------------


def test_prometheus_config_scrapes_the_stream_job() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    assert re.search(r"^\s*-\s*job_name:\s*['\"]?stream['\"]?\s*$", text, re.MULTILINE)
    assert re.search(r"^\s*-\s*['\"]?stream:9400['\"]?\s*$", text, re.MULTILINE)
    assert re.search(r"^\s*scrape_interval:\s*15s\s*$", text, re.MULTILINE)
    assert re.search(r"^rule_files:\s*\n\s*-\s*['\"]?alerts\.yml['\"]?\s*$", text, re.MULTILINE)
    # Alerting stays unconfigured (no Alertmanager in the stack): only a commented example.
    assert not re.search(r"^alerting:", text, re.MULTILINE)


def test_every_alert_is_complete_and_tested() -> None:
    blocks = alert_blocks()
    assert set(blocks) == ALERT_NAMES
    tests = ALERTS_TEST.read_text(encoding="utf-8")
    for name, body in blocks.items():
        for key in ("expr:", "for:", "severity:", "summary:", "description:"):
            assert key in body, f"{name} has no {key}"
        assert re.search(r"severity:\s*(critical|warning)\b", body), name
        assert "{{ $labels.instance }}" in body, f"{name} does not name the instance"
        assert "Check first" in body, f"{name} does not say what to check first"
        assert re.search(rf"alertname:\s*{name}\s*$", tests, re.MULTILINE), f"{name} untested"
        assert re.search(rf"alertname:\s*{name}\s*\n\s*exp_alerts:\s*\n\s*- exp_labels:", tests), (
            f"no test case where {name} fires"
        )


def test_alerts_use_only_metrics_the_service_exports() -> None:
    used = metric_names(ALERTS.read_text(encoding="utf-8"))
    assert used, "no stream_* metric found in alerts.yml"
    assert unknown_names(used) == []


def test_alerts_select_the_stream_job() -> None:
    text = ALERTS.read_text(encoding="utf-8")
    selectors = re.findall(r"\b(?:stream_[A-Za-z0-9_]+|up)\{([^}]*)\}", text)
    assert selectors
    for labels in selectors:
        assert 'job="stream"' in labels, labels


# ---- Grafana ------------------------------------------------------------------------------


def test_dashboard_identity_and_variables() -> None:
    d = dashboard()
    assert d["uid"] == "stream-overview"
    assert d["title"] == "stream"
    assert 36 <= d["schemaVersion"] <= 41
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    query = instance["query"]
    query_text = query["query"] if isinstance(query, dict) else query
    assert instance["type"] == "query"
    assert re.fullmatch(r"label_values\(\s*stream_build_info\s*,\s*instance\s*\)", query_text)
    assert instance["datasource"]["uid"] == "${datasource}"


def test_dashboard_has_the_panels_on_call_needs() -> None:
    panels = {p["title"]: p for p in all_panels(dashboard()["panels"])}
    missing = sorted(set(REQUIRED_PANELS) - panels.keys())
    assert missing == [], f"panels missing from the dashboard: {missing}"
    series = exposed_series()
    for title, kind in REQUIRED_PANELS.items():
        assert panels[title]["type"] == kind, title
        shown = {series.get(name, name) for e in exprs(panels[title]) for name in metric_names(e)}
        assert shown == PANEL_FAMILIES[title], title
    for title in ("End-to-end latency", "Transform duration", "Commit duration"):
        queries = " ".join(exprs(panels[title]))
        for q in ("0.5", "0.99"):
            assert f"histogram_quantile({q}," in queries, f"{title} has no p{q}"


def test_every_panel_has_a_query() -> None:
    titles = []
    for panel in all_panels(dashboard()["panels"]):
        if panel["type"] == "row":
            continue
        titles.append(panel["title"])
        assert panel.get("targets"), f"panel {panel['title']!r} has no target"
        for target in panel["targets"]:
            assert str(target.get("expr", "")).strip(), f"{panel['title']}: empty expr"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert len(titles) == len(set(titles)), "two panels share a title"


def test_dashboard_uses_only_metrics_the_service_exports() -> None:
    used: set[str] = set()
    for panel in all_panels(dashboard()["panels"]):
        for expr in exprs(panel):
            used |= metric_names(expr)
    assert used, "no stream_* metric found in the dashboard"
    assert unknown_names(used) == []


def test_grafana_provisioning() -> None:
    datasource = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(
        encoding="utf-8"
    )
    for line in (
        "type: prometheus",
        "uid: prometheus",
        "url: http://prometheus:9090",
        "isDefault: true",
    ):
        assert re.search(rf"^\s*-?\s*{re.escape(line)}\s*$", datasource, re.MULTILINE), line
    provider = (GRAFANA / "provisioning" / "dashboards" / "stream.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s*type:\s*file\s*$", provider, re.MULTILINE)
    assert re.search(r"^\s*path:\s*/var/lib/grafana/dashboards\s*$", provider, re.MULTILINE)
