"""The start line's names of the optional stages (stream.stages_line): what is on, in
one line, never a credential."""

from __future__ import annotations

from typing import Any

from stream.config import RunSettings
from stream.stages_line import describe_stages, shown_url

DSN = "postgresql://u:pw@localhost/db"


def settings(**given: Any) -> RunSettings:
    return RunSettings(**given)


def test_no_optional_stage_is_an_empty_text() -> None:
    assert describe_stages(settings()) == ""


def test_enrichment_and_the_postgres_sink_are_named_with_their_target() -> None:
    line = describe_stages(
        settings(
            enrich_url="http://127.0.0.1:8080/sensors/{sensor_id}",
            sink="postgres",
            postgres_dsn=DSN,
        )
    )
    assert line == (
        "enrichment: GET http://127.0.0.1:8080/sensors/{sensor_id} -> meta; "
        "sink: postgres table sensor_features"
    )


def test_the_table_follows_the_transform_and_both_sinks_are_named() -> None:
    line = describe_stages(
        settings(transform="identity", sink="kafka,postgres", postgres_dsn=DSN, output_topic="o")
    )
    assert line == "sinks: kafka topic o, postgres table stream_results"
    named = settings(sink="postgres", postgres_dsn=DSN, postgres_table="app.mine")
    assert describe_stages(named) == "sink: postgres table app.mine"


def test_a_function_enrichment_names_the_function_and_its_field() -> None:
    line = describe_stages(settings(enrich="mymod:lookup", enrich_field="extra"))
    assert line == "enrichment: mymod:lookup -> extra"


def test_formats_name_the_registry() -> None:
    line = describe_stages(
        settings(input_format="avro", schema_registry_url="http://127.0.0.1:8081/apis/ccompat/v7")
    )
    assert (
        line == "formats: avro in, json out (schema registry http://127.0.0.1:8081/apis/ccompat/v7)"
    )


def test_credentials_in_urls_never_show() -> None:
    line = describe_stages(
        settings(
            enrich_url="https://bob:s3cret@meta.example/sensors/{sensor_id}?api_key=k3y&x=1",
            output_format="protobuf",
            schema_registry_url="https://reg:pa55@registry.example",
        )
    )
    for secret in ("s3cret", "k3y", "pa55", "bob:"):
        assert secret not in line, line
    assert "https://***@meta.example/sensors/{sensor_id}?api_key=***&x=1 -> meta" in line
    assert "registry.example" in line
    # A text that is not a URL template shows its scheme and host only.
    assert shown_url("https://u:p@host.example/{not closed") == "https://host.example/..."


def test_windows_are_named_with_their_shape_field_time_and_aggregates() -> None:
    settings = RunSettings(
        window="hopping:5m/1m",
        guarantee="exactly-once",
        event_time="ts",
        aggregate="count,max",
        idle_close="30s",
    )
    assert describe_stages(settings) == (
        "windows: hopping:5m/1m grace 0s of values by ts: count,max (emit close, idle close 30s)"
    )
    assert "the Kafka timestamp" in describe_stages(
        RunSettings(window="tumbling:1m", guarantee="exactly-once")
    )
