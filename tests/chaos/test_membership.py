"""Exactly-once while the group keeps changing: several members share eight partitions
under continuous input while members are SIGKILLed, SIGTERMed and added."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from tests.chaos.checker import check
from tests.helpers import (
    FAST_REJOIN,
    Service,
    Topics,
    drop_topics,
    feed_demo,
    make_topics,
    start_service,
)

pytestmark = pytest.mark.broker

CHUNK = 2_000
CHUNKS = 12


@pytest.fixture
async def eight(bootstrap: str) -> AsyncIterator[Topics]:
    made = await make_topics(bootstrap, partitions=8)
    yield made
    await drop_topics(made)


async def test_exactly_once_through_six_membership_changes(
    eight: Topics, services: list[Service]
) -> None:
    options = (
        "--guarantee",
        "exactly-once",
        "--workers",
        "1",
        "--drain-timeout",
        "5",
        *FAST_REJOIN,
    )

    def member() -> Service:
        service = start_service(eight, *options)
        services.append(service)
        return service

    async def feed() -> None:
        for chunk in range(CHUNKS):
            await feed_demo(eight, CHUNK, seed=40, first_seq_from=chunk * CHUNK)
            await asyncio.sleep(0.5)

    members = [member() for _ in range(3)]
    for service in members:
        await asyncio.to_thread(service.wait_for, "assigned partitions")
    feeding = asyncio.create_task(feed())
    rng = random.Random("membership")
    changes = ["kill", "add", "term", "add", "kill", "add", "term"]
    for change in changes:
        await asyncio.sleep(rng.uniform(2.0, 4.0))
        if change == "add":
            members.append(member())
            continue
        victim = members.pop(rng.randrange(len(members)))
        if change == "kill":
            victim.kill()
        else:
            assert await asyncio.to_thread(victim.terminate, 60) == 0, victim.log()
    await feeding
    assert len(members) >= 2
    report = await check(eight, CHUNK * CHUNKS)
    for service in members:
        assert await asyncio.to_thread(service.terminate, 60) == 0, service.log()
    assert report.lost == [], report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.out_of_order == {}, report.summary()
    assert report.outputs == CHUNK * CHUNKS, report.summary()
