"""What the registry answers for a record's schema id, and what the worker does with it.

The registry is real (the session's, see tests/registry.py); a counting gate in front
of it (tests/registry_gate.py) counts the lookups, and answers itself only for the ids
a test names, with what the real registry cannot be made to say (403, 422, a body that
is not a schema, an endless body, a 503, a 401).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from stream.formats.avro import schema_text
from stream.formats.registry import (
    RegistryClient,
    RegistryConfig,
    RegistryError,
    SchemaNotFound,
    SchemaRefused,
)
from stream.formats.spec import FormatSpec
from stream.worker import process_batch
from tests.registry import avro_frame, register
from tests.registry_gate import ENDLESS, Gate, registry_gate
from transforms.builtin import SENSOR_READING_SCHEMA

LIMIT = 1 << 20
TEXT = schema_text(SENSOR_READING_SCHEMA)


def reading(i: int) -> dict[str, Any]:
    return {"sensor_id": f"s-{i % 3}", "seq": i, "ts": 1000.0 + i, "values": [float(i), 2.0]}


def far_id() -> int:
    """An id no registry of these tests has given out."""
    return 1_000_000_000 + secrets.randbelow(1_000_000_000)


@pytest.fixture
def gate(schema_registry_url: str) -> Iterator[Gate]:
    with registry_gate(schema_registry_url) as found:
        yield found


def spec(gate: Gate, **config: Any) -> FormatSpec:
    """Avro in, JSON out, through the gate (a spec of its own: a worker client of its own)."""
    return FormatSpec("avro", "json", RegistryConfig(gate.url, **config))


def known_id(schema_registry_url: str) -> int:
    return register(schema_registry_url, f"t-{uuid.uuid4().hex[:10]}-value", TEXT, "AVRO")


def reframe(value: bytes, schema_id: int) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + value[5:]


def test_an_unknown_id_is_asked_once_and_remembered(gate: Gate, schema_registry_url: str) -> None:
    known, unknown = known_id(schema_registry_url), far_id()
    good = [avro_frame(known, TEXT, reading(i)) for i in range(100)]
    values: list[bytes | None] = []
    for value in good:
        values += [value, reframe(value, unknown)]  # a producer with another registry's ids
    run = spec(gate, retry_for=2.0)
    result = process_batch("identity", values, LIMIT, run)
    assert result.unavailable == ""
    assert sorted(i for i, _, _ in result.errors) == list(range(1, 200, 2))
    assert {reason for _, reason, _ in result.errors} == {"unknown_schema"}
    outputs = result.materialize(values)
    assert [json.loads(v) for v in outputs[::2] if v is not None] == [
        reading(i) for i in range(100)
    ]
    assert gate.lookups(unknown) == 1  # was one per record: 100
    assert gate.lookups(known) == 1
    again = process_batch("identity", values, LIMIT, run)  # within remember_for (30 s)
    assert len(again.errors) == 100
    assert gate.lookups(unknown) == 1


CANNED: dict[str, tuple[int, bytes]] = {
    "403": (403, b'{"error_code": 40301, "message": "User cannot access the resource"}'),
    "422": (422, b'{"error_code": 42201, "message": "Invalid schema"}'),
    "html": (200, b"<html><body>Sign in to continue</body></html>"),
    "no schema": (200, b'{"id": 3, "note": "a JSON answer that holds no schema"}'),
    "endless": (ENDLESS, b""),
}


def test_a_lasting_refusal_for_an_id_dead_letters_its_records_and_the_rest_flow(
    gate: Gate, schema_registry_url: str
) -> None:
    known = known_id(schema_registry_url)
    refused = {name: far_id() for name in CANNED}
    for name, schema_id in refused.items():
        gate.canned[schema_id] = CANNED[name]
    good = [avro_frame(known, TEXT, reading(i)) for i in range(30)]
    values: list[bytes | None] = list(good[:10])
    for _ in range(3):
        values += [reframe(good[0], schema_id) for schema_id in refused.values()]
    values += good[10:]
    run = spec(gate, retry_for=2.0, max_answer_bytes=1 << 20)
    result = process_batch("identity", values, LIMIT, run)
    assert result.unavailable == "", "a lasting answer for one id must not hold the batch"
    assert {reason for _, reason, _ in result.errors} == {"schema_refused"}
    assert sorted(i for i, _, _ in result.errors) == list(range(10, 25))
    messages = {values[i]: message for i, _, message in result.errors}
    for name, schema_id in refused.items():
        assert gate.lookups(schema_id) == 1, name  # asked once, not once per record
        message = messages[reframe(good[0], schema_id)]
        assert f"schema id {schema_id}" in message
        assert "\n" not in message
    assert "HTTP 403" in messages[reframe(good[0], refused["403"])]
    assert "over 1048576 bytes" in messages[reframe(good[0], refused["endless"])]
    outputs = [v for v in result.materialize(values) if v is not None]
    assert [json.loads(v) for v in outputs] == [reading(i) for i in range(30)]
    # The endless body was refused while it was read, not buffered: the gate could send
    # little more than the limit and the sockets' buffers before the client left. The
    # gate's thread notes what it sent once it sees the client gone: wait for that.
    deadline = time.monotonic() + 10
    while not gate.endless_sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(gate.endless_sent) == 1
    assert gate.endless_sent[0] < 64 << 20


@pytest.mark.parametrize(
    "answer",
    [
        (503, b'{"error_code": 50001, "message": "Error in the backend data store"}'),
        (429, b'{"message": "Too many requests"}'),
        (401, b'{"error_code": 401, "message": "Unauthorized"}'),
    ],
    ids=["503", "429", "401"],
)
def test_an_outage_or_refused_credentials_hold_the_batch_and_blame_no_record(
    gate: Gate, schema_registry_url: str, answer: tuple[int, bytes]
) -> None:
    known, held = known_id(schema_registry_url), far_id()
    gate.canned[held] = answer
    good = avro_frame(known, TEXT, reading(1))
    values: list[bytes | None] = [good, reframe(good, held), good]
    result = process_batch("identity", values, LIMIT, spec(gate, retry_for=0.5))
    assert f"HTTP {answer[0]}" in result.unavailable
    assert result.errors == []  # the pool runs the batch again; nobody is a dead letter
    retried = answer[0] != 401  # an outage is retried in the worker; credentials are not
    assert (gate.lookups(held) > 1) == retried
    gate.canned.pop(held)  # the registry answers again: now a plain 404, the record's own
    after = process_batch("identity", values, LIMIT, spec(gate, retry_for=0.5))
    assert [(i, reason) for i, reason, _ in after.errors] == [(1, "unknown_schema")]


def test_a_redirect_is_not_followed_and_our_credentials_stay_with_the_registry(
    gate: Gate, schema_registry_url: str
) -> None:
    with registry_gate(schema_registry_url) as elsewhere:  # another origin, counting
        target = far_id()
        gate.canned[target] = (307, f"{elsewhere.url}/schemas/ids/{target}".encode())
        config = RegistryConfig(gate.url, username="u", password="pw-" + "x" * 8, retry_for=0.5)
        with pytest.raises(RegistryError) as caught:
            RegistryClient(config).schema(target)
        assert not isinstance(caught.value, SchemaNotFound | SchemaRefused)
        assert "HTTP 307" in str(caught.value)
        assert config.password not in str(caught.value)
        assert sum(elsewhere.requests.values()) == 0  # nothing went there, credentials included
        good = avro_frame(known_id(schema_registry_url), TEXT, reading(1))
        values: list[bytes | None] = [good, reframe(good, target)]
        result = process_batch("identity", values, LIMIT, spec(gate, retry_for=0.5))
        assert "HTTP 307" in result.unavailable  # held, like a wrong URL: no record blamed
        assert result.errors == []
