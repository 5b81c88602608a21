"""Pure logic of the formats: framing, codecs on schemas held in memory, backoff, settings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.bench.formats import measure
from stream.config import ConfigError, ProduceSettings, RunSettings
from stream.formats import framing
from stream.formats.avro import AvroEncoder, avro_schema, schema_text
from stream.formats.avro import decoder as avro_decoder
from stream.formats.protobuf import ProtobufEncoder, ProtoSchema, proto_text
from stream.formats.protobuf import decoder as proto_decoder
from stream.formats.registry import Backoff, RegisteredSchema, RegistryConfig, StaticSchemas
from stream.formats.spec import FormatSpec
from stream.worker import process_batch
from transforms import BadRecord, RecordField, RecordSchema, fields, output_schema, resolve
from transforms.builtin import SENSOR_FEATURES_SCHEMA, SENSOR_READING_SCHEMA
from transforms.codec import JsonDecoder, JsonEncoder

LIMIT = 1 << 20


Schemas = StaticSchemas


def reading(i: int = 0) -> dict[str, Any]:
    return {"sensor_id": f"s-{i}", "seq": i, "ts": 1.5 + i, "values": [1.0, 2.0, 3.0, float(i)]}


# --- framing --------------------------------------------------------------------------------


@given(st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_framing_round_trip(schema_id: int, body: bytes) -> None:
    value = framing.build(schema_id, body)
    assert framing.parse(value) == (schema_id, 5)
    assert value[5:] == body


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=8), st.binary(max_size=16))
def test_message_indexes_round_trip(indexes: list[int], body: bytes) -> None:
    value = framing.header(7, tuple(indexes)) + body
    schema_id, offset = framing.parse(value)
    parsed, start = framing.parse_indexes(value, offset)
    assert (schema_id, parsed, value[start:]) == (7, tuple(indexes), body)


def test_first_message_is_one_zero_byte() -> None:
    assert framing.header(1, (0,)) == b"\x00\x00\x00\x00\x01\x00"


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00\x00\x01", b'{"sensor_id": 1}', b"\x01\x00\x00\x00\x01abc"],
    ids=["empty", "short", "json", "wrong-magic"],
)
def test_bad_framing(value: bytes) -> None:
    with pytest.raises(BadRecord) as caught:
        framing.parse(value)
    assert caught.value.reason == "bad_framing"


def test_cut_message_index_list_is_bad_framing() -> None:
    with pytest.raises(BadRecord) as caught:
        framing.parse_indexes(b"\x00\x00\x00\x00\x01\x04\x80", 5)
    assert caught.value.reason == "bad_framing"


# --- schemas --------------------------------------------------------------------------------


def test_schema_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="field name"):
        RecordField("bad-name", "string")
    with pytest.raises(ValueError, match="repeats"):
        RecordSchema("R", fields(("a", "long"), ("a", "string")))
    with pytest.raises(ValueError, match="optional"):
        RecordField("xs", "double[]", optional=True)


def test_avro_schema_of_sensor_features() -> None:
    schema = avro_schema(SENSOR_FEATURES_SCHEMA)
    by_name = {f["name"]: f for f in schema["fields"]}
    assert by_name["seq"] == {"name": "seq", "type": ["null", "long"], "default": None}
    assert by_name["peak_bins"]["type"] == {"type": "array", "items": "long"}
    assert schema["name"] == "SensorFeatures"


def test_proto_text_of_sensor_features_compiles() -> None:
    text = proto_text(SENSOR_FEATURES_SCHEMA)
    assert "optional int64 seq = 3;" in text
    assert "repeated int64 peak_bins = 9;" in text
    cls, _ = ProtoSchema(text).message((0,))
    assert cls.DESCRIPTOR.full_name == "stream.SensorFeatures"


# --- codecs -----------------------------------------------------------------------------------


def avro_source() -> tuple[Schemas, AvroEncoder]:
    text = schema_text(SENSOR_READING_SCHEMA)
    return Schemas(RegisteredSchema(11, "AVRO", text)), AvroEncoder(11, text)


def proto_source() -> tuple[Schemas, ProtobufEncoder]:
    text = proto_text(SENSOR_READING_SCHEMA)
    return Schemas(RegisteredSchema(12, "PROTOBUF", text)), ProtobufEncoder(12, text)


@pytest.mark.parametrize("kind", ["avro", "protobuf"])
def test_registry_codec_round_trip_fetches_each_id_once(kind: str) -> None:
    source, encoder = avro_source() if kind == "avro" else proto_source()
    decoder = avro_decoder(source) if kind == "avro" else proto_decoder(source)
    events = [reading(i) for i in range(20)]
    values: list[bytes | None] = [v for v in encoder.encode_batch(events) if isinstance(v, bytes)]
    decoded = decoder.decode_batch(values, LIMIT)
    assert decoded.errors == []
    assert decoded.index == list(range(20))
    assert decoded.items == events
    assert source.lookups == 1


@pytest.mark.parametrize("kind", ["avro", "protobuf"])
def test_each_bad_input_gets_its_reason(kind: str) -> None:
    source, encoder = avro_source() if kind == "avro" else proto_source()
    decoder = avro_decoder(source) if kind == "avro" else proto_decoder(source)
    good = encoder.encode_batch([reading()])[0]
    assert isinstance(good, bytes)
    unknown = framing.build(999, good[5:])
    garbage = good[:6] + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
    values: list[bytes | None] = [good, b'{"json": 1}', unknown, garbage, None, good]
    decoded = decoder.decode_batch(values, LIMIT)
    assert decoded.index == [0, 5]
    reasons = {index: reason for index, reason, _ in decoded.errors}
    assert reasons == {1: "bad_framing", 2: "unknown_schema", 3: "decode_error", 4: "empty"}


def test_avro_body_with_bytes_left_over_is_a_decode_error() -> None:
    source, encoder = avro_source()
    good = encoder.encode_batch([reading()])[0]
    assert isinstance(good, bytes)
    decoded = avro_decoder(source).decode_batch([good + b"\x00\x00"], LIMIT)
    assert [reason for _, reason, _ in decoded.errors] == ["decode_error"]


def test_a_schema_id_of_the_other_type_is_a_decode_error() -> None:
    source, encoder = proto_source()
    good = encoder.encode_batch([reading()])[0]
    assert isinstance(good, bytes)
    decoded = avro_decoder(source).decode_batch([good], LIMIT)
    assert decoded.errors[0][1] == "decode_error"
    assert "PROTOBUF, not AVRO" in decoded.errors[0][2]


def test_an_id_without_a_reader_is_answered_without_raising_again_per_record() -> None:
    """A BadRecord raised again for every record of an id would grow its traceback by a
    frame each time, for the life of the worker."""
    source, encoder = proto_source()
    good = encoder.encode_batch([reading()])[0]
    assert isinstance(good, bytes)
    decoder = avro_decoder(source)  # the id is PROTOBUF: no reader for it, for good
    for _ in range(3):
        decoded = decoder.decode_batch([good] * 500, LIMIT)
        assert {reason for _, reason, _ in decoded.errors} == {"decode_error"}
    kept = decoder.reader(12)
    assert isinstance(kept, BadRecord)
    assert kept.__traceback__ is None


@pytest.mark.parametrize("kind", ["avro", "protobuf"])
def test_encoders_refuse_what_does_not_fit(kind: str) -> None:
    schema = SENSOR_FEATURES_SCHEMA
    encoder: Any = (
        AvroEncoder(3, schema_text(schema))
        if kind == "avro"
        else ProtobufEncoder(3, proto_text(schema))
    )
    out = encoder.encode_batch([{"sensor_id": 5, "unknown": True}, [1, 2]])
    assert all(isinstance(v, BadRecord) and v.reason == "encode_error" for v in out)


def test_json_codec_keeps_todays_reasons() -> None:
    decoded = JsonDecoder().decode_batch([b'{"a": 1}', b"", b"{", b"\xff", b"1" * 20], 10)
    assert decoded.items == [{"a": 1}]
    reasons = [reason for _, reason, _ in decoded.errors]
    assert reasons == ["empty", "invalid_json", "invalid_utf8", "too_large"]
    assert JsonEncoder().encode_batch([{"a": 1}]) == [b'{"a":1}']


# --- the worker with formats -------------------------------------------------------------------

REGISTRY = RegistryConfig("http://127.0.0.1:9")  # never reached by these tests


def test_worker_json_in_json_out_unchanged() -> None:
    values: list[bytes | None] = [json.dumps(reading(1)).encode(), b"nope"]
    result = process_batch("sensor-features", values, LIMIT)
    assert result.outputs is not None
    assert result.outputs[0] is not None
    assert json.loads(result.outputs[0])["n"] == 4
    assert [r for _, r, _ in result.errors] == ["invalid_json"]


def test_worker_encodes_json_input_as_avro() -> None:
    text = schema_text(SENSOR_FEATURES_SCHEMA)
    formats = FormatSpec("json", "avro", REGISTRY, 21, text)
    values: list[bytes | None] = [json.dumps(reading(1)).encode()]
    result = process_batch("sensor-features", values, LIMIT, formats)
    assert result.errors == []
    assert result.outputs is not None
    output = result.outputs[0]
    assert output is not None
    assert framing.parse(output) == (21, 5)
    decoded = avro_decoder(Schemas(RegisteredSchema(21, "AVRO", text))).decode_batch(
        [output], LIMIT
    )
    assert decoded.items[0]["sensor_id"] == "s-1"
    assert decoded.items[0]["seq"] == 1


# --- backoff and settings ----------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap_and_stops_at_the_deadline() -> None:
    now = [0.0]
    backoff = Backoff(lambda: now[0], retry_for=3.0, initial=0.5, maximum=1.0)
    delays = []
    while (delay := backoff.delay()) is not None:
        delays.append(delay)
        now[0] += delay
    assert delays == [0.5, 1.0, 1.0, 0.5]


def test_negative_answers_are_remembered_for_a_while_and_bounded() -> None:
    from stream.formats.registry import Remembered, SchemaNotFound, SchemaRefused

    now = [0.0]
    remembered = Remembered(lambda: now[0], keep_for=30.0, limit=3)
    remembered.put(1, SchemaNotFound("schema id 1: not found"))
    remembered.put(2, SchemaRefused("schema id 2: HTTP 403"))
    found = remembered.get(1)
    assert isinstance(found, SchemaNotFound)
    assert str(found) == "schema id 1: not found"
    assert found is not remembered.get(1)  # a fresh exception each time, no shared traceback
    assert isinstance(remembered.get(2), SchemaRefused)
    now[0] = 29.9
    assert remembered.get(1) is not None
    now[0] = 30.0
    assert remembered.get(1) is None  # asked again: an id may be registered meanwhile
    for key in range(10, 20):  # ids from a record never grow the memory past its limit
        remembered.put(key, SchemaNotFound(str(key)))
    assert [k for k in range(10, 20) if remembered.get(k) is not None] == [17, 18, 19]
    assert Remembered(lambda: 0.0, keep_for=0.0).get(1) is None


def test_avro_input_needs_a_registry_url() -> None:
    with pytest.raises(ConfigError, match="--schema-registry-url"):
        RunSettings(input_format="avro")


def test_registry_password_never_shown() -> None:
    secret = "s3cret-" + "value"
    settings = RunSettings(
        output_format="avro",
        schema_registry_url="http://127.0.0.1:1",
        schema_registry_username="u",
        schema_registry_password=secret,
    )
    assert secret not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        RunSettings(
            output_format="avro",
            schema_registry_url="http://127.0.0.1:1",
            schema_registry_password=secret,
        )
    assert secret not in str(caught.value)


def test_cafile_needs_https() -> None:
    with pytest.raises(ConfigError, match="https"):
        ProduceSettings(
            format="avro", schema_registry_url="http://x", schema_registry_cafile=__file__
        )


def test_registry_retry_must_be_shorter_than_the_batch_timeout() -> None:
    with pytest.raises(ConfigError, match="--schema-registry-retry"):
        RunSettings(
            schema_registry_retry=60.0,
            batch_timeout=30.0,
            output_format="avro",
            schema_registry_url="http://127.0.0.1:8081/apis/ccompat/v7",
        )


def test_format_bench_reports_each_format() -> None:
    rows = measure(count=200, batch=50, values=16)
    assert [r.format for r in rows] == ["json", "avro", "protobuf"]
    for row in rows:
        assert row.total_us > 0
        assert row.total_us == pytest.approx(
            row.decode_us + row.transform_us + row.encode_us, abs=0.05
        )
    json_row, avro_row, _ = rows
    assert avro_row.input_bytes < json_row.input_bytes  # binary doubles beat decimal text


def test_worker_puts_the_batch_back_when_the_registry_is_unreachable() -> None:
    # Nothing listens on this loopback port: connection refused, retried for 0.3 s.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    registry = RegistryConfig(f"http://127.0.0.1:{port}", retry_for=0.3)
    formats = FormatSpec("avro", "json", registry)
    value = framing.build(5, b"\x02a")
    result = process_batch("sensor-features", [value, b"not framed"], LIMIT, formats)
    assert "unreachable" in result.unavailable
    assert result.errors == []  # not even the badly framed record: the batch runs again


def test_format_options_from_env_and_config_file(tmp_path: Any) -> None:
    from stream.config import load

    path = tmp_path / "stream.toml"
    path.write_text('input-format = "protobuf"\nschema-registry-url = "http://reg:8081/x/"\n')
    env = {"STREAM_OUTPUT_FORMAT": "avro", "STREAM_SCHEMA_REGISTRY_USERNAME": "u"}
    settings = load(RunSettings, {}, env, str(path))
    assert (settings.input_format, settings.output_format) == ("protobuf", "avro")
    assert settings.schema_registry_url == "http://reg:8081/x"
    assert settings.schema_registry_username == "u"
    flagged = load(RunSettings, {"output_format": "json"}, env, str(path))
    assert flagged.output_format == "json"


TOTALS = RecordSchema("Totals", fields(("id", "string"), ("total", "double")))


@output_schema(TOTALS)
def totals(records: list[Any]) -> list[Any]:
    """A user transform that declares its output schema next to the function."""
    return [{"id": r["sensor_id"], "total": sum(r["values"])} for r in records]


def test_a_user_transform_declares_its_output_schema() -> None:
    transform = resolve(f"{__name__}:totals")
    assert transform.output == TOTALS
    text = schema_text(TOTALS)
    formats = FormatSpec("json", "avro", REGISTRY, 8, text)
    result = process_batch(f"{__name__}:totals", [json.dumps(reading(2)).encode()], LIMIT, formats)
    assert result.outputs is not None
    output = result.outputs[0]
    assert output is not None
    decoded = avro_decoder(StaticSchemas(RegisteredSchema(8, "AVRO", text))).decode_batch(
        [output], LIMIT
    )
    assert decoded.items == [{"id": "s-2", "total": 8.0}]


def test_cli_refuses_avro_without_a_registry_in_one_line(capsys: Any) -> None:
    from stream.cli import main

    assert main(["produce", "--format", "avro"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--schema-registry-url" in err


# --- Protobuf: maps, recursive messages, well-known types --------------------------------------

RICH_PROTO = """syntax = "proto3";
package rich;
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/empty.proto";
message Rec {
  string id = 1;
  map<string, int64> counts = 2;
  map<int32, Node> nodes = 3;
  map<bool, string> flags = 4;
  map<string, bytes> blobs = 5;
  Node tree = 6;
  repeated Node forest = 7;
  google.protobuf.Struct meta = 8;
  google.protobuf.Value value = 9;
  google.protobuf.ListValue items = 10;
  google.protobuf.Timestamp at = 11;
  google.protobuf.Duration took = 12;
  google.protobuf.DoubleValue ratio = 13;
  google.protobuf.Int32Value small = 14;
  google.protobuf.BoolValue ok = 15;
  google.protobuf.StringValue note = 16;
  google.protobuf.BytesValue blob = 17;
  google.protobuf.FieldMask mask = 18;
  google.protobuf.Empty nothing = 19;
  google.protobuf.Int64Value big = 20;
  google.protobuf.UInt64Value huge = 21;
}
message Node { string name = 1; repeated Node children = 2; map<string, Node> named = 3; }
"""


def rich_source() -> tuple[Schemas, ProtoSchema]:
    return Schemas(RegisteredSchema(40, "PROTOBUF", RICH_PROTO)), ProtoSchema(RICH_PROTO)


def frame_proto(message: Any, indexes: tuple[int, ...] = (0,)) -> bytes:
    body: bytes = message.SerializeToString()
    return framing.header(40, indexes) + body


def chain(node_cls: Any, depth: int) -> Any:
    """A tree that is one path ``depth`` nodes long."""
    root = node = node_cls(name="0")
    for level in range(1, depth):
        node = node.children.add(name=str(level))
    return root


def test_protobuf_maps_become_objects() -> None:
    source, schema = rich_source()
    rec = schema.message((0,))[0]()
    rec.id = "r"
    rec.counts["a"] = 2**40
    rec.counts["b"] = -1
    rec.nodes[7].name = "seven"
    rec.nodes[7].named["x"].name = "inner"
    rec.flags[True] = "yes"
    rec.blobs["raw"] = b"\x00\xff"
    decoded = proto_decoder(source).decode_batch([frame_proto(rec)], LIMIT)
    assert decoded.errors == []
    item = decoded.items[0]
    assert item["counts"] == {"a": 2**40, "b": -1}
    inner = {"name": "inner", "children": [], "named": {}}
    assert item["nodes"] == {"7": {"name": "seven", "children": [], "named": {"x": inner}}}
    assert item["flags"] == {"true": "yes"}
    assert item["blobs"] == {"raw": "AP8="}
    assert json.loads(JsonEncoder().encode_batch([item])[0]) == item  # type: ignore[arg-type]


def test_recursive_messages_decode_at_any_depth_protobuf_parses() -> None:
    source, schema = rich_source()
    node_cls = schema.message((1,))[0]
    decoder = proto_decoder(source)
    values: list[bytes | None] = [
        frame_proto(chain(node_cls, 90), (1,)),
        frame_proto(chain(node_cls, 500), (1,)),  # deeper than protobuf's parser goes
        frame_proto(node_cls(name="leaf"), (1,)),
    ]
    decoded = decoder.decode_batch(values, LIMIT)
    assert decoded.index == [0, 2]
    assert [reason for _, reason, _ in decoded.errors] == ["decode_error"]
    depth, node = 0, decoded.items[0]
    while node["children"]:
        depth, node = depth + 1, node["children"][0]
    assert depth == 89
    assert decoded.items[1] == {"name": "leaf", "children": [], "named": {}}


def test_converters_are_built_once_per_type_even_for_cycles() -> None:
    from stream.formats.proto_json import Converters

    _, schema = rich_source()
    node_cls = schema.message((1,))[0]
    converters = Converters()
    first = converters.get(node_cls.DESCRIPTOR)
    built = converters.built
    assert built == 2  # Node and its map entry (string -> Node): the cycle ends there
    assert converters.get(node_cls.DESCRIPTOR) is first
    assert converters.built == built


def test_well_known_types_decode_as_json_format_writes_them() -> None:
    from google.protobuf import json_format

    source, schema = rich_source()
    rec = schema.message((0,))[0](id="w")
    rec.meta.update({"a": [1, "b", None, {"c": True}], "n": 2.5})
    rec.value.struct_value.update({"deep": {"deeper": [[], {}]}})
    rec.items.extend([1, "two", False, None])
    rec.at.seconds, rec.at.nanos = 1_700_000_000, 120_000_000
    rec.took.seconds, rec.took.nanos = -3, -500
    rec.ratio.value = 0.25
    rec.small.value = -7
    rec.ok.value = False
    rec.note.value = "hi"
    rec.blob.value = b"\x01\x02"
    rec.mask.paths.extend(["sensor_id", "values.max_value"])
    rec.nothing.SetInParent()
    rec.tree.name = "t"
    rec.big.value = 2**62
    rec.huge.value = 2**64 - 1
    decoded = proto_decoder(source).decode_batch([frame_proto(rec)], LIMIT)
    assert decoded.errors == []
    item = decoded.items[0]
    want = json_format.MessageToDict(rec, preserving_proto_field_name=True)
    # json_format writes 64-bit integers as text; a record keeps them numbers
    assert (want.pop("big"), want.pop("huge")) == (str(2**62), str(2**64 - 1))
    assert (item.pop("big"), item.pop("huge")) == (2**62, 2**64 - 1)
    for name in ("counts", "nodes", "flags", "blobs", "forest"):  # proto3: present, empty
        assert item.pop(name) in ({}, [])
    want["tree"] = {"name": "t", "children": [], "named": {}}
    assert item == want
    assert item["at"] == "2023-11-14T22:13:20.120Z"
    assert item["took"] == "-3.000000500s"
    assert item["mask"] == "sensorId,values.maxValue"


@given(st.integers(-62_135_596_800, 253_402_300_799), st.integers(0, 999_999_999))
def test_timestamp_text_is_json_formats(seconds: int, nanos: int) -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    from stream.formats.proto_json import timestamp_text

    assert timestamp_text(seconds, nanos) == Timestamp(seconds=seconds, nanos=nanos).ToJsonString()


@given(st.integers(-315_576_000_000, 315_576_000_000), st.integers(0, 999_999_999))
def test_duration_text_is_json_formats(seconds: int, magnitude: int) -> None:
    from google.protobuf.duration_pb2 import Duration

    from stream.formats.proto_json import duration_text

    nanos = -magnitude if seconds < 0 else magnitude
    assert duration_text(seconds, nanos) == Duration(seconds=seconds, nanos=nanos).ToJsonString()


def test_a_timestamp_out_of_range_is_that_records_decode_error() -> None:
    source, schema = rich_source()
    cls = schema.message((0,))[0]
    bad = cls(id="bad")
    bad.at.seconds = 10**12  # past the year 9999
    values: list[bytes | None] = [frame_proto(bad), frame_proto(cls(id="good"))]
    decoded = proto_decoder(source).decode_batch(values, LIMIT)
    assert decoded.index == [1]
    assert [(i, reason) for i, reason, _ in decoded.errors] == [(0, "decode_error")]
    assert "Timestamp out of range" in decoded.errors[0][2]
