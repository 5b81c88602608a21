"""Seeing results and wrong inputs on the real broker: `stream read` prints a topic's
records (dead letters with their reasons), and `stream produce` and `stream lag` given a
topic or group that does not exist say so in one line. The commands run in this
process (``main`` in a thread), as the console script would run them."""

from __future__ import annotations

import asyncio
import re
import shlex
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream.cli import main
from stream.config import KafkaSettings
from stream.kafka import delete_topics
from tests.helpers import Service, Topics, feed_demo, read_topic, send, start_service

pytestmark = pytest.mark.broker


async def run_cli(args: list[str]) -> int:
    """``stream ARGS`` in a thread (it runs its own event loop); its exit code."""

    def call() -> int:
        try:
            return main(args)
        except SystemExit as exc:
            return int(exc.code or 0)

    return await asyncio.to_thread(call)


def lines_of(topic: str, out: str) -> list[tuple[int, int, str, str]]:
    """(partition, offset, key, value text) of each record line; second lines left out."""
    found = []
    for line in out.splitlines():
        if line.startswith("  "):
            continue
        match = re.fullmatch(re.escape(topic) + r"\[(\d+)\]@(\d+) key=(\S+) (.*)", line)
        assert match, line
        found.append((int(match[1]), int(match[2]), match[3], match[4]))
    return found


async def test_read_shows_outputs_and_dead_letters_as_the_service_wrote_them(
    topics: Topics, services: list[Service], capsys: pytest.CaptureFixture[str]
) -> None:
    await feed_demo(topics, 12, keys=4)
    matrix = orjson.dumps({"id": "m-1", "seq": 0, "ts": 1.0, "matrix": [[1.0]]})
    bad: list[tuple[bytes | None, bytes | None]] = [
        (b"bad-1", b"not json"),
        (None, b"\xff\x1b[2J"),
        (b"m-1", matrix),
    ]
    await send(topics.bootstrap, topics.input, bad)
    services.append(start_service(topics, "--workers", "1"))
    await read_topic(topics.bootstrap, topics.output, 12)
    await read_topic(topics.bootstrap, topics.dlq, 3)
    connection = ["--bootstrap-servers", topics.bootstrap]

    assert await run_cli(["read", *connection, topics.output]) == 0
    out, err = capsys.readouterr()
    assert err == f"end of {topics.output}: 12 records\n"
    outputs = lines_of(topics.output, out)
    assert len(outputs) == 12
    for _partition, _offset, key, text in outputs:
        value = orjson.loads(text)
        assert value["sensor_id"] == key
        assert {"mean", "std", "anomaly"} <= value.keys()  # sensor-features results

    assert await run_cli(["read", *connection, topics.dlq]) == 0
    out, err = capsys.readouterr()
    assert err == f"end of {topics.dlq}: 3 records, 3 of them dead letters\n"
    assert "\x1b" not in out
    lines = out.splitlines()
    assert len(lines) == 6
    letters = {}
    for first, second in zip(lines[::2], lines[1::2], strict=True):
        ((_, _, key, text),) = lines_of(topics.dlq, first)
        reason = re.search(r"^  reason=(\S+) message=\".*\" source=(\S+)$", second)
        assert reason, second
        assert reason[2].startswith(f"{topics.input}[")
        letters[key] = (text, reason[1])
    assert letters == {
        "bad-1": ('(not JSON, 8 bytes) "not json"', "invalid_json"),
        "null": ('(not UTF-8 text, 5 bytes) "\\xff\\x1b[2J"', "invalid_utf8"),
        "m-1": ('{"id":"m-1","seq":0,"ts":1.0,"matrix":[[1.0]]}', "schema"),
    }

    assert await run_cli(["read", *connection, topics.output, "--count", "5"]) == 0
    out, err = capsys.readouterr()
    assert len(lines_of(topics.output, out)) == 5
    assert err == "stopped after 5 records (--count)\n"


async def test_read_committed_leaves_out_an_aborted_transaction_read_uncommitted_not(
    topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=topics.bootstrap, transactional_id=f"{topics.group}-reader-test"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topics.input, b'{"kept": 1}', key=b"k", partition=0)
        await producer.begin_transaction()
        await producer.send_and_wait(topics.input, b'{"aborted": 1}', key=b"k", partition=0)
        await producer.abort_transaction()
    finally:
        await producer.stop()
    read = ["read", "--bootstrap-servers", topics.bootstrap, topics.input]
    assert await run_cli(read) == 0
    out = capsys.readouterr().out
    assert [text for *_, text in lines_of(topics.input, out)] == ['{"kept":1}']
    assert await run_cli([*read, "--isolation", "read_uncommitted"]) == 0
    out = capsys.readouterr().out
    assert [text for *_, text in lines_of(topics.input, out)] == ['{"kept":1}', '{"aborted":1}']


