"""Output schemas that transforms declare: a record of named, typed fields.

One neutral description, rendered by the service as an Avro schema or as .proto text
(see ``stream.formats``). Pure data: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["FieldType", "RecordField", "RecordSchema"]

FieldType = Literal["string", "long", "int", "double", "boolean", "double[]", "long[]", "int[]"]
"""Scalars, and arrays of numbers (``T[]``)."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class RecordField:
    """One field. ``optional``: the output may leave it out (Avro: a union with null and
    default null; Protobuf: proto3 ``optional``). ``minimum``: the smallest value a number
    field holds (the database sink's typed table checks it; the wire formats have no
    such bound)."""

    name: str
    type: FieldType
    optional: bool = False
    minimum: float | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid field name {self.name!r}")
        if self.type not in get_args(FieldType):
            raise ValueError(f"field {self.name!r}: unknown type {self.type!r}")
        if self.optional and self.type.endswith("[]"):
            raise ValueError(f"field {self.name!r}: an array cannot be optional (it may be empty)")
        if self.minimum is not None and self.type not in ("long", "int", "double"):
            raise ValueError(f"field {self.name!r}: only a number field has a minimum")


@dataclass(frozen=True, slots=True)
class RecordSchema:
    """A named record: the shape of one output value."""

    name: str
    fields: tuple[RecordField, ...]
    namespace: str = "stream"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid record name {self.name!r}")
        if not self.fields:
            raise ValueError(f"record {self.name!r} has no fields")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"record {self.name!r} repeats a field name")
        if not all(part and _NAME.match(part) for part in self.namespace.split(".")):
            raise ValueError(f"invalid namespace {self.namespace!r}")


def fields(*spec: tuple[str, FieldType] | tuple[str, FieldType, bool]) -> tuple[RecordField, ...]:
    """Shorthand: ``fields(("id", "string"), ("seq", "long", True))``."""
    return tuple(RecordField(*item) for item in spec)
