"""Windows (``--window``) on a real broker, checked against the reference model in
:mod:`tests.windows_reference` (which shares no code with the service): late records,
quiet input, a changed ``--aggregate`` over an existing changelog, and a changelog ahead
of the group's offsets. The kills and rebalances are in tests/chaos/test_windows_chaos.py.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import OffsetAndMetadata

from tests.helpers import (
    Service,
    Topics,
    committed_offsets,
    drop_topics,
    end_offsets,
    make_topics,
    read_topic,
    start_service,
    wait_caught_up,
)
from tests.windows_broker import (
    CLOSER,
    T0,
    assert_outputs,
    changelog_shape,
    changelog_topic,
    close_all,
    dead_letters,
    drop_changelog,
    event,
    feed,
    metric,
    reason,
    reference,
    source,
    spread,
    windowed,
)
from tests.windows_reference import AGGREGATES, Shape

pytestmark = pytest.mark.broker

SECOND = 1000


@pytest.fixture
async def topics(bootstrap: str) -> AsyncIterator[Topics]:
    """Fresh topics of four partitions; dropped at the end with the windows' changelog."""
    made = await make_topics(bootstrap)
    yield made
    await drop_changelog(made)
    await drop_topics(made)


@pytest.fixture
async def single(bootstrap: str) -> AsyncIterator[Topics]:
    """Fresh topics of one partition (records in the order sent), dropped alike."""
    made = await make_topics(bootstrap, partitions=1)
    yield made
    await drop_changelog(made)
    await drop_topics(made)


async def test_late_records_are_dead_letters_and_counted_the_rest_aggregates(
    single: Topics, services: list[Service]
) -> None:
    """Hopping windows with a grace: a record behind stream time past the grace of all
    its windows is a dead letter (reason ``late``) and counted; one that still has an
    open window adds to that one only."""
    topics = single
    shape = Shape(2 * SECOND, SECOND, 500)  # hopping:2s/1s, grace 500ms
    crafted = [
        event("a", T0 + 10_000, [1.0, 2.0]),  # stream time 10 s
        event("b", T0 + 7_400, 5.0),  # windows [6,8) and [7,9) closed at 8.5 and 9.5: late
        event("c", T0 + 7_600, [6.0, 7.0]),  # late as well
        event("d", T0 + 8_100, [3.0, 4.0]),  # [7,9) closed, [8,10) open: adds to it alone
        event("a", T0 + 9_999, 9.0),  # [8,10) and [9,11) open
        event(None, T0 + 9_500, [2.5, 3.5]),  # no key: windowed all the same
        event(None, T0 + 7_000, 1.0),  # no key, late
    ]
    later = spread(random.Random("late"), 6, 400, T0 + 10_000, 8_000, jitter=1_500)
    await feed(topics, crafted + later)
    await close_all(topics, T0 + 60_000)
    count = len(crafted) + len(later) + topics.partitions
    expected = await reference(topics, count, shape)
    assert (0, 1) in expected.late  # the crafted ones
    assert (0, 2) in expected.late
    assert (0, 3) not in expected.late
    assert (0, 6) in expected.late
    assert any(w.key is None for w in expected.closed)
    assert len(expected.late) > 10  # the jittered ones too

    service = start_service(
        topics, "--workers", "1", *windowed("hopping:2s/1s", "--grace", "500ms")
    )
    services.append(service)
    await assert_outputs(topics, expected.closed, AGGREGATES)
    late = await dead_letters(topics, len(expected.late))
    assert Counter(map(source, late)) == Counter(expected.late)  # each once
    assert {reason(r) for r in late} == {"late"}
    assert await metric(service, "stream_window_late_records_total", len(expected.late)) == (
        len(expected.late)
    )
    assert service.terminate() == 0, service.log()


async def test_quiet_input_closes_windows_after_idle_close(
    topics: Topics, services: list[Service]
) -> None:
    """--idle-close 2s: once each partition has read to its end and nothing came for two
    seconds, its windows close without any further input (no closing record is sent),
    exactly once: a restart does not output them again."""
    events = spread(random.Random("quiet"), 8, 300, T0, 3_000)
    await feed(topics, events)
    inputs = await read_topic(topics.bootstrap, topics.input, len(events))
    last_input = max(r.timestamp for r in inputs)
    shape = Shape.tumbling(SECOND)
    far = {p: T0 + 3_600_000 for p in range(topics.partitions)}  # quiet long enough: all close
    expected = await reference(topics, len(events), shape, idle_until=far)
    assert expected.open == []
    assert len({w.start for w in expected.closed}) >= 3

    options = ("--workers", "1", *windowed("tumbling:1s", "--idle-close", "2s"))
    service = start_service(topics, *options)
    services.append(service)
    outputs = await assert_outputs(topics, expected.closed, AGGREGATES, wait=30)
    # The last windows closed on the quiet, not on a record: two seconds after the input.
    assert max(r.timestamp for r in outputs) - last_input >= 2 * SECOND - 100
    assert service.terminate() == 0, service.log()
    # Those closings were committed with the state: a restart restores no window (so
    # none can close twice).
    service = start_service(topics, *options)
    services.append(service)
    with_data = {r.partition for r in inputs}
    for p in with_data:
        line = await asyncio.to_thread(service.wait_for, f"{topics.input}[{p}]: restored")
        assert "restored 0 windows" in line, line
    assert service.terminate() == 0, service.log()


