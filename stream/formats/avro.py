"""Avro values (fastavro), framed in the Confluent wire format."""

from __future__ import annotations

import io
import json
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from stream.formats import framing
from stream.formats.codec import Reader, RegistryDecoder, SchemaSource
from stream.formats.registry import RegisteredSchema
from transforms import BadRecord, RecordSchema
from transforms.messages import bounded
from transforms.reasons import Reason

_TYPES: dict[str, Any] = {
    "string": "string",
    "long": "long",
    "int": "int",
    "double": "double",
    "boolean": "boolean",
    "double[]": {"type": "array", "items": "double"},
    "long[]": {"type": "array", "items": "long"},
    "int[]": {"type": "array", "items": "int"},
}


def avro_schema(schema: RecordSchema) -> dict[str, Any]:
    """The Avro record schema of a declared output schema."""
    fields: list[dict[str, Any]] = []
    for f in schema.fields:
        if f.optional:
            fields.append({"name": f.name, "type": ["null", _TYPES[f.type]], "default": None})
        else:
            fields.append({"name": f.name, "type": _TYPES[f.type]})
    return {"type": "record", "name": schema.name, "namespace": schema.namespace, "fields": fields}


def schema_text(schema: RecordSchema) -> str:
    return json.dumps(avro_schema(schema), separators=(",", ":"))


def _reader(registered: RegisteredSchema) -> Reader:
    parsed = parse_schema(json.loads(registered.text))

    def read(value: bytes, offset: int) -> Any:
        buffer = io.BytesIO(value)
        buffer.seek(offset)
        item = schemaless_reader(buffer, parsed, None)
        if buffer.tell() != len(value):
            raise BadRecord(
                Reason.DECODE_ERROR, f"{len(value) - buffer.tell()} bytes left after the Avro body"
            )
        return item

    return read


def decoder(client: SchemaSource) -> RegistryDecoder:
    return RegistryDecoder(client, _reader, "AVRO")


class AvroEncoder:
    """Outputs as Avro under one registered schema id."""

    def __init__(self, schema_id: int, text: str) -> None:
        self._schema = parse_schema(json.loads(text))
        self._header = framing.header(schema_id)

    def encode_batch(self, items: list[Any]) -> list[bytes | BadRecord]:
        out: list[bytes | BadRecord] = []
        for item in items:
            buffer = io.BytesIO()
            buffer.write(self._header)
            try:
                schemaless_writer(buffer, self._schema, item)
            except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
                out.append(BadRecord(Reason.ENCODE_ERROR, bounded(f"{type(exc).__name__}: {exc}")))
                continue
            out.append(buffer.getvalue())
        return out
