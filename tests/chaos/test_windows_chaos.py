"""Windows (``--window``) exactly once while things die: SIGKILLs of the whole service
mid-stream and during a restore, and members joining and dying. A read_committed reader
of the output must see exactly the windows of the reference model
(:mod:`tests.windows_reference`, no code shared with the service), none twice, and the
dead-letter topic exactly its late records, each once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable

import pytest

from tests.helpers import (
    FAST_REJOIN,
    Service,
    Topics,
    committed_offsets,
    drop_topics,
    make_topics,
    start_service,
    wait_caught_up,
)
from tests.windows_broker import (
    T0,
    aborted_changelog_records,
    assert_outputs,
    close_all,
    dead_letters,
    drop_changelog,
    event,
    feed,
    kill_mid_transaction,
    kill_while_restoring,
    metric,
    mid_transaction,
    owned,
    reason,
    reference,
    source,
    spread,
    windowed,
)
from tests.windows_reference import AGGREGATES, Outcome, Shape

pytestmark = pytest.mark.broker

SECOND = 1000
HOUR = 3_600_000


@pytest.fixture
async def topics(bootstrap: str) -> AsyncIterator[Topics]:
    """Fresh topics of four partitions; dropped at the end with the windows' changelog."""
    made = await make_topics(bootstrap)
    yield made
    await drop_changelog(made)
    await drop_topics(made)


@pytest.fixture
async def single(bootstrap: str) -> AsyncIterator[Topics]:
    """Fresh topics of one partition (one restore holds every window), dropped alike."""
    made = await make_topics(bootstrap, partitions=1)
    yield made
    await drop_changelog(made)
    await drop_topics(made)


async def progressed(topics: Topics, service: Service, beyond: int, wait: float = 60) -> int:
    """Wait until the group has committed more than ``beyond`` input records in all (the
    service is processing); the sum committed then."""
    deadline = time.monotonic() + wait
    while True:
        done = sum(
            max(o, 0) for o in (await committed_offsets(topics.bootstrap, topics.group)).values()
        )
        if done > beyond:
            return done
        assert service.process.poll() is None, service.log()
        assert time.monotonic() < deadline, f"no progress past {beyond}:\n{service.log()}"
        await asyncio.sleep(0.05)


async def check_run(topics: Topics, sent: int, shape: Shape) -> Outcome:
    """Close every window, then compare the output and the dead letters with the
    reference over what the input topic holds."""
    await close_all(topics, T0 + 10 * HOUR)
    expected = await reference(topics, sent + topics.partitions, shape)
    assert len(expected.closed) > 100
    await assert_outputs(topics, expected.closed, AGGREGATES, wait=120)
    late = await dead_letters(topics, len(expected.late))
    assert Counter(map(source, late)) == Counter(expected.late)  # each late record once
    assert {reason(r) for r in late} <= {"late"}
    assert await wait_caught_up(topics, 60)
    return expected


async def feed_until(topics: Topics, done: asyncio.Event, tail: int = 2) -> int:
    """Continuous input, 800 records every half second, until ``done`` is set, then
    ``tail`` chunks more. Event time moves on two seconds a chunk (out of order by up to
    400 ms, so some records are late): every chunk closes windows. How many records were
    sent."""
    rng = random.Random("windows-chaos")
    sent, chunk, left = 0, 0, tail
    while left > 0:
        start = T0 + chunk * 2 * SECOND
        sent += await feed(topics, spread(rng, 24, 800, start, 2 * SECOND, jitter=400))
        chunk += 1
        left -= done.is_set()
        await asyncio.sleep(0.5)
    return sent


async def stop_feeding(feeding: asyncio.Task[int]) -> None:
    """A test that failed midway: the feeding stops with it."""
    if not feeding.done():
        feeding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeding


async def test_windows_exactly_once_across_sigkills_mid_stream(
    topics: Topics, services: list[Service]
) -> None:
    """tumbling:1s, grace 300ms, under continuous input: the service (with its workers)
    is SIGKILLed twice with a transaction open, and started again each time."""
    options = ("--workers", "2", *FAST_REJOIN, *windowed("tumbling:1s", "--grace", "300ms"))
    service = start_service(topics, *options)
    services.append(service)
    await asyncio.to_thread(service.wait_for, "assigned partitions")
    killed = asyncio.Event()
    feeding = asyncio.create_task(feed_until(topics, killed))
    try:
        done = 0
        for _kill in range(2):
            await asyncio.to_thread(service.wait_for, "assigned partitions")
            done = await progressed(topics, service, done + 500)
            await kill_mid_transaction(topics, service)
            service = start_service(topics, *options)
            services.append(service)
        killed.set()
        sent = await feeding
    finally:
        await stop_feeding(feeding)
    expected = await check_run(topics, sent, Shape.tumbling(SECOND, 300))
    assert expected.late  # the jitter made some
    assert "restored" in service.log()  # the last start carried state on from the changelog
    # The kills came with transactions open: what those wrote was aborted, not applied.
    assert await aborted_changelog_records(topics) > 0
    assert service.terminate() == 0, service.log()


