"""Seeing results and wrong inputs on the real broker: `stream read` prints a topic's
records (dead letters with their reasons), and `stream produce` and `stream lag` given a
topic or group that does not exist say so in one line. The commands run in this
process (``main`` in a thread), as the console script would run them."""

from __future__ import annotations

import asyncio
import shlex
import time

import orjson
import pytest

from stream.cli import main
from stream.config import KafkaSettings
from stream.kafka import delete_topics
from tests.helpers import Topics, feed_demo

pytestmark = pytest.mark.broker


async def run_cli(args: list[str]) -> int:
    """``stream ARGS`` in a thread (it runs its own event loop); its exit code."""

    def call() -> int:
        try:
            return main(args)
        except SystemExit as exc:
            return int(exc.code or 0)

    return await asyncio.to_thread(call)


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