async def test_follow_waits_for_new_records(
    topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    read = ["read", "--bootstrap-servers", topics.bootstrap, topics.input, "--follow"]
    reader = asyncio.create_task(run_cli([*read, "--count", "3"]))
    await send(topics.bootstrap, topics.input, [(b"a", b"1")])
    out = ""
    deadline = time.monotonic() + 30
    while not out and time.monotonic() < deadline and not reader.done():
        await asyncio.sleep(0.05)
        out += capsys.readouterr().out
    assert len(lines_of(topics.input, out)) == 1  # it printed the first and waits on
    assert not reader.done()
    await send(topics.bootstrap, topics.input, [(b"b", b"2"), (b"c", b"3")])
    assert await asyncio.wait_for(reader, 30) == 0
    out += capsys.readouterr().out
    assert sorted(text for *_, text in lines_of(topics.input, out)) == ["1", "2", "3"]


async def test_read_a_missing_topic_is_one_line_naming_the_closest(
    topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = topics.output[:-1]
    assert await run_cli(["read", "--bootstrap-servers", topics.bootstrap, typo]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"stream read: error: topic {typo} does not exist (did you mean {topics.output}?)\n"
    )


async def test_read_decodes_avro_through_the_registry(
    topics: Topics, schema_registry_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = ["--schema-registry-url", schema_registry_url]
    connection = ["--bootstrap-servers", topics.bootstrap]
    produce = ["produce", *connection, "--topic", topics.output, "--format", "avro"]
    assert await run_cli([*produce, *registry, "--count", "4", "--keys", "2"]) == 0
    await send(topics.bootstrap, topics.output, [(b"plain", b'{"not": "avro"}')])
    capsys.readouterr()
    read = ["read", *connection, topics.output, "--input-format", "avro", *registry]
    assert await run_cli(read) == 0
    out, err = capsys.readouterr()
    assert err == f"end of {topics.output}: 5 records\n"
    texts = {key: text for *_, key, text in lines_of(topics.output, out)}
    plain = texts.pop("plain")
    assert plain.startswith("(not avro: bad_framing: ")
    assert plain.endswith('15 bytes) "{\\"not\\": \\"avro\\"}"')
    for key, text in texts.items():
        value = orjson.loads(text)
        assert value["sensor_id"] == key
        assert len(value["values"]) == 64


async def test_produce_to_a_missing_topic_is_one_line_at_once_with_a_command_that_creates_it(
    topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = topics.input + "-absent"
    connection = ["--bootstrap-servers", topics.bootstrap]
    started = time.monotonic()
    code = await run_cli(["produce", *connection, "--topic", missing, "--count", "5"])
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"stream produce: error: topic {missing} does not exist; ")
    assert took < 10, f"{took:.1f}s: it waited for metadata instead of asking"
    hint = err.split("`")[1]
    assert hint.startswith("stream topics create ")
    # The hint, run as given, makes the topic: the same produce then works.
    assert await run_cli(shlex.split(hint)[1:]) == 0
    assert f"{missing}: created" in capsys.readouterr().out
    code = await run_cli(["produce", *connection, "--topic", missing, "--count", "5"])
    assert code == 0, capsys.readouterr().err
    assert f"sent 5 sensor events (16 keys, seed 0) to {missing}" in capsys.readouterr().out
    await delete_topics(
        KafkaSettings(bootstrap_servers=topics.bootstrap), [missing, f"{missing}.dlq"]
    )


async def test_lag_of_a_group_without_offsets_says_so_and_exits_1(
    topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    await feed_demo(topics, 10)
    group = topics.group + "-never-ran"
    lag = ["lag", *topics.input_options(), "--group-id", group]
    assert await run_cli(lag) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"stream lag: error: group {group} has no committed offsets on topic {topics.input} "
        "(does it exist? a service's group is its --group-id); the topic holds 10 records\n"
    )
    # JSON is for scripts: the nulls say it, and the backlog is there.
    assert await run_cli([*lag, "--json"]) == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data["total_lag"] == 10
    assert all(p["committed"] is None for p in data["partitions"])
