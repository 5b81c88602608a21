"""The one small interface every format implements, and the decode loop that the
registry formats (Avro, Protobuf) share.

A decoder turns a batch of raw values into decoded items (with the index of each) and
per-record errors; an encoder turns a batch of transform outputs into bytes or a
BadRecord each. Only a registry outage escapes as an exception
(:class:`~stream.formats.registry.RegistryUnavailable`): the batch is retried, no record
becomes a dead letter for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream.formats import framing
from stream.formats.registry import RegisteredSchema, SchemaNotFound
from transforms import BadRecord

MAX_MESSAGE = 500

Reader = Callable[[bytes, int], Any]
"""Decodes the value from an offset (just after the schema id) to its end."""


def short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


@dataclass(slots=True)
class Decoded:
    index: list[int] = field(default_factory=list)  # position in the batch of each item
    items: list[Any] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)


class SchemaSource(Protocol):
    """Schemas by id: the registry client, or a dict-backed one in unit tests."""

    def schema(self, schema_id: int) -> RegisteredSchema: ...


class Decoder(Protocol):
    def decode_batch(self, values: list[bytes | None], max_bytes: int) -> Decoded: ...


class Encoder(Protocol):
    def encode_batch(self, items: list[Any]) -> list[bytes | BadRecord]: ...


def check_size(value: bytes | None, max_bytes: int) -> None:
    if not value:
        raise BadRecord("empty", "the record has no value")
    if len(value) > max_bytes:
        raise BadRecord("too_large", f"{len(value)} bytes is more than the limit of {max_bytes}")


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
                    "unknown_schema", f"the registry has no schema with id {schema_id}"
                ) from None
            if schema.schema_type != self._schema_type:
                found = BadRecord(
                    "decode_error",
                    f"schema id {schema_id} is {schema.schema_type}, not {self._schema_type}",
                )
            else:
                try:
                    found = self._make_reader(schema)
                except Exception as exc:  # noqa: BLE001 - a schema we cannot use is per record
                    found = BadRecord(
                        "decode_error",
                        short(f"schema id {schema_id} is unusable: {type(exc).__name__}: {exc}"),
                    )
            self._readers[schema_id] = found
        if isinstance(found, BadRecord):
            raise found
        return found

    def decode_batch(self, values: list[bytes | None], max_bytes: int) -> Decoded:
        out = Decoded()
        for index, value in enumerate(values):
            try:
                check_size(value, max_bytes)
                assert value is not None
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
                out.errors.append((index, "decode_error", short(f"{type(exc).__name__}: {exc}")))
                continue
            out.index.append(index)
            out.items.append(item)
        return out
