"""The optional stages of ``stream run``, named for its start line: record formats,
enrichment and the sinks beside the output topic, e.g.::

    enrichment: GET http://127.0.0.1:8080/sensors/{sensor_id} -> meta;
    sink: postgres table sensor_features

or ``windows: tumbling:60s grace 5s of values by ts: count,mean (emit close)``.

Pure (no I/O). URLs are shown with their credentials hidden (user information, and
query values named like a token or password), as the enrichment template redacts them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from stream.config import RunSettings
from stream.sink.schema import result_table
from stream.url_template import TemplateError, UrlTemplate


def describe_stages(settings: RunSettings) -> str:
    """The optional stages that are on, ``; ``-separated; "" when none is (JSON in and
    out, no enrichment, results only to the output topic)."""
    stages = (_formats(settings), _enrichment(settings), _windows(settings), _sinks(settings))
    return "; ".join(part for part in stages if part)


def _windows(settings: RunSettings) -> str:
    spec = settings.window_spec
    if spec is None:
        return ""
    idle = f", idle close {settings.idle_close}" if settings.idle_close else ""
    time = "the Kafka timestamp" if settings.event_time == "kafka" else settings.event_time
    return (
        f"windows: {settings.window} grace {settings.grace} of {settings.value_field} by "
        f"{time}: {settings.aggregate} (emit {settings.emit}{idle})"
    )


def _formats(settings: RunSettings) -> str:
    if settings.input_format == "json" and settings.output_format == "json":
        return ""
    registry = shown_url(settings.schema_registry_url)
    return (
        f"formats: {settings.input_format} in, {settings.output_format} out "
        f"(schema registry {registry})"
    )


def _enrichment(settings: RunSettings) -> str:
    if settings.enrich_url:
        return f"enrichment: GET {shown_url(settings.enrich_url)} -> {settings.enrich_field}"
    if settings.enrich:
        return f"enrichment: {settings.enrich} -> {settings.enrich_field}"
    return ""


def _sinks(settings: RunSettings) -> str:
    if settings.sinks == ("kafka",):
        return ""
    named = []
    for sink in settings.sinks:
        if sink == "kafka":
            named.append(f"kafka topic {settings.output_topic}")
        else:
            table = result_table(settings.transform, settings.postgres_table)
            named.append(f"postgres table {table.name}")
    return f"sink{'s' if len(named) > 1 else ''}: {', '.join(named)}"


def shown_url(url: str) -> str:
    """``url`` with its credentials hidden; only its scheme and host when it cannot be
    read as a URL (it is then not shown at all rather than shown with a secret)."""
    try:
        return UrlTemplate.parse(url).shown
    except TemplateError:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}/..."
