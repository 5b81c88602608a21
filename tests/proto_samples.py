"""A Protobuf schema that has what real ones have: maps, a recursive type, well-known
types imported from protobuf's own files, an enum; and records of it, built by the
tests' own protoc (as a producer would), for the registry and pipeline suites."""

from __future__ import annotations

import os
import tempfile
from typing import Any

RICH_PROTO = """syntax = "proto3";
package rich.v1;
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/wrappers.proto";
message Reading {
  string sensor_id = 1;
  map<string, int64> counts = 2;
  map<int32, Node> by_level = 3;
  Node tree = 4;
  google.protobuf.Struct meta = 5;
  google.protobuf.Timestamp at = 6;
  google.protobuf.Duration took = 7;
  google.protobuf.DoubleValue ratio = 8;
  google.protobuf.StringValue note = 9;
  repeated google.protobuf.Value extras = 10;
  Kind kind = 11;
}
message Node { string name = 1; repeated Node children = 2; map<string, Node> named = 3; }
enum Kind { KIND_UNSPECIFIED = 0; KIND_SENSOR = 1; }
"""


def rich_class(text: str) -> Any:
    """The first message of ``text``, compiled by protoc with its imports (the tests'
    own, as a producer would)."""
    import grpc_tools
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "r.proto"), "w") as handle:
            handle.write(text)
        out = os.path.join(folder, "r.pb")
        args = ["protoc", f"-I{folder}", f"-I{include}", f"--descriptor_set_out={out}"]
        assert protoc.main([*args, "--include_imports", os.path.join(folder, "r.proto")]) == 0
        with open(out, "rb") as handle:
            files = descriptor_pb2.FileDescriptorSet.FromString(handle.read())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("rich.v1.Reading"))


def rich_reading(cls: Any, i: int) -> Any:
    message = cls(sensor_id=f"s-{i}", kind=1)
    message.counts["ok"] = i
    message.counts["late"] = 2**40 + i
    message.by_level[i].name = f"level-{i}"
    node = message.tree
    node.name = "root"
    for depth in range(30 + i):  # a path 30 to 49 nodes deep
        node = node.children.add(name=str(depth))
    node.named["leaf"].name = "last"
    message.meta.update({"site": "north", "calibration": {"gain": [1.5, 2], "ok": True}})
    message.at.seconds, message.at.nanos = 1_700_000_000 + i, 250_000_000
    message.took.seconds = i
    message.ratio.value = i / 4
    message.note.value = "n"
    message.extras.add().string_value = "x"
    message.extras.add().struct_value.update({"nested": {"deeper": [None]}})
    return message


def as_record(message: Any) -> dict[str, Any]:
    """What the service should make of ``message``, by protobuf's own JSON mapping: field
    names as declared, integers for enums and 64-bit fields, fields without presence
    printed (as a record keeps them)."""
    from google.protobuf import json_format

    record: dict[str, Any] = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        use_integers_for_enums=True,
        unquote_int64_if_possible=True,
    )
    return record
