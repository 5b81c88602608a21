"""`stream bench`'s catalogue: which cases run, on which input, in which order, judged
against which reference (no broker)."""

from __future__ import annotations

import dataclasses

import pytest

from stream.bench.cases import (
    MATRIX_REFERENCE,
    PAIRS,
    SINK_REFERENCE,
    Case,
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
    others = [c for c in cases if c not in matrix and not c.sink]
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
    assert {c.timed_from for c in cases if c.group != "io"} == {"first output"}


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