async def test_windows_exactly_once_across_a_sigkill_during_restore(
    single: Topics, services: list[Service]
) -> None:
    """100,000 windows open in one partition (one key each, tumbling:1h): the service
    stops, starts again and is SIGKILLed while it restores them; the next start
    restores every window, adds more records to them, and closes them all. /readyz
    said it was restoring."""
    topics = single
    keys = 100_000
    first = [event(f"key-{i:06d}", T0 + i % 1000, float(i % 997)) for i in range(keys)]
    options = ("--workers", "1", *FAST_REJOIN, *windowed("tumbling:1h"))
    await feed(topics, first)
    service = start_service(topics, *options)
    services.append(service)
    assert await wait_caught_up(topics, 120), service.log()
    assert service.terminate() == 0, service.log()

    service = start_service(topics, *options)
    services.append(service)
    ready = await kill_while_restoring(service)
    assert not any("restored" in line for line in service.lines), service.log()

    service = start_service(topics, *options)
    services.append(service)
    line = await asyncio.to_thread(service.wait_for, "restored", 120)
    assert f"restored {keys} windows" in line, line
    assert await metric(service, "stream_windows_open", keys) == keys
    assert await metric(service, "stream_window_restore_seconds_count", 1) == 1
    rng = random.Random("restore")
    second = [
        event(f"key-{rng.randrange(keys):06d}", T0 + 1_000 + i, [rng.uniform(1, 9)] * 2)
        for i in range(3_000)
    ]
    await feed(topics, second)
    expected = await check_run(topics, len(first) + len(second), Shape.tumbling(HOUR))
    assert len(expected.closed) == keys
    assert expected.late == []
    assert service.terminate() == 0, service.log()
    # While it restored, /readyz said so (not ready, and why).
    assert "restoring window state from the changelog" in ready, ready


async def test_windows_exactly_once_as_members_join_die_and_come_back_fenced(
    topics: Topics, services: list[Service]
) -> None:
    """hopping:2s/1s, grace 200ms, under continuous input: two members; a third joins
    (partitions move to it with their windows); then, each with a transaction open, one
    is SIGKILLed and one frozen (SIGSTOP, with its workers) past its session timeout, so
    the third takes every partition and restores their windows from the changelog; the
    frozen one wakes (SIGCONT) as a zombie: fenced, its in-memory windows must be
    dropped, not merged into what it is given next."""
    options = ("--workers", "1", *FAST_REJOIN, *windowed("hopping:2s/1s", "--grace", "200ms"))

    def member() -> Service:
        service = start_service(topics, *options)
        services.append(service)
        return service

    killed, frozen = member(), member()
    for service in (killed, frozen):
        await asyncio.to_thread(service.wait_for, "assigned partitions")
    every = [f"{topics.input}[{p}]" for p in range(topics.partitions)]
    changed = asyncio.Event()
    feeding = asyncio.create_task(feed_until(topics, changed, tail=4))
    try:
        done = await progressed(topics, killed, 1_000)
        marks = [len(killed.lines), len(frozen.lines)]
        joined = member()
        await asyncio.to_thread(joined.wait_for, "assigned partitions")
        done = await progressed(topics, joined, done + 1_000)
        for service, mark in zip((killed, frozen), marks, strict=True):  # after the join
            await asyncio.to_thread(wait_for_line, service, mark, "assigned partitions", 30)
        before = len(joined.lines)
        await mid_transaction(topics, frozen, signal.SIGSTOP, owned(frozen, topics))
        try:
            await mid_transaction(topics, killed, signal.SIGKILL, owned(killed, topics))
            taken = await asyncio.to_thread(
                wait_for_line, joined, before, "assigned partitions", 60, every
            )
            await progressed(topics, joined, done + 1_000)
        finally:
            os.killpg(frozen.process.pid, signal.SIGCONT)
        changed.set()
        sent = await feeding
    finally:
        await stop_feeding(feeding)
    assert all(p in taken for p in every), taken
    await check_run(topics, sent, Shape(2 * SECOND, SECOND, 200))
    assert "restored" in joined.log()  # partitions came to it with their windows
    # Fenced when it woke (or its partitions revoked before it wrote again): either way
    # nothing of what it held in memory reached the output (check_run above).
    assert "lost its transactional id" in frozen.log() or "revoked" in frozen.log()
    for service in (joined, frozen):
        assert service.terminate() == 0, service.log()
    # Being fenced is lost ownership, handled: no stray errors in the user's log.
    assert "exception was never retrieved" not in frozen.log(), frozen.log()


def wait_for_line(
    service: Service, after: int, text: str, timeout: float, also: Iterable[str] = ()
) -> str:
    """The first line of the service's log past its first ``after`` that holds ``text``
    and every one of ``also``."""
    wanted = [text, *also]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in service.lines[after:]:
            if all(w in line for w in wanted):
                return line
        time.sleep(0.05)
    raise AssertionError(f"no line with {wanted} in the log:\n" + service.log())
