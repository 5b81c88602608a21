"""Schemas the decoder used to trip on, and registry answers that used to stall a
partition, end to end through `stream run` on the real broker and the real registry.

- Protobuf records with maps, a recursive type and well-known types are outputs, never
  dead letters (they were all ``decode_error``, their offsets committed).
- Records whose schema id the registry does not know, or refuses for good, are dead
  letters with their reason while the rest flow, and cost a bounded number of lookups
  (an unknown id was one lookup per record; a 403 held the partition for good).

The registry's answers go through a counting gate (tests/registry_gate.py) that answers
itself only for the one id a test wants refused with a 403.
"""

from __future__ import annotations

import json
import secrets
import struct
from typing import Any

import pytest

from stream.formats.avro import schema_text
from tests.helpers import (
    Service,
    Topics,
    committed_offsets,
    end_offsets,
    read_topic,
    send,
    start_service,
)
from tests.proto_samples import RICH_PROTO, as_record, rich_class, rich_reading
from tests.registry import avro_frame, register
from tests.registry_gate import registry_gate
from transforms.builtin import SENSOR_READING_SCHEMA

pytestmark = pytest.mark.broker

GUARANTEES = ["at-least-once", "exactly-once"]


def formats(url: str, fin: str) -> tuple[str, ...]:
    return (
        "--transform",
        "identity",
        "--input-format",
        fin,
        "--output-format",
        "json",
        "--schema-registry-url",
        url,
    )


async def all_committed(topics: Topics) -> bool:
    ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
    return await committed_offsets(topics.bootstrap, topics.group) == ends


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_protobuf_maps_recursion_and_well_known_types_are_outputs_not_dead_letters(
    topics: Topics, services: list[Service], schema_registry_url: str, guarantee: str
) -> None:
    url = schema_registry_url
    in_id = register(url, f"{topics.input}-value", RICH_PROTO, "PROTOBUF")
    cls = rich_class(RICH_PROTO)
    messages = []
    for seq in range(400):
        message = rich_reading(cls, seq % 20)
        message.sensor_id = f"s-{seq % 8}"
        message.counts["seq"] = seq
        messages.append(message)
    header = b"\x00" + struct.pack(">I", in_id) + b"\x00"
    await send(
        topics.bootstrap,
        topics.input,
        [(m.sensor_id.encode(), header + m.SerializeToString()) for m in messages],
    )
    service = start_service(
        topics, "--workers", "2", "--guarantee", guarantee, *formats(url, "protobuf")
    )
    services.append(service)
    records = await read_topic(topics.bootstrap, topics.output, len(messages), wait=120)
    dead = await read_topic(topics.bootstrap, topics.dlq, 0, wait=2)
    assert dead == [], [dict(r.headers).get("stream.error.message") for r in dead[:3]]
    assert len(records) == len(messages)
    by_seq = {m.counts["seq"]: m for m in messages}
    for record in records:
        output = json.loads(record.value)
        assert output == as_record(by_seq[output["counts"]["seq"]])
        assert record.key == output["sensor_id"].encode()
    assert service.terminate() == 0, service.log()
    assert await all_committed(topics)


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_unknown_and_refused_ids_are_dead_letters_and_the_rest_flow(
    topics: Topics, services: list[Service], schema_registry_url: str, guarantee: str
) -> None:
    text = schema_text(SENSOR_READING_SCHEMA)
    known = register(schema_registry_url, f"{topics.input}-value", text, "AVRO")
    unknown, refused = (1_000_000_000 + secrets.randbelow(10**9) for _ in range(2))
    events: list[dict[str, Any]] = [
        {"sensor_id": f"s-{i % 8}", "seq": i // 8, "ts": 1000.0 + i, "values": [float(i)]}
        for i in range(400)
    ]
    records: list[tuple[bytes | None, bytes | None]] = []
    bad: dict[bytes, str] = {}
    for i, event in enumerate(events):
        value = avro_frame(known, text, event)
        records.append((event["sensor_id"].encode(), value))
        if i % 10 == 0:  # another environment's id, and an id the registry refuses (403)
            for schema_id, reason in ((unknown, "unknown_schema"), (refused, "schema_refused")):
                other = b"\x00" + struct.pack(">I", schema_id) + value[5:]
                records.append((event["sensor_id"].encode(), other))
                bad[other] = reason
    await send(topics.bootstrap, topics.input, records)
    with registry_gate(schema_registry_url) as gate:
        gate.canned[refused] = (403, b'{"error_code": 40301, "message": "no access to it"}')
        service = start_service(
            topics,
            "--workers",
            "2",
            "--guarantee",
            guarantee,
            "--schema-registry-retry",
            "2",
            *formats(gate.url, "avro"),
        )
        services.append(service)
        outputs = await read_topic(topics.bootstrap, topics.output, len(events), wait=120)
        dead = await read_topic(topics.bootstrap, topics.dlq, len(bad), wait=60)
        assert service.terminate() == 0, service.log()
    assert sorted(
        (json.loads(r.value)["sensor_id"], json.loads(r.value)["seq"]) for r in outputs
    ) == sorted((e["sensor_id"], e["seq"]) for e in events)
    assert len(dead) == len(bad)
    for record in dead:
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["stream.error.reason"] == bad[record.value]
    # Each worker asks about each id once per 30 s, not once per record (40 each here).
    assert gate.lookups(unknown) <= 4
    assert gate.lookups(refused) <= 4
    assert await all_committed(topics)
