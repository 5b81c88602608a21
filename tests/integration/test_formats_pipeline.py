"""Avro and Protobuf through a real Schema Registry, end to end through `stream run`.

Inputs come from the project's own encoder (``stream.formats.setup.demo_encoder``, what
``stream produce --format`` uses); outputs are read back by an independent client
(plain HTTP for the schema, fastavro or protoc for the body) and checked field by
field against what the JSON path computes for the same events.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fastavro import parse_schema, schemaless_reader

from stream.config import ProduceSettings
from stream.formats.avro import schema_text
from stream.produce import demo_encoder, demo_events, produce
from stream.worker import process_batch
from tests.helpers import (
    Service,
    Topics,
    committed_offsets,
    end_offsets,
    feed_demo,
    read_topic,
    send,
    start_service,
)
from tests.registry import (
    LocalRegistry,
    avro_frame,
    fetch,
    http,
    proto_class,
    register,
    unframe,
)
from transforms.builtin import SENSOR_READING_SCHEMA

pytestmark = pytest.mark.broker

LIMIT = 1 << 20
COUNT = 2_000
GUARANTEES = ["at-least-once", "exactly-once"]


# --- producing with the project's encoder, reading back independently ---------------------


async def feed_format(
    topics: Topics, url: str, fmt: str, count: int, seed: int = 3
) -> list[dict[str, Any]]:
    """Demo events in ``fmt`` (schema registered under ``<input>-value``); the events sent."""
    settings = ProduceSettings(
        bootstrap_servers=topics.bootstrap,
        input_topic=topics.input,
        count=count,
        seed=seed,
        keys=16,
        quiet=True,
        format=fmt,  # type: ignore[arg-type]
        schema_registry_url=url,
    )
    encode = demo_encoder(settings, topics.input)
    sent_events: list[dict[str, Any]] = []

    def keep(event: Any) -> bytes:
        sent_events.append(dict(event))
        return encode(event)

    sent, _ = await produce(settings, demo_events(settings, encode=keep))
    assert sent == count
    return sent_events


def json_path(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """sensor-features of each event through the worker's JSON path."""
    values: list[bytes | None] = [orjson.dumps(e) for e in events]
    result = process_batch("sensor-features", values, LIMIT)
    assert result.errors == []
    assert result.outputs is not None
    return [json.loads(v) for v in result.outputs if v is not None]


class Reader:
    """Decodes framed outputs by their schema id, each schema fetched once over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.avros: dict[int, Any] = {}  # parsed schemas
        self.protos: dict[int, Any] = {}

    def avro(self, value: bytes) -> dict[str, Any]:
        schema_id, body = unframe(value)
        if schema_id not in self.avros:
            self.avros[schema_id] = parse_schema(json.loads(fetch(self.url, schema_id)["schema"]))
        decoded = schemaless_reader(io.BytesIO(body), self.avros[schema_id], None)
        assert isinstance(decoded, dict)
        return decoded

    def protobuf(self, value: bytes) -> Any:
        schema_id, rest = unframe(value)
        assert rest[0] == 0  # message-index list [0]: the file's first message
        if schema_id not in self.protos:
            schema = fetch(self.url, schema_id)
            assert schema["schemaType"] == "PROTOBUF"
            self.protos[schema_id] = proto_class(schema["schema"])
        return self.protos[schema_id].FromString(rest[1:])


def assert_same(have: dict[str, Any], want: dict[str, Any]) -> None:
    assert have.keys() == want.keys()
    for name, value in want.items():
        if isinstance(value, float):
            assert have[name] == pytest.approx(value), name
        else:
            assert have[name] == value, name


def proto_fields(message: Any, want: dict[str, Any]) -> dict[str, Any]:
    """The message's fields named in ``want``, as plain Python values."""
    out: dict[str, Any] = {}
    for name, value in want.items():
        got = getattr(message, name)
        out[name] = list(got) if isinstance(value, list) else got
    assert message.HasField("seq")
    return out


def check_outputs(
    records: list[Any],
    events: list[dict[str, Any]],
    decode: Callable[[bytes, dict[str, Any]], dict[str, Any]],
    schema_id: int | None = None,
) -> None:
    """Every event has exactly one output, keyed as its input, in order per key, and equal
    field by field to what the JSON path computes for it."""
    assert len(records) == len(events)
    expected = {
        (e["sensor_id"], e["seq"]): w for e, w in zip(events, json_path(events), strict=True)
    }
    per_key: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if schema_id is not None:
            assert unframe(record.value)[0] == schema_id
        key = record.key.decode()
        assert record.value[0] == 0  # framed: a magic byte, then the schema id
        probe = decode(record.value, {"sensor_id": "", "seq": 0})
        want = expected[(key, probe["seq"])]
        have = decode(record.value, want)
        assert have["sensor_id"] == key, "the output keeps the input key"
        assert_same(have, want)
        per_key[key].append(have["seq"])
    counts: dict[str, int] = defaultdict(int)
    for event in events:
        counts[event["sensor_id"]] += 1
    for key, seqs in per_key.items():
        assert seqs == list(range(counts[key])), key
    assert per_key.keys() == counts.keys()


