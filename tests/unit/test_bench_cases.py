"""`stream bench`'s catalogue: which cases run, on which input, in which order, judged
against which reference (no broker)."""

from __future__ import annotations

import dataclasses

import pytest

from stream.bench.cases import (
    MATRIX_REFERENCE,
    PAIRS,
    SINK_REFERENCE,
    WINDOW_KEYS,
    WINDOWS,
    Case,
    Payload,
    catalogue,
    choose,
)
from stream.config import BenchSettings

EVERYTHING = BenchSettings(
    postgres_dsn="postgresql://bench@localhost/bench",
    schema_registry_url="http://localhost:8080/apis/ccompat/v7",
)


def names(cases: list[Case]) -> list[str]:
    return [c.name for c in cases]


def by_name(cases: list[Case]) -> dict[str, Case]:
    return {c.name: c for c in cases}


def test_names_are_unique_and_quick_runs_the_first_four() -> None:
    cases = catalogue(EVERYTHING, 2)
    assert len(set(names(cases))) == len(cases)
    quick = catalogue(dataclasses.replace(EVERYTHING, quick=True), 2)
    assert names(quick) == ["ceiling", "naive", "identity", "sensor-features"]
    assert names(cases)[:4] == names(quick)


def test_both_sizes_run_both_guarantees_each_exactly_once_right_after_its_twin() -> None:
    cases = catalogue(dataclasses.replace(EVERYTHING, payload=1300, values=300), 2)
    order = names(cases)
    for pair in PAIRS:
        assert order.index(pair.exactly_once) == order.index(pair.at_least_once) + 1
    cases_by_name = by_name(cases)
    small, large = ((cases_by_name[p.at_least_once], cases_by_name[p.exactly_once]) for p in PAIRS)
    assert [c.payload.name for c in small] == ["sensor", "sensor"]
    assert [c.payload.values for c in small] == [65, 65]  # --payload 1300 / ~20 B a reading
    assert [c.payload.name for c in large] == ["sensor-large", "sensor-large"]
    assert [c.payload.values for c in large] == [300, 300]  # --values
    for at_least_once, exactly_once in (small, large):
        assert "--guarantee" not in at_least_once.command
        assert exactly_once.command[-2:] == ["--guarantee", "exactly-once"]
        assert exactly_once.command[:-2] == at_least_once.command
        assert exactly_once.group == "guarantees"
    assert large[0].group == "guarantees"


def test_the_guarantee_pairs_run_before_the_matrix_cases_fill_the_broker() -> None:
    order = names(catalogue(EVERYTHING, 2))
    last_pair = max(order.index(p.exactly_once) for p in PAIRS)
    assert last_pair < order.index("matrix-inverse")
    assert last_pair < order.index("sensor-features-avro")


def test_each_case_names_the_reference_it_is_compared_against() -> None:
    cases = catalogue(EVERYTHING, 2)
    matrix = [c for c in cases if c.payload.name == "matrix"]
    assert matrix
    assert {c.reference for c in matrix} == {MATRIX_REFERENCE}
    assert {c.reference for c in cases if c.sink} == {SINK_REFERENCE}
    windows = [c for c in cases if c.group == "windows"]
    assert {c.reference for c in windows} == {PAIRS[0].exactly_once}
    others = [c for c in cases if c not in matrix and not c.sink and c not in windows]
    assert {c.reference for c in others} == {"ceiling"}
    references = {c.reference for c in cases}
    assert references <= set(names(cases))


