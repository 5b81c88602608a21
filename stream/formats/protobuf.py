"""Protobuf values, framed in the Confluent wire format (with the message-index list).

The registry holds Protobuf schemas as .proto text. The protobuf Python package has no
.proto parser, so the text is compiled with protoc as grpcio-tools ships it (run in
process, about 4 ms a schema, once per schema id) into descriptors, and message
classes are made from those. Output schemas declared by transforms are rendered to
.proto text here.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from stream.formats import framing
from stream.formats.codec import Reader, RegistryDecoder, SchemaSource
from stream.formats.proto_json import Convert, Converters
from stream.formats.registry import RegisteredSchema
from transforms import BadRecord, RecordSchema
from transforms.messages import bounded
from transforms.reasons import Reason

_TYPES = {
    "string": "string",
    "long": "int64",
    "int": "int32",
    "double": "double",
    "boolean": "bool",
    "double[]": "double",
    "long[]": "int64",
    "int[]": "int32",
}


class ProtoSyntaxError(ValueError):
    """protoc could not compile the .proto text."""


def proto_text(schema: RecordSchema) -> str:
    """The .proto (proto3) text of a declared output schema: one message."""
    lines = ['syntax = "proto3";', f"package {schema.namespace};", "", f"message {schema.name} {{"]
    for number, f in enumerate(schema.fields, start=1):
        label = "repeated " if f.type.endswith("[]") else "optional " if f.optional else ""
        lines.append(f"  {label}{_TYPES[f.type]} {f.name} = {number};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def compile_proto(text: str) -> descriptor_pb2.FileDescriptorSet:
    """Compile .proto text (imports of the well-known types allowed) into descriptors."""
    import grpc_tools  # noqa: PLC0415 - heavy; only a Protobuf process pays for it
    from grpc_tools import protoc  # noqa: PLC0415

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with tempfile.TemporaryDirectory(prefix="stream-proto-") as folder:
        source = os.path.join(folder, "schema.proto")
        target = os.path.join(folder, "schema.pb")
        with open(source, "w", encoding="utf-8") as handle:
            handle.write(text)
        code = protoc.main(
            [
                "protoc",
                f"-I{folder}",
                f"-I{include}",
                f"--descriptor_set_out={target}",
                "--include_imports",
                source,
            ]
        )
        if code != 0:
            raise ProtoSyntaxError(f"protoc could not compile the .proto text (exit {code})")
        with open(target, "rb") as handle:
            return descriptor_pb2.FileDescriptorSet.FromString(handle.read())


class ProtoSchema:
    """The message classes of one .proto text, found by message-index path."""

    def __init__(self, text: str) -> None:
        files = compile_proto(text)
        self._pool = descriptor_pool.DescriptorPool()
        for file in files.file:
            self._pool.Add(file)
        self._main = files.file[-1]  # --include_imports puts dependencies first
        if not self._main.message_type:
            raise ProtoSyntaxError("the .proto text declares no message")
        self._converters = Converters()
        self._classes: dict[tuple[int, ...], tuple[type[Message], Convert]] = {}

    def message(self, indexes: tuple[int, ...]) -> tuple[type[Message], Convert]:
        """The message class at this index path and its converter to plain values (both
        made once)."""
        found = self._classes.get(indexes)
        if found is None:
            names, types = [], list(self._main.message_type)
            for index in indexes:
                if index >= len(types):
                    raise BadRecord(
                        Reason.DECODE_ERROR, f"no message at index path {list(indexes)}"
                    )
                names.append(types[index].name)
                types = list(types[index].nested_type)
            full = ".".join([self._main.package, *names] if self._main.package else names)
            descriptor = self._pool.FindMessageTypeByName(full)
            found = message_factory.GetMessageClass(descriptor), self._converters.get(descriptor)
            self._classes[indexes] = found
        return found


def _reader(registered: RegisteredSchema) -> Reader:
    schema = ProtoSchema(registered.text)

    def read(value: bytes, offset: int) -> Any:
        indexes, start = framing.parse_indexes(value, offset)
        cls, convert = schema.message(indexes)
        try:
            message = cls.FromString(value[start:])
        except DecodeError as exc:
            raise BadRecord(
                Reason.DECODE_ERROR, bounded(f"not a valid {cls.__name__}: {exc}")
            ) from None
        return convert(message)

    return read


def decoder(client: SchemaSource) -> RegistryDecoder:
    return RegistryDecoder(client, _reader, "PROTOBUF")


class ProtobufEncoder:
    """Outputs as the first message of one registered .proto schema."""

    def __init__(self, schema_id: int, text: str) -> None:
        self._cls, _ = ProtoSchema(text).message((0,))
        self._header = framing.header(schema_id, (0,))

    def encode_batch(self, items: list[Any]) -> list[bytes | BadRecord]:
        out: list[bytes | BadRecord] = []
        cls, header = self._cls, self._header
        for item in items:
            try:
                if not isinstance(item, dict):
                    raise TypeError(f"expected a record (dict), got {type(item).__name__}")
                message = cls(**{k: v for k, v in item.items() if v is not None})
                out.append(header + message.SerializeToString())
            except (TypeError, ValueError, AttributeError) as exc:
                out.append(BadRecord(Reason.ENCODE_ERROR, bounded(f"{type(exc).__name__}: {exc}")))
        return out