async def assert_all_committed_no_dead_letters(topics: Topics) -> None:
    ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
    assert await committed_offsets(topics.bootstrap, topics.group) == ends
    dead = await read_topic(topics.bootstrap, topics.dlq, 0, wait=2)
    assert dead == []


def format_flags(url: str, fin: str, fout: str) -> tuple[str, ...]:
    return (
        "--transform",
        "sensor-features",
        "--input-format",
        fin,
        "--output-format",
        fout,
        "--schema-registry-url",
        url,
    )


def output_schema_id(url: str, topics: Topics) -> int:
    latest = http("GET", f"{url}/subjects/{topics.output}-value/versions/latest")
    return int(latest["id"])


# --- 1-3: the formats through the running service -----------------------------------------------


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_avro_in_sensor_features_avro_out(
    topics: Topics, services: list[Service], schema_registry_url: str, guarantee: str
) -> None:
    url = schema_registry_url
    events = await feed_format(topics, url, "avro", COUNT)
    service = start_service(
        topics, "--workers", "2", "--guarantee", guarantee, *format_flags(url, "avro", "avro")
    )
    services.append(service)
    records = await read_topic(topics.bootstrap, topics.output, COUNT, wait=180)
    reader = Reader(url)
    check_outputs(records, events, lambda v, _: reader.avro(v), output_schema_id(url, topics))
    assert service.terminate() == 0, service.log()
    await assert_all_committed_no_dead_letters(topics)


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_protobuf_in_sensor_features_protobuf_out(
    topics: Topics, services: list[Service], schema_registry_url: str, guarantee: str
) -> None:
    url = schema_registry_url
    events = await feed_format(topics, url, "protobuf", COUNT)
    service = start_service(
        topics,
        "--workers",
        "2",
        "--guarantee",
        guarantee,
        *format_flags(url, "protobuf", "protobuf"),
    )
    services.append(service)
    records = await read_topic(topics.bootstrap, topics.output, COUNT, wait=180)
    reader = Reader(url)
    check_outputs(
        records,
        events,
        lambda v, want: proto_fields(reader.protobuf(v), want),
        output_schema_id(url, topics),
    )
    assert service.terminate() == 0, service.log()
    await assert_all_committed_no_dead_letters(topics)


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_json_in_avro_out(
    topics: Topics, services: list[Service], schema_registry_url: str, guarantee: str
) -> None:
    url = schema_registry_url
    events = await feed_demo(topics, COUNT, seed=5, keys=16)
    service = start_service(
        topics, "--workers", "2", "--guarantee", guarantee, *format_flags(url, "json", "avro")
    )
    services.append(service)
    records = await read_topic(topics.bootstrap, topics.output, COUNT, wait=180)
    reader = Reader(url)
    check_outputs(records, events, lambda v, _: reader.avro(v), output_schema_id(url, topics))
    assert service.terminate() == 0, service.log()
    await assert_all_committed_no_dead_letters(topics)


