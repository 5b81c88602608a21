"""A transform's output record (JSON bytes) and its source position -> one table row.

Pure: no I/O. A transform that declares its output (``Transform.output``) gets a typed
row, one value per declared field, each checked against the field's type; any other
gets the generic ``(key, value jsonb)`` row. Every row starts with the record's source
topic, partition and offset (the table's primary key). JSON holds finite numbers only
(orjson refuses the rest), so a number column's finite check is the table's alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson

from transforms import RecordField, RecordSchema, resolve
from transforms.schema import FieldType

Row = tuple[Any, ...]
RowBuilder = Callable[[bytes | None, bytes, str, int, int], Row]
"""(key, value, source topic, source partition, source offset) -> row."""


class RowError(ValueError):
    """The output cannot become a row of the table (its message says why): a dead letter
    with reason ``sink_refused``, as a row the database refuses."""


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Per scalar type: the test a JSON value passes, and the words of the refusal.
_SCALARS: Final[dict[str, tuple[Callable[[Any], bool], str]]] = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "long": (_is_integer, "an integer"),
    "int": (_is_integer, "an integer"),
    "double": (_is_number, "a number"),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
}
_ARRAY_WORDS: Final = {"string": "strings", "long": "integers", "int": "integers"}


def _value(record: dict[str, Any], field: RecordField) -> Any:
    """The column's value of one declared field, or RowError."""
    name, kind = field.name, field.type
    value = record.get(name)
    if value is None:
        if field.optional:
            return None
        raise RowError(f"missing field {name}")
    if kind.endswith("[]"):
        return _array(name, kind, value)
    test, words = _SCALARS[kind]
    if not test(value):
        raise RowError(f"{name} must be {words}, got {type(value).__name__}")
    return float(value) if kind == "double" else value


def _array(name: str, kind: FieldType, value: Any) -> list[Any]:
    element = kind[:-2]
    test, _ = _SCALARS[element]
    words = f"an array of {_ARRAY_WORDS.get(element, 'numbers')}"
    if not isinstance(value, list) or not all(test(v) for v in value):
        raise RowError(f"{name} must be {words}")
    return [float(v) for v in value] if element == "double" else value


def _object(value: bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise RowError(f"output is not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise RowError(f"output must be a JSON object, got {type(record).__name__}")
    return record


def typed_rows(output: RecordSchema) -> RowBuilder:
    """Rows of the typed table of ``output``: source topic, partition, offset, then one
    value per declared field, in the declaration's order (the columns of
    ``schema.table_for(output)``). Fields the output has beyond the declaration are left
    out; a declared one missing (unless optional) or of another type is a RowError."""
    fields = output.fields

    def build(key: bytes | None, value: bytes, topic: str, partition: int, offset: int) -> Row:
        del key  # the key is not a column of a typed table
        record = _object(value)
        return (topic, partition, offset, *(_value(record, f) for f in fields))

    return build


def generic_row(key: bytes | None, value: bytes, topic: str, partition: int, offset: int) -> Row:
    """A row of the generic table: source topic, partition, offset, key (bytes or None),
    value (the JSON text, stored as jsonb)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise RowError("output is not UTF-8 text") from None
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise RowError(f"output is not JSON: {exc}") from None
    return (topic, partition, offset, key, text)


def rows_for(output: RecordSchema | None) -> RowBuilder:
    """The row builder of a declared output (typed), or of none (generic)."""
    return generic_row if output is None else typed_rows(output)


def row_builder(transform: str) -> RowBuilder:
    """The row builder of the transform ``transform`` (a name or an import path) names:
    :func:`rows_for` its declared output."""
    return rows_for(resolve(transform).output)
