"""The start-up step: from settings and the transform to the workers' FormatSpec.

Registers the transform's output schema under ``<output topic>-value``
(TopicNameStrategy) and refuses in one line when the registry's compatibility rules
reject it (HTTP 409), or when the transform has no output schema for the format.
Blocking HTTP: the service calls it before its loop is busy (or via
``asyncio.to_thread``).
"""

from __future__ import annotations

from stream.config import ProduceSettings, RunSettings, registry_password
from stream.formats.registry import (
    IncompatibleSchema,
    RegistryClient,
    RegistryConfig,
    RegistryError,
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
    if fout == "json" or (transform.passthrough and fin == fout):
        # No output schema: JSON out, or the input's own bytes (and schema ids) passed on.
        return FormatSpec(fin, fout, config)
    if transform.output is None:
        why = "it passes its input through" if transform.passthrough else "it declares none"
        raise RegistryError(
            f"--output-format {fout}: transform {transform.name!r} has no output schema "
            f"({why}); declare one with transforms.output_schema, or use --output-format json"
        )
    client = client or RegistryClient(config)
    subject = f"{settings.output_topic}-value"
    schema_id, text = register_output(
        client, subject, fout, transform.output, f"the output schema of {transform.name!r}"
    )
    return FormatSpec(fin, fout, config, schema_id, text)