def test_the_io_cases_are_timed_from_the_ready_line_and_the_rest_from_the_first_output() -> None:
    cases = catalogue(EVERYTHING, 2)
    assert {c.name for c in cases if c.timed_from == "ready"} == {
        "lookups: no enrichment",
        "lookups: enrich, cold cache",
        "lookups: enrich, 99% cache hits",
    }
    assert {c.name for c in cases if c.timed_from == "input end"} == {WINDOWS.ours, WINDOWS.peer}
    others = {c.timed_from for c in cases if c.group not in ("io", "windows")}
    assert others == {"first output"}


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        (
            "guarantees",  # each exactly-once case brings its at-least-once twin
            [
                "sensor-features",
                "sensor-features, exactly-once",
                "sensor-features-large",
                "sensor-features-large, exactly-once",
            ],
        ),
        ("sensor-features", ["sensor-features"]),
        (
            "ceiling,executors",
            ["ceiling", *[f"matrix-inverse, batched {e}" for e in ("inline", "thread", "process")]],
        ),
        ("sink", ["sink-per-row", "sensor-features-postgres"]),
        (
            "windows",  # the group brings the stateless case it is set beside, and its twin
            ["sensor-features", PAIRS[0].exactly_once, WINDOWS.ours, WINDOWS.peer],
        ),
        (
            WINDOWS.peer,  # a name with a comma; one windows case brings the other
            ["sensor-features", PAIRS[0].exactly_once, WINDOWS.ours, WINDOWS.peer],
        ),
        (
            "sensor-features-large, exactly-once,ceiling",  # the name, not "exactly-once"
            ["ceiling", "sensor-features-large", "sensor-features-large, exactly-once"],
        ),
    ],
)
def test_cases_chooses_by_name_or_group_in_catalogue_order(
    wanted: str, expected: list[str]
) -> None:
    settings = dataclasses.replace(EVERYTHING, cases=wanted)
    chosen, notes = choose(catalogue(settings, 2), settings)
    assert names(chosen) == expected
    assert notes == []


def test_groups_without_their_service_are_skipped_in_one_line_each() -> None:
    settings = BenchSettings()
    chosen, notes = choose(catalogue(settings, 2), settings)
    assert not any(c.sink for c in chosen)
    assert not any(c.group == "formats" for c in chosen)
    assert len(notes) == 2
    assert "--schema-registry-url" in notes[0]
    assert "--postgres-dsn" in notes[1]
    only = dataclasses.replace(settings, cases="identity")
    assert choose(catalogue(only, 2), only) == ([by_name(catalogue(only, 2))["identity"]], [])


def test_the_windows_group_runs_right_after_the_stateless_exactly_once_case() -> None:
    order = names(catalogue(EVERYTHING, 2))
    after = order.index(PAIRS[0].exactly_once)
    assert order[after + 1 : after + 3] == [WINDOWS.ours, WINDOWS.peer]
    assert WINDOWS.ours not in names(catalogue(dataclasses.replace(EVERYTHING, quick=True), 2))


def test_both_windows_cases_read_one_input_of_many_sensors_over_minutes_of_event_time() -> None:
    cases = by_name(catalogue(EVERYTHING, 2))
    ours, peer = cases[WINDOWS.ours], cases[WINDOWS.peer]
    assert ours.payload == peer.payload
    windows = ours.payload
    assert windows.name not in {c.payload.name for c in cases.values() if c.group != "windows"}
    assert windows.values == cases[PAIRS[0].exactly_once].payload.values  # the same events
    assert (windows.keys(200_000), windows.keys(1000)) == (WINDOW_KEYS, WINDOW_KEYS)
    assert windows.event_span >= 180  # several windows close while the input is read
    for case in (ours, peer):
        assert (case.group, case.timed_from, case.latency) == ("windows", "input end", False)
        assert not case.sink


def test_ours_runs_the_issues_command_and_quix_the_same_aggregation() -> None:
    cases = by_name(catalogue(EVERYTHING, 2))
    ours, peer = cases[WINDOWS.ours], cases[WINDOWS.peer]
    assert ours.service
    assert ours.command[ours.command.index("run") + 1 :] == [
        *("--guarantee", "exactly-once", "--window", "tumbling:60s"),
        *("--aggregate", "count,sum,mean,std,min,max", "--value-field", "values"),
        *("--event-time", "ts"),
    ]
    assert "--transform" not in ours.command
    assert not peer.service
    assert peer.command[1:3] == ["-m", "stream.bench.quix_windows"]
    options = dict(zip(peer.command[3::2], peer.command[4::2], strict=True))
    assert options == {
        "--window": "60",
        "--value-field": "values",
        "--event-time": "ts",
    }  # and quix's own commit interval
    assert [c.name for c in cases.values() if c.ready_too] == [PAIRS[0].exactly_once]


def test_a_payload_has_a_fixed_number_of_keys_or_one_per_so_many_records() -> None:
    assert Payload("a", "sensor").keys(10_000) == 64
    assert Payload("a", "sensor", per_key=100).keys(10_000) == 100
    assert Payload("a", "sensor", per_key=100, key_count=7).keys(10_000) == 7