# --- 4: bad inputs are dead letters with their reason -------------------------------------------


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_each_bad_input_is_a_dead_letter_with_its_reason(
    topics: Topics, services: list[Service], schema_registry_url: str, guarantee: str
) -> None:
    url = schema_registry_url
    text = schema_text(SENSOR_READING_SCHEMA)
    in_id = register(url, f"{topics.input}-value", text, "AVRO")
    events: list[dict[str, Any]] = [
        {"sensor_id": f"s-{i % 8}", "seq": i // 8, "ts": 1000.0 + i, "values": [float(i % 5)] * 8}
        for i in range(200)
    ]
    good = [(e["sensor_id"].encode(), avro_frame(in_id, text, e)) for e in events]
    sample = good[0][1]
    bad: list[tuple[bytes, bytes, str]] = [
        (b"k-framing", orjson.dumps(events[0]), "bad_framing"),  # JSON: no magic byte
        (b"k-unknown", b"\x00" + struct.pack(">I", 987_654_321) + sample[5:], "unknown_schema"),
        (b"k-decode", sample[:5] + b"\x02", "decode_error"),  # a body its schema cannot read
    ]
    mixed = good[:100] + [(k, v) for k, v, _ in bad] + good[100:]
    await send(topics.bootstrap, topics.input, list(mixed))
    service = start_service(
        topics, "--workers", "1", "--guarantee", guarantee, *format_flags(url, "avro", "avro")
    )
    services.append(service)

    records = await read_topic(topics.bootstrap, topics.output, len(good), wait=120)
    dead = await read_topic(topics.bootstrap, topics.dlq, len(bad), wait=60)
    reader = Reader(url)
    check_outputs(records, events, lambda v, _: reader.avro(v))
    want = {(k, v): reason for k, v, reason in bad}
    assert len(dead) == len(bad)
    reasons = set()
    for record in dead:
        headers = {name: value.decode() for name, value in record.headers}
        assert (record.key, record.value) in want, "the dead letter keeps key and value"
        assert headers["stream.error.reason"] == want[(record.key, record.value)]
        assert headers["stream.source.topic"] == topics.input
        reasons.add(headers["stream.error.reason"])
    assert reasons == {"bad_framing", "unknown_schema", "decode_error"}
    assert service.terminate() == 0, service.log()
    ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
    assert await committed_offsets(topics.bootstrap, topics.group) == ends


# --- 5: the registry down for 20 s mid-stream ----------------------------------------------------


async def test_registry_down_20s_mid_stream_loses_nothing(
    topics: Topics, services: list[Service], stoppable_registry: LocalRegistry
) -> None:
    """Exactly-once here, its transactions held open through the outage on the real
    broker; at-least-once through the same outage is on the fakes
    (tests/unit/test_outages_registry.py)."""
    url = stoppable_registry.url
    guarantee = "exactly-once"
    text = schema_text(SENSOR_READING_SCHEMA)
    first_id = register(url, f"{topics.input}-value", text, "AVRO")
    # More input schemas (other namespaces: other ids), registered now but never seen by
    # the service's workers until the registry is down.
    later: list[tuple[int, str]] = []
    for n in range(2, 6):
        other = json.loads(text)
        other["namespace"] = f"stream.v{n}"
        later.append(
            (register(url, f"{topics.input}-value", json.dumps(other), "AVRO"), json.dumps(other))
        )

    def event(i: int) -> dict[str, Any]:
        values = [float((i * 7 + k) % 5) for k in range(16)]
        return {"sensor_id": f"s-{i % 8}", "seq": i // 8, "ts": 1000.0 + i, "values": values}

    before = 400
    events = [event(i) for i in range(before)]
    await send(
        topics.bootstrap,
        topics.input,
        [(e["sensor_id"].encode(), avro_frame(first_id, text, e)) for e in events],
    )
    service = start_service(
        topics,
        "--workers",
        "2",
        "--guarantee",
        guarantee,
        "--schema-registry-retry",
        "2",
        *format_flags(url, "avro", "avro"),
    )
    services.append(service)
    warm = await read_topic(topics.bootstrap, topics.output, before, wait=120)
    assert len(warm) == before

    await asyncio.to_thread(stoppable_registry.stop)
    try:
        stopped = time.monotonic()
        during = 800
        new_events = [event(i) for i in range(before, before + during)]
        framed: list[tuple[bytes | None, bytes | None]] = []
        for i, e in enumerate(new_events):
            schema_id, schema = later[i % len(later)]
            framed.append((e["sensor_id"].encode(), avro_frame(schema_id, schema, e)))
        await send(topics.bootstrap, topics.input, framed)
        events += new_events
        await asyncio.sleep(max(0.0, 20.0 - (time.monotonic() - stopped)))
        assert service.process.poll() is None, service.log()
    finally:
        await asyncio.to_thread(stoppable_registry.start)

    records = await read_topic(topics.bootstrap, topics.output, len(events), wait=180)
    assert service.process.poll() is None, "the same process goes on:\n" + service.log()
    reader = Reader(url)
    check_outputs(records, events, lambda v, _: reader.avro(v), output_schema_id(url, topics))
    assert service.terminate() == 0, service.log()
    await assert_all_committed_no_dead_letters(topics)


# --- 6: an incompatible output schema stops the start ------------------------------------------


async def test_an_incompatible_output_schema_is_one_line_and_exit_1(
    topics: Topics, services: list[Service], schema_registry_url: str
) -> None:
    url = schema_registry_url
    subject = f"{topics.output}-value"
    old = {
        "type": "record",
        "name": "SensorFeatures",
        "namespace": "stream",
        "fields": [{"name": "sensor_id", "type": "string"}],
    }
    register(url, subject, json.dumps(old), "AVRO")
    http("PUT", f"{url}/config/{subject}", {"compatibility": "BACKWARD"})
    service = start_service(topics, *format_flags(url, "json", "avro"))
    services.append(service)
    code = await asyncio.to_thread(service.process.wait, 120)
    service.close()
    assert code == 1, service.log()
    lines = [line for line in service.lines if line.strip()]
    refusals = [line for line in lines if subject in line]
    assert len(refusals) == 1, service.log()
    assert "409" in refusals[0]
    assert "Traceback" not in service.log()
    assert http("GET", f"{url}/subjects/{subject}/versions") == [1]
