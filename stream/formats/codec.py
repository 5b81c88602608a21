"""The decode loop that the registry formats (Avro, Protobuf) share: Confluent-framed
values whose schema id picks a reader. The interface every format implements
(:class:`~transforms.codec.Decoder`, :class:`~transforms.codec.Encoder`) and JSON's
implementation live in :mod:`transforms.codec`.

Only a registry outage (or our credentials refused) escapes as an exception
(:class:`~stream.formats.registry.RegistryError`): the batch is retried, no record
becomes a dead letter for it. An id the registry has no schema for is ``unknown_schema``,
one it refuses for good is ``schema_refused``: per record, asked once per batch (and the
client remembers the answer for a while).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from stream.formats import framing
from stream.formats.registry import RegisteredSchema, SchemaNotFound, SchemaRefused
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

    def reader(self, schema_id: int) -> Reader | BadRecord:
        """The reader of this id (built once), or why the id has none. Returned, not
        raised: an exception raised again for every record would grow its traceback."""
        found = self._readers.get(schema_id)
        if found is None:
            try:
                schema = self.client.schema(schema_id)
            except SchemaNotFound:
                # Not kept here: an id unknown now may be registered later (the client
                # remembers the answer for a short while).
                return BadRecord(
                    Reason.UNKNOWN_SCHEMA, f"the registry has no schema with id {schema_id}"
                )
            except SchemaRefused as exc:
                return BadRecord(Reason.SCHEMA_REFUSED, bounded(str(exc)))
            found = self._readers[schema_id] = self._build(schema)
        return found

    def _build(self, schema: RegisteredSchema) -> Reader | BadRecord:
        if schema.schema_type != self._schema_type:
            return BadRecord(
                Reason.DECODE_ERROR,
                f"schema id {schema.schema_id} is {schema.schema_type}, not {self._schema_type}",
            )
        try:
            return self._make_reader(schema)
        except Exception as exc:  # noqa: BLE001 - a schema we cannot use is per record
            return BadRecord(
                Reason.DECODE_ERROR,
                bounded(f"schema id {schema.schema_id} is unusable: {type(exc).__name__}: {exc}"),
            )

    def decode_batch(self, values: Sequence[bytes | None], max_bytes: int) -> Decoded:
        out = Decoded()
        missing: dict[int, BadRecord] = {}  # ids without a reader: the registry asked once
        for index, checked in enumerate(values):
            try:
                value = check_size(checked, max_bytes)
                schema_id, offset = framing.parse(value)
            except BadRecord as bad:
                out.errors.append((index, bad.reason, bad.message))
                continue
            read = missing.get(schema_id) or self.reader(schema_id)
            if isinstance(read, BadRecord):
                missing[schema_id] = read
                out.errors.append((index, read.reason, read.message))
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