async def test_a_changed_aggregate_list_reads_the_partials_of_the_earlier_run(
    topics: Topics, services: list[Service]
) -> None:
    """Run with ``--aggregate count,sum``, stop with every window open, run again with
    ``count,mean,std,max``: each window spans both runs, and its output has the new
    fields, over the records of both runs (the changelog keeps the whole partial)."""
    rng = random.Random("aggregates")
    window = "tumbling:1h"
    first = spread(rng, 12, 600, T0, 300_000)
    await feed(topics, first)
    service = start_service(topics, "--workers", "1", *windowed(window, "--aggregate", "count,sum"))
    services.append(service)
    assert await wait_caught_up(topics, 60), service.log()
    assert service.terminate() == 0, service.log()
    assert await read_topic(topics.bootstrap, topics.output, 0, wait=1) == []  # all open

    second = spread(rng, 12, 600, T0 + 300_000, 300_000)
    await feed(topics, second)
    await close_all(topics, T0 + 3 * 3_600_000)
    count = len(first) + len(second) + topics.partitions
    expected = await reference(topics, count, Shape.tumbling(3_600_000))
    assert all(w.key != CLOSER for w in expected.closed)
    later = ("count", "mean", "std", "max")
    service = start_service(
        topics, "--workers", "1", *windowed(window, "--aggregate", ",".join(later))
    )
    services.append(service)
    await assert_outputs(topics, expected.closed, later)
    assert service.terminate() == 0, service.log()


async def test_a_changelog_ahead_of_the_group_stops_the_start_in_one_line(
    topics: Topics, services: list[Service]
) -> None:
    """The group's offset of a partition moved back behind what its changelog holds:
    the start stops with one line naming the changelog and both offsets, exit non-zero,
    rather than counting records twice."""
    await feed(topics, spread(random.Random("ahead"), 8, 400, T0, 10_000))
    options = ("--workers", "1", *windowed("tumbling:1s"))
    service = start_service(topics, *options)
    services.append(service)
    assert await wait_caught_up(topics, 60), service.log()
    assert service.terminate() == 0, service.log()
    ends = await end_offsets(topics.bootstrap, topics.input, topics.partitions)
    assert await committed_offsets(topics.bootstrap, topics.group) == ends
    # The service made its changelog compacted, with the input's partitions.
    assert await changelog_shape(topics) == (topics.partitions, "compact")
    moved = max(ends, key=lambda p: ends[p])
    assert ends[moved] > 3

    consumer = AIOKafkaConsumer(
        bootstrap_servers=topics.bootstrap, group_id=topics.group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        back = TopicPartition(topics.input, moved)
        consumer.assign([back])
        await consumer.commit({back: OffsetAndMetadata(3, "")})
    finally:
        await consumer.stop()

    service = start_service(topics, *options)
    services.append(service)
    code = await asyncio.to_thread(service.process.wait, 60)
    service.close()
    assert code != 0, service.log()
    last = service.lines[-1]  # the one line a user reads: what is wrong, what to do
    assert last.startswith(f"stream run: error: {topics.input}[{moved}]: "), service.log()
    assert changelog_topic(topics) in last, last
    assert f"offset {ends[moved]}" in last, last
    assert "is at 3" in last, last
    assert "Traceback" not in service.log(), service.log()
    # Nothing was read or written meanwhile.
    assert (await committed_offsets(topics.bootstrap, topics.group))[moved] == 3


async def stopped(service: Service) -> str:
    """Wait for a service that must stop by itself: its last line (exit code non-zero)."""
    code = await asyncio.to_thread(service.process.wait, 60)
    service.close()
    assert code != 0, service.log()
    assert "Traceback" not in service.log(), service.log()
    return service.lines[-1]


async def test_a_changelog_not_compacted_or_of_other_partitions_is_refused_in_one_line(
    topics: Topics, services: list[Service]
) -> None:
    """A changelog topic that exists already must be compacted (else its windows would
    be deleted by time) and have the input's partition count (else its state belongs to
    other partitions): either way the start stops in one line."""
    await feed(topics, spread(random.Random("shape"), 4, 40, T0, 1_000))
    name = changelog_topic(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, topics.partitions, 1, topic_configs={"cleanup.policy": "delete"})]
        )
        service = start_service(topics, "--workers", "1", *windowed("tumbling:1s"))
        services.append(service)
        last = await stopped(service)
        assert last.startswith(f"stream run: error: the changelog topic {name} "), last
        assert "cleanup.policy=delete" in last, last

        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, {"cleanup.policy": "compact"})]
        )
        await admin.create_partitions({name: NewPartitions(topics.partitions + 2)})
        service = start_service(topics, "--workers", "1", *windowed("tumbling:1s"))
        services.append(service)
        last = await stopped(service)
        assert last.startswith(
            f"stream run: error: the changelog topic {name} has {topics.partitions + 2} "
            f"partitions and {topics.input} has {topics.partitions}"
        ), last
    finally:
        await admin.close()
    assert await committed_offsets(topics.bootstrap, topics.group) == {}


async def test_max_windows_stops_the_service_in_one_line(
    topics: Topics, services: list[Service]
) -> None:
    """More windows open than --max-windows: the service stops with one line saying so,
    and nothing past it is committed: a start with room enough then counts every record
    once."""
    events = spread(random.Random("cap"), 200, 400, T0, 1_000)
    await feed(topics, events)
    service = start_service(
        topics, "--workers", "1", *windowed("tumbling:1h", "--max-windows", "50")
    )
    services.append(service)
    last = await stopped(service)
    assert last.startswith("stream run: error: "), last
    assert "more than --max-windows 50" in last, last
    assert await read_topic(topics.bootstrap, topics.output, 0, wait=1) == []

    await close_all(topics, T0 + 3 * 3_600_000)
    expected = await reference(topics, len(events) + topics.partitions, Shape.tumbling(3_600_000))
    service = start_service(
        topics, "--workers", "1", *windowed("tumbling:1h", "--max-windows", "1000")
    )
    services.append(service)
    await assert_outputs(topics, expected.closed, AGGREGATES)
    assert service.terminate() == 0, service.log()
