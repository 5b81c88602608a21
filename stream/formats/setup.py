"""The start-up step: from settings and the transform to the workers' FormatSpec.

First checks that --schema-registry-url answers as a Confluent-compatible registry
(``GET <url>/subjects`` is a JSON list); otherwise one line naming what was tried and
what came back, exit 2 (for Apicurio Registry's bare address, the hint to append
``/apis/ccompat/v7``). Then registers the transform's output schema under ``<output topic>-value``
(TopicNameStrategy) and refuses in one line when the registry's compatibility rules
reject it (HTTP 409), or when the transform has no output schema for the format.
Blocking HTTP: the service calls it before its loop is busy (or via
``asyncio.to_thread``).
"""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

from stream.config import ConfigError, ProduceSettings, RunSettings, registry_password
from stream.formats.registry import (
    IncompatibleSchema,
    RegistryClient,
    RegistryConfig,
    RegistryError,
    RegistryUnavailable,
    SchemaNotFound,
    SchemaRefused,
    SchemaType,
)
from stream.formats.spec import JSON, Format, FormatSpec
from transforms import RecordSchema, Transform


def registry_config(
    settings: RunSettings | ProduceSettings, retry_for: float = 10.0
) -> RegistryConfig:
    """The registry settings of ``stream run`` or ``stream produce`` (password files read)."""
    return RegistryConfig(
        url=settings.schema_registry_url,
        username=settings.schema_registry_username,
        password=registry_password(settings),
        cafile=settings.schema_registry_cafile,
        retry_for=retry_for,
    )


APICURIO_API = "/apis/ccompat/v7"  # Apicurio Registry's Confluent-compatible API


def check_registry_api(client: RegistryClient) -> None:
    """The registry's URL answers as a Confluent-compatible registry; a
    :class:`ConfigError` (exit 2) naming what was tried and what came back otherwise. An
    outage stays :class:`RegistryUnavailable` (exit 1), now naming the URL, and refused
    credentials stay a :class:`RegistryError`."""
    url = client.config.url
    shown = _shown(url)
    try:
        client.subjects()
    except (SchemaNotFound, SchemaRefused) as exc:
        answer = str(exc).removeprefix("schema registry: subjects: ")
        raise ConfigError(
            f"--schema-registry-url {shown} does not answer as a Confluent-compatible Schema "
            f"Registry: GET {shown}/subjects: {answer}, not a JSON list of subjects"
            f"{_hint(client)}"
        ) from None
    except RegistryUnavailable as exc:
        raise RegistryUnavailable(f"--schema-registry-url {shown}: {exc}") from None


def _hint(client: RegistryClient) -> str:
    """Where the API is, when the URL is an Apicurio Registry's bare address."""
    url = client.config.url
    if urlsplit(url).path not in ("", "/"):
        return ""
    there = dataclasses.replace(client.config, url=url + APICURIO_API, retry_for=0.0)
    try:
        RegistryClient(there).subjects()
    except RegistryError:
        return f" (an Apicurio Registry's base URL ends in {APICURIO_API})"
    return f"; append {APICURIO_API} (Apicurio Registry's API answers at {_shown(there.url)})"


def _shown(url: str) -> str:
    """The URL without user information (it may hold a password)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def schema_for(fmt: Format, schema: RecordSchema) -> tuple[SchemaType, str]:
    """The registry's schema type and the text of a declared schema in a format."""
    if fmt == "avro":
        from stream.formats.avro import schema_text  # noqa: PLC0415

        return "AVRO", schema_text(schema)
    from stream.formats.protobuf import proto_text  # noqa: PLC0415

    return "PROTOBUF", proto_text(schema)


def register_output(
    client: RegistryClient, subject: str, fmt: Format, schema: RecordSchema, what: str
) -> tuple[int, str]:
    """Register ``schema`` under ``subject``; (id, text). One-line RegistryError on refusal."""
    schema_type, text = schema_for(fmt, schema)
    try:
        return client.register(subject, text, schema_type), text
    except IncompatibleSchema as exc:
        raise RegistryError(
            f"the schema registry refuses {what} under subject {subject!r} (its compatibility "
            f"rules reject it): {exc}"
        ) from None


def prepare(
    settings: RunSettings, transform: Transform, client: RegistryClient | None = None
) -> FormatSpec:
    """The FormatSpec for the workers of ``stream run``; registers the output schema.

    Raises RegistryError (one line) when the registry
    refuses or cannot be reached, ValueError-free otherwise.
    """
    fin: Format = settings.input_format
    fout: Format = settings.output_format
    if fin == "json" and fout == "json":
        return JSON
    config = registry_config(settings, settings.schema_registry_retry)
    client = client or RegistryClient(config)
    check_registry_api(client)
    if fout == "json" or (transform.passthrough and fin == fout):
        # No output schema: JSON out, or the input's own bytes (and schema ids) passed on.
        return FormatSpec(fin, fout, config)
    if transform.output is None:
        why = "it passes its input through" if transform.passthrough else "it declares none"
        raise RegistryError(
            f"--output-format {fout}: transform {transform.name!r} has no output schema "
            f"({why}); declare one with transforms.output_schema, or use --output-format json"
        )
    subject = f"{settings.output_topic}-value"
    schema_id, text = register_output(
        client, subject, fout, transform.output, f"the output schema of {transform.name!r}"
    )
    return FormatSpec(fin, fout, config, schema_id, text)
