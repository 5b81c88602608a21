"""The windows group in the report of a `stream bench` run: our windowed aggregation
against the same in quix-streams and against the stateless exactly-once case of the same
run, with issue 22's targets. Reads the report as JSON, like :mod:`stream.bench.report`."""

from __future__ import annotations

from typing import Any

from stream.bench.cases import WINDOWS

# Issue 22: our windows at least 3x quix-streams' records/s, and 0.8x the stateless case's.
WINDOWS_TO_PEER = 3.0
WINDOWS_TO_STATELESS = 0.8


def windows(report: dict[str, Any]) -> dict[str, Any]:
    """Our windows case's records/s against quix-streams' and the stateless exactly-once
    case's, each as input records over the time from its ready line to its last output
    (the stateless case's first-to-last-output rate where a results file lacks that
    figure); {} when neither windows case ran."""
    ran = {r["name"]: r for r in report["results"]}
    if WINDOWS.ours not in ran and WINDOWS.peer not in ran:
        return {}
    ok = {name: r for name, r in ran.items() if not r["error"]}

    def rate(name: str) -> float | None:
        row = ok.get(name)
        if row is None:
            return None
        value = row.get("ready_records_per_s") or row["records_per_s"]
        return float(value) if value else None

    ours, peer, stateless = rate(WINDOWS.ours), rate(WINDOWS.peer), rate(WINDOWS.reference)
    to_peer = ours / peer if ours and peer else None
    to_stateless = ours / stateless if ours and stateless else None
    reference = ok.get(WINDOWS.reference) or {}
    return {
        "ours": WINDOWS.ours,
        "peer": WINDOWS.peer,
        "stateless": WINDOWS.reference,
        "records_per_s": {"ours": ours, "peer": peer, "stateless": stateless},
        "stateless_clock": "ready" if reference.get("ready_records_per_s") else "first output",
        "outputs": {
            key: ok[name].get("outputs", 0) if name in ok else None
            for key, name in (("ours", WINDOWS.ours), ("peer", WINDOWS.peer))
        },
        "to_peer": to_peer,
        "to_peer_target": WINDOWS_TO_PEER,
        "to_peer_met": None if to_peer is None else to_peer >= WINDOWS_TO_PEER,
        "to_stateless": to_stateless,
        "to_stateless_target": WINDOWS_TO_STATELESS,
        "to_stateless_met": None if to_stateless is None else to_stateless >= WINDOWS_TO_STATELESS,
    }


def window_lines(report: dict[str, Any]) -> list[str]:
    """The windows targets under the table (none if no windows case ran)."""
    row = windows(report)
    if not row:
        return []
    rates, outputs = row["records_per_s"], row["outputs"]

    def rate(key: str) -> str:
        return "- (not run)" if rates[key] is None else f"{rates[key]:,.0f} records/s"

    def ratio(key: str) -> str:
        value = row[key]
        return "- (not run)" if value is None else f"{value:.2f}x ({_verdict(row[key + '_met'])})"

    clock = " (same clock)" if row["stateless_clock"] == "ready" else " (first to last output)"
    return [
        "",
        "windows (1-minute tumbling per sensor, exactly-once; input records/s from the ready "
        "line to the last output):",
        f"  {row['ours']}: {rate('ours')}, {outputs['ours'] or 0:,} windows out",
        f"  {row['peer']}: {rate('peer')}, {outputs['peer'] or 0:,} windows out",
        f"  {row['stateless']}: {rate('stateless')}{clock}",
        f"  ours against quix-streams (target >= {row['to_peer_target']:g}x): " + ratio("to_peer"),
        f"  ours against the stateless case (target >= {row['to_stateless_target']:g}x): "
        + ratio("to_stateless"),
    ]


def _verdict(met: bool | None) -> str:
    return "not run" if met is None else "met" if met else "missed"
