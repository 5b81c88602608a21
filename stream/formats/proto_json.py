"""Protobuf messages as plain values (dicts, lists, scalars): what a transform gets from
a Protobuf record.

Follows protobuf's JSON mapping (``json_format``) where a record needs it: a ``map<,>``
field is an object with string keys (``true``/``false`` for bool keys, digits for
integer keys), ``bytes`` are base64 text, and the well-known types are their natural
JSON: ``Struct`` an object, ``Value`` whatever it holds, ``ListValue`` a list,
``Timestamp`` RFC 3339 text (``1970-01-01T00:00:10.000005Z``), ``Duration`` seconds
text (``-3.500s``), the wrappers (``Int64Value``, ``StringValue``, ...) their value,
``FieldMask`` its paths joined by commas in lowerCamelCase, ``Any`` ``{"@type": url,
"value": base64}``. Kept as before, unlike ``json_format``: field names as declared,
64-bit integers and enums as numbers, and proto3 fields without presence always present
(with their default).

A converter is built once per message type, on first need, without recursion: every
type the message can reach gets its converter registered first and its field plan
filled after, so a type that contains itself (a tree, ``Struct``) takes finite steps.
Converting one message recurses as deep as the message is nested, which protobuf's
parser bounds (100 levels).
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from transforms import BadRecord
from transforms.reasons import Reason

Convert = Callable[[Message], Any]
Step = Callable[[Any], Any]
_Plan = list[tuple[str, bool, Step | None]]

_EPOCH = datetime.datetime(1970, 1, 1)
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)  # 0001-01-01 .. 9999-12-31, UTC
_DURATION_SECONDS = 315_576_000_000  # 10,000 years: the Duration's documented range
_NANOS = 1_000_000_000


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _fraction(nanos: int) -> str:
    """json_format's fraction of a second: none, or 3, 6 or 9 digits."""
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1_000 == 0:
        return f".{nanos // 1_000:06d}"
    return f".{nanos:09d}"


def timestamp_text(seconds: int, nanos: int) -> str:
    """RFC 3339 in UTC, as json_format writes a Timestamp; BadRecord when out of range."""
    if not (_TIMESTAMP_SECONDS[0] <= seconds <= _TIMESTAMP_SECONDS[1] and 0 <= nanos < _NANOS):
        raise BadRecord(Reason.DECODE_ERROR, f"a Timestamp out of range ({seconds}s, {nanos}ns)")
    moment = _EPOCH + datetime.timedelta(seconds=seconds)
    return moment.isoformat() + _fraction(nanos) + "Z"


def duration_text(seconds: int, nanos: int) -> str:
    """Seconds with an ``s``, as json_format writes a Duration; BadRecord when out of range
    or when seconds and nanos differ in sign."""
    if (
        abs(seconds) > _DURATION_SECONDS
        or abs(nanos) >= _NANOS
        or (seconds > 0 > nanos)
        or (seconds < 0 < nanos)
    ):
        raise BadRecord(Reason.DECODE_ERROR, f"a Duration out of range ({seconds}s, {nanos}ns)")
    sign = "-" if seconds < 0 or nanos < 0 else ""
    return f"{sign}{abs(seconds)}{_fraction(abs(nanos))}s"


def _camel(path: str) -> str:
    head, *rest = path.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _value(message: Any) -> Any:
    kind = message.WhichOneof("kind")
    if kind == "struct_value":
        return _struct(message.struct_value)
    if kind == "list_value":
        return _list(message.list_value)
    if kind is None or kind == "null_value":
        return None
    return getattr(message, kind)


def _struct(message: Any) -> dict[str, Any]:
    return {key: _value(item) for key, item in message.fields.items()}


def _list(message: Any) -> list[Any]:
    return [_value(item) for item in message.values]


def _wrapped(message: Any) -> Any:
    return message.value


_WELL_KNOWN: dict[str, Convert] = {
    "google.protobuf.Struct": _struct,
    "google.protobuf.Value": _value,
    "google.protobuf.ListValue": _list,
    "google.protobuf.Timestamp": lambda m: timestamp_text(m.seconds, m.nanos),
    "google.protobuf.Duration": lambda m: duration_text(m.seconds, m.nanos),
    "google.protobuf.FieldMask": lambda m: ",".join(_camel(p) for p in m.paths),
    "google.protobuf.Any": lambda m: {"@type": m.type_url, "value": _b64(m.value)},
    "google.protobuf.BytesValue": lambda m: _b64(m.value),
    **{
        f"google.protobuf.{name}Value": _wrapped
        for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String")
    },
}


def _repeated(field: FieldDescriptor) -> bool:
    # is_repeated in protobuf >= 6.31 (label is deprecated there, gone later)
    label_repeated = getattr(field, "label", None) == FieldDescriptor.LABEL_REPEATED
    return bool(getattr(field, "is_repeated", label_repeated))


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and _repeated(field) and bool(entry.GetOptions().map_entry)


def _map_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


class Converters:
    """The converter of each message type of one schema, built on first need."""

    def __init__(self) -> None:
        self._by_name: dict[str, Convert] = {}
        self.built = 0  # message types given a converter (each once)

    def get(self, descriptor: Descriptor) -> Convert:
        """The function turning a message of this type into plain values."""
        found = self._by_name.get(descriptor.full_name)
        if found is None:
            self._build(descriptor)
            found = self._by_name[descriptor.full_name]
        return found

    def _build(self, root: Descriptor) -> None:
        """Register a converter for every type ``root`` reaches, then fill their plans
        (a worklist, not recursion: cycles and deep nesting take finite steps)."""
        unfilled: list[tuple[Descriptor, _Plan]] = []
        pending = [root]
        while pending:
            descriptor = pending.pop()
            if descriptor.full_name in self._by_name:
                continue
            self.built += 1
            known = _WELL_KNOWN.get(descriptor.full_name)
            if known is not None:
                self._by_name[descriptor.full_name] = known
                continue
            plan: _Plan = []
            self._by_name[descriptor.full_name] = _message_converter(plan)
            unfilled.append((descriptor, plan))
            pending.extend(f.message_type for f in descriptor.fields if f.message_type)
        for descriptor, plan in unfilled:
            plan.extend(self._field(f) for f in descriptor.fields)

    def _field(self, field: FieldDescriptor) -> tuple[str, bool, Step | None]:
        repeated = _repeated(field)
        presence = not repeated and field.has_presence
        if _is_map(field):
            entry = field.message_type
            each = self._one(entry.fields_by_name["value"])

            def as_object(value: Any) -> dict[str, Any]:
                if each is None:
                    return {_map_key(k): v for k, v in value.items()}
                return {_map_key(k): each(v) for k, v in value.items()}

            return field.name, False, as_object
        one = self._one(field)
        if not repeated:
            return field.name, presence, one
        if one is None:
            return field.name, False, list
        return field.name, False, lambda values: [one(v) for v in values]

    def _one(self, field: FieldDescriptor) -> Step | None:
        """What one value of this field becomes (None: itself)."""
        if field.message_type is not None:
            return self._by_name[field.message_type.full_name]
        if field.type == FieldDescriptor.TYPE_BYTES:
            return _b64
        return None


def _message_converter(plan: _Plan) -> Convert:
    """A converter that reads its field plan when called (filled after it is made)."""

    def convert(message: Message) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, presence, step in plan:
            if presence and not message.HasField(name):
                continue
            value = getattr(message, name)
            out[name] = value if step is None else step(value)
        return out

    return convert
