"""Avro and Protobuf through a real Schema Registry, in the workers, without Kafka.

A producer's view (records framed by hand with fastavro or protobuf and schemas
registered over HTTP), the worker's ``process_batch`` and the pool in between, and an
independent reader of the outputs (HTTP + fastavro / protoc). The registry is real:
``SCHEMA_REGISTRY_URL``, a container, or deploy/registry/registry.sh.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from stream.config import ProduceSettings, RunSettings
from stream.formats.avro import schema_text
from stream.formats.protobuf import proto_text
from stream.formats.registry import RegistryError
from stream.formats.setup import demo_encoder, prepare
from stream.pool import WorkerPool
from stream.worker import process_batch
from tests.registry import LocalRegistry, local_registry
from transforms import resolve
from transforms.builtin import SENSOR_READING_SCHEMA

LIMIT = 1 << 20
CT = "application/vnd.schemaregistry.v1+json"


# --- an independent client: plain HTTP, fastavro, protoc ---------------------------------------


def http(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": CT}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return json.loads(answer.read())


def register(url: str, subject: str, text: str, schema_type: str) -> int:
    body: dict[str, Any] = {"schema": text}
    if schema_type != "AVRO":
        body["schemaType"] = schema_type
    return int(http("POST", f"{url}/subjects/{subject}/versions", body)["id"])


def fetch(url: str, schema_id: int) -> dict[str, Any]:
    found: dict[str, Any] = http("GET", f"{url}/schemas/ids/{schema_id}")
    return found


def unframe(value: bytes) -> tuple[int, bytes]:
    assert value[0] == 0
    (schema_id,) = struct.unpack(">I", value[1:5])
    return schema_id, value[5:]


def avro_read(url: str, value: bytes) -> Any:
    schema_id, body = unframe(value)
    schema = parse_schema(json.loads(fetch(url, schema_id)["schema"]))
    return schemaless_reader(io.BytesIO(body), schema, None)


def avro_frame(schema_id: int, text: str, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(b"\x00" + struct.pack(">I", schema_id))
    schemaless_writer(buffer, parse_schema(json.loads(text)), record)
    return buffer.getvalue()


def proto_class(text: str) -> Any:
    import grpc_tools
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "t.proto"), "w") as handle:
            handle.write(text)
        out = os.path.join(folder, "t.pb")
        args = ["protoc", f"-I{folder}", f"-I{include}", f"--descriptor_set_out={out}"]
        assert protoc.main([*args, os.path.join(folder, "t.proto")]) == 0
        with open(out, "rb") as handle:
            files = descriptor_pb2.FileDescriptorSet.FromString(handle.read())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    main = files.file[-1]
    name = f"{main.package}.{main.message_type[0].name}" if main.package else ""
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def proto_read(url: str, value: bytes) -> Any:
    schema_id, rest = unframe(value)
    assert rest[0] == 0  # message-index list [0]: the file's first message
    schema = fetch(url, schema_id)
    assert schema["schemaType"] == "PROTOBUF"
    return proto_class(schema["schema"]).FromString(rest[1:])


def reading(i: int) -> dict[str, Any]:
    values = [float((i * 7 + k) % 5) for k in range(16)]
    return {"sensor_id": f"s-{i % 3}", "seq": i, "ts": 1000.0 + i, "values": values}


def expected(i: int) -> dict[str, Any]:
    """sensor-features of reading(i), computed by the JSON path the service has today."""
    result = process_batch("sensor-features", [json.dumps(reading(i)).encode()], LIMIT)
    assert result.outputs is not None
    output = result.outputs[0]
    assert output is not None
    decoded: dict[str, Any] = json.loads(output)
    return decoded


def settings(url: str, fin: str, fout: str, topic: str) -> RunSettings:
    return RunSettings(
        input_format=fin,  # type: ignore[arg-type]
        output_format=fout,  # type: ignore[arg-type]
        schema_registry_url=url,
        output_topic=topic,
        schema_registry_retry=2.0,
    )


def topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


# --- the formats, end to end in a worker ---------------------------------------------------------


def test_avro_in_sensor_features_avro_out(schema_registry_url: str) -> None:
    url, out_topic = schema_registry_url, topic()
    text = schema_text(SENSOR_READING_SCHEMA)
    in_id = register(url, f"{topic()}-value", text, "AVRO")
    spec = prepare(settings(url, "avro", "avro", out_topic), resolve("sensor-features"))
    versions = http("GET", f"{url}/subjects/{out_topic}-value/versions")
    assert versions == [1]
    values: list[bytes | None] = [avro_frame(in_id, text, reading(i)) for i in range(50)]
    result = process_batch("sensor-features", values, LIMIT, spec)
    assert result.errors == []
    assert result.outputs is not None
    for i, output in enumerate(result.outputs):
        assert output is not None
        assert unframe(output)[0] == spec.output_schema_id
        assert avro_read(url, output) == expected(i)


def test_protobuf_in_sensor_features_protobuf_out(schema_registry_url: str) -> None:
    url, out_topic = schema_registry_url, topic()
    text = proto_text(SENSOR_READING_SCHEMA)
    in_id = register(url, f"{topic()}-value", text, "PROTOBUF")
    reading_cls = proto_class(text)
    spec = prepare(settings(url, "protobuf", "protobuf", out_topic), resolve("sensor-features"))
    values: list[bytes | None] = [
        b"\x00" + struct.pack(">I", in_id) + b"\x00" + reading_cls(**reading(i)).SerializeToString()
        for i in range(30)
    ]
    result = process_batch("sensor-features", values, LIMIT, spec)
    assert result.errors == []
    assert result.outputs is not None
    for i, output in enumerate(result.outputs):
        assert output is not None
        message = proto_read(url, output)
        want = expected(i)
        assert message.sensor_id == want["sensor_id"]
        assert message.HasField("seq")
        assert message.seq == want["seq"] == i
        assert list(message.peak_bins) == want["peak_bins"]
        assert message.mean == pytest.approx(want["mean"])
        assert message.anomaly == want["anomaly"]


def test_json_in_avro_out(schema_registry_url: str) -> None:
    url = schema_registry_url
    spec = prepare(settings(url, "json", "avro", topic()), resolve("sensor-features"))
    values: list[bytes | None] = [json.dumps(reading(i)).encode() for i in range(10)]
    result = process_batch("sensor-features", values, LIMIT, spec)
    assert result.outputs is not None
    outputs = [avro_read(url, v) for v in result.outputs if v is not None]
    assert outputs == [expected(i) for i in range(10)]


def test_identity_passes_avro_through_with_its_schema_id(schema_registry_url: str) -> None:
    url = schema_registry_url
    text = schema_text(SENSOR_READING_SCHEMA)
    in_id = register(url, f"{topic()}-value", text, "AVRO")
    spec = prepare(settings(url, "avro", "avro", topic()), resolve("identity"))
    values: list[bytes | None] = [avro_frame(in_id, text, reading(1)), b"\x07junk"]
    result = process_batch("identity", values, LIMIT, spec)
    assert result.materialize(values) == [values[0], None]
    assert [reason for _, reason, _ in result.errors] == ["bad_framing"]


def test_each_bad_input_has_its_reason(schema_registry_url: str) -> None:
    url = schema_registry_url
    text = schema_text(SENSOR_READING_SCHEMA)
    in_id = register(url, f"{topic()}-value", text, "AVRO")
    spec = prepare(settings(url, "avro", "json", topic()), resolve("sensor-features"))
    good = avro_frame(in_id, text, reading(3))
    values: list[bytes | None] = [
        json.dumps(reading(1)).encode(),  # no magic byte
        b"\x00" + struct.pack(">I", 987_654_321) + good[5:],  # no such schema id
        good[:5] + b"\x02",  # a body that does not decode
        good,
    ]
    result = process_batch("sensor-features", values, LIMIT, spec)
    reasons = {index: reason for index, reason, _ in result.errors}
    assert reasons == {0: "bad_framing", 1: "unknown_schema", 2: "decode_error"}
    assert result.outputs is not None
    output = result.outputs[3]
    assert output is not None
    assert json.loads(output) == expected(3)


def test_an_incompatible_output_schema_stops_the_start_in_one_line(
    schema_registry_url: str,
) -> None:
    url, out_topic = schema_registry_url, topic()
    subject = f"{out_topic}-value"
    old = {"type": "record", "name": "SensorFeatures", "namespace": "stream"}
    old["fields"] = [{"name": "sensor_id", "type": "string"}]  # type: ignore[assignment]
    register(url, subject, json.dumps(old), "AVRO")
    http("PUT", f"{url}/config/{subject}", {"compatibility": "BACKWARD"})
    with pytest.raises(RegistryError) as caught:
        prepare(settings(url, "json", "avro", out_topic), resolve("sensor-features"))
    message = str(caught.value)
    assert "\n" not in message
    assert subject in message
    assert "409" in message


def test_a_transform_without_an_output_schema_is_refused(schema_registry_url: str) -> None:
    with pytest.raises(RegistryError, match="no output schema"):
        prepare(settings(schema_registry_url, "json", "avro", topic()), resolve("matrix-inverse"))


def test_produce_format_avro_encodes_registered_demo_events(schema_registry_url: str) -> None:
    url, in_topic = schema_registry_url, topic()
    produce = ProduceSettings(format="avro", schema_registry_url=url, input_topic=in_topic)
    encode = demo_encoder(produce, in_topic)
    value = encode(reading(5))
    assert avro_read(url, value) == reading(5)
    assert http("GET", f"{url}/subjects/{in_topic}-value/versions") == [1]


# --- a registry outage mid-run -------------------------------------------------------------


@pytest.fixture(scope="module")
def own_registry() -> Iterator[LocalRegistry]:
    """A registry of this module's own, which the outage test stops and starts. Apicurio
    keeps schemas in memory by default; this one keeps them in a database file, so a
    restart is an outage, not a registry that has forgotten every id."""
    with (
        tempfile.TemporaryDirectory(prefix="stream-registry-") as data,
        local_registry(data_dir=data) as registry,
    ):
        yield registry


async def test_registry_down_mid_run_no_dead_letter(own_registry: LocalRegistry) -> None:
    url = own_registry.url
    text = schema_text(SENSOR_READING_SCHEMA)
    first_id = register(url, f"{topic()}-value", text, "AVRO")
    # A second input schema (another namespace: another id) the workers have not seen.
    other = json.loads(text)
    other["namespace"] = "stream.v2"
    other_text = json.dumps(other)
    second_id = register(url, f"{topic()}-value", other_text, "AVRO")
    spec = prepare(settings(url, "avro", "avro", topic()), resolve("sensor-features"))
    pool = WorkerPool("sensor-features", 1, LIMIT, batch_timeout=30.0, formats=spec)
    await pool.start()
    try:
        first = [avro_frame(first_id, text, reading(i)) for i in range(20)]
        warm = await pool.run(list(first))
        assert warm.errors == []
        own_registry.stop()
        # The worker knows first_id (cached) but must fetch second_id: the registry is down.
        batch: list[bytes | None] = [*first, avro_frame(second_id, other_text, reading(99))]
        pending = asyncio.ensure_future(pool.run(batch))
        await asyncio.sleep(6.0)  # longer than the worker's own retries (2 s)
        assert not pending.done()
        await asyncio.to_thread(own_registry.start)
        result = await asyncio.wait_for(pending, 60)
        # The schemas outlived the restart (a file, not memory): nothing re-registered.
        assert fetch(url, second_id)["schema"] == other_text
    finally:
        await pool.close()
    assert result.errors == []
    assert result.unavailable == ""
    assert result.outputs is not None
    assert avro_read(url, result.outputs[-1] or b"") == expected(99)
