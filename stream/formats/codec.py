"""The decode loop that the registry formats (Avro, Protobuf) share: Confluent-framed
values whose schema id picks a reader. The interface every format implements
(:class:`~transforms.codec.Decoder`, :class:`~transforms.codec.Encoder`) and JSON's
implementation live in :mod:`transforms.codec`.

Only a registry outage escapes as an exception
(:class:`~stream.formats.registry.RegistryUnavailable`): the batch is retried, no record
becomes a dead letter for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from stream.formats import framing
from stream.formats.registry import RegisteredSchema, SchemaNotFound
from transforms import BadRecord
from transforms.checks import check_size
from transforms.codec import Decoded
from transforms.messages import bounded
from transforms.reasons import Reason

Reader = Callable[[bytes, int], Any]
"""Decodes the value from an offset (just after the schema id) to its end."""


class SchemaSource(Protocol):
    """Schemas by id: the registry client, or a dict-backed one in unit tests."""

    def schema(self, schema_id: int) -> RegisteredSchema: ...


class RegistryDecoder:
    """Confluent-framed values: the schema id picks a reader, built once per id."""

    def __init__(
        self,
        client: SchemaSource,
        make_reader: Callable[[RegisteredSchema], Reader],
        schema_type: str,
    ) -> None:
        self.client = client
        self._make_reader = make_reader
        self._schema_type = schema_type
        self._readers: dict[int, Reader | BadRecord] = {}

    def reader(self, schema_id: int) -> Reader:
        found = self._readers.get(schema_id)
        if found is None:
            try:
                schema = self.client.schema(schema_id)
            except SchemaNotFound:
                # Not cached: an id unknown now may be registered later.
                raise BadRecord(
                    Reason.UNKNOWN_SCHEMA, f"the registry has no schema with id {schema_id}"
                ) from None
            if schema.schema_type != self._schema_type:
                found = BadRecord(
                    Reason.DECODE_ERROR,
                    f"schema id {schema_id} is {schema.schema_type}, not {self._schema_type}",
                )
            else:
                try:
                    found = self._make_reader(schema)
                except Exception as exc:  # noqa: BLE001 - a schema we cannot use is per record
                    found = BadRecord(
                        Reason.DECODE_ERROR,
                        bounded(f"schema id {schema_id} is unusable: {type(exc).__name__}: {exc}"),
                    )
            self._readers[schema_id] = found
        if isinstance(found, BadRecord):
            raise found
        return found

    def decode_batch(self, values: Sequence[bytes | None], max_bytes: int) -> Decoded:
        out = Decoded()
        for index, checked in enumerate(values):
            try:
                value = check_size(checked, max_bytes)
                schema_id, offset = framing.parse(value)
                read = self.reader(schema_id)
            except BadRecord as bad:
                out.errors.append((index, bad.reason, bad.message))
                continue
            try:
                item = read(value, offset)
            except BadRecord as bad:
                out.errors.append((index, bad.reason, bad.message))
                continue
            except Exception as exc:  # noqa: BLE001 - any decoder failure is this record's
                out.errors.append(
                    (index, Reason.DECODE_ERROR, bounded(f"{type(exc).__name__}: {exc}"))
                )
                continue
            out.index.append(index)
            out.items.append(item)
        return out
