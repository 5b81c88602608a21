"""Avro and Protobuf through a real Schema Registry, in the workers, without Kafka.

A producer's view (records framed by hand with fastavro or protobuf and schemas
registered over HTTP), the worker's ``process_batch`` and the pool in between, and an
independent reader of the outputs (HTTP + fastavro / protoc). The registry is real:
``SCHEMA_REGISTRY_URL``, a container, or deploy/registry/registry.sh.
"""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from typing import Any

import pytest

from stream.config import ProduceSettings, RunSettings
from stream.formats.avro import schema_text
from stream.formats.protobuf import proto_text
from stream.formats.registry import RegistryError
from stream.formats.setup import prepare
from stream.pool import WorkerPool
from stream.produce import demo_encoder
from stream.worker import process_batch
from tests.proto_samples import RICH_PROTO, as_record, rich_class, rich_reading
from tests.registry import (
    LocalRegistry,
    avro_frame,
    avro_read,
    fetch,
    http,
    proto_class,
    proto_read,
    register,
    unframe,
)
from transforms import resolve
from transforms.builtin import SENSOR_READING_SCHEMA

LIMIT = 1 << 20
CT = "application/vnd.schemaregistry.v1+json"


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


# --- Protobuf: maps, recursive messages, well-known types ---------------------------------------


def test_protobuf_maps_recursion_and_well_known_types_decode(schema_registry_url: str) -> None:
    """Valid Protobuf records with maps, a recursive type and well-known types (imported
    by the registered .proto) decode, as protobuf's JSON mapping writes them."""
    url = schema_registry_url
    in_id = register(url, f"{topic()}-value", RICH_PROTO, "PROTOBUF")
    cls = rich_class(fetch(url, in_id)["schema"])
    messages = [rich_reading(cls, i) for i in range(20)]
    values: list[bytes | None] = [
        b"\x00" + struct.pack(">I", in_id) + b"\x00" + m.SerializeToString() for m in messages
    ]
    spec = prepare(settings(url, "protobuf", "json", topic()), resolve("identity"))
    result = process_batch("identity", values, LIMIT, spec)
    assert result.errors == []
    assert result.outputs is not None
    for message, output in zip(messages, result.outputs, strict=True):
        assert output is not None
        assert json.loads(output) == as_record(message)


# --- a registry outage mid-run -------------------------------------------------------------


async def test_registry_down_mid_run_no_dead_letter(stoppable_registry: LocalRegistry) -> None:
    """The registry stops mid-run and starts again (its schemas in a database file, so a
    restart is an outage, not a registry that has forgotten every id)."""
    url = stoppable_registry.url
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
        stoppable_registry.stop()
        try:
            # The worker knows first_id (cached) but must fetch second_id: the registry is down.
            batch: list[bytes | None] = [*first, avro_frame(second_id, other_text, reading(99))]
            pending = asyncio.ensure_future(pool.run(batch))
            await asyncio.sleep(6.0)  # longer than the worker's own retries (2 s)
            assert not pending.done()
        finally:
            await asyncio.to_thread(stoppable_registry.start)
        result = await asyncio.wait_for(pending, 60)
        # The schemas outlived the restart (a file, not memory): nothing re-registered.
        assert fetch(url, second_id)["schema"] == other_text
    finally:
        await pool.close()
    assert result.errors == []
    assert result.unavailable == ""
    assert result.outputs is not None
    assert avro_read(url, result.outputs[-1] or b"") == expected(99)
