"""The chaos suite: kill things at bad moments and prove what the service promises.

Each test checks its run with :mod:`tests.chaos.checker`: lost, duplicated and
reordered records, per key, by the ``seq`` each demo event carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Iterator

import orjson
import pytest

from stream.config import TopicsSettings
from stream.kafka import create_topics
from tests.broker import OwnBroker, own_broker
from tests.chaos.checker import check, compare, ident, read_run
from tests.helpers import (
    FAST_REJOIN,
    MISBEHAVE,
    SLOW,
    Service,
    Topics,
    committed_offsets,
    end_offsets,
    feed_demo,
    get,
    metrics_url,
    read_topic,
    rss_of_group,
    send,
    start_service,
    worker_pids,
)

pytestmark = pytest.mark.broker


async def output_progress(topics: Topics) -> int:
    return sum((await end_offsets(topics.bootstrap, topics.output, topics.partitions)).values())


async def wait_progress(topics: Topics, at_least: int, service: Service, wait: float = 60) -> None:
    deadline = time.monotonic() + wait
    while await output_progress(topics) < at_least:
        if service.process.poll() is not None:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no progress to {at_least}:\n{service.log()}")
        await asyncio.sleep(0.1)


async def kill_and_restart(
    topics: Topics, services: list[Service], count: int, options: tuple[str, ...], kills: int
) -> list[tuple[dict[int, int], dict[int, int]]]:
    """Run to the end, SIGKILLing the service (its whole process group) ``kills`` times at
    random points, restarting it each time. Returns, per kill, the group's committed
    offsets and the output's end offsets right after it."""
    rng = random.Random(os.environ.get("STREAM_CHAOS_SEED", "chaos"))
    moments = sorted(rng.uniform(0.1, 0.85) for _ in range(kills))
    after_kill: list[tuple[dict[int, int], dict[int, int]]] = []
    service = start_service(topics, *options)
    services.append(service)
    for moment in moments:
        await wait_progress(topics, int(moment * count), service)
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        service.kill()
        await asyncio.sleep(0.5)  # requests already on the wire land
        after_kill.append(
            (
                await committed_offsets(topics.bootstrap, topics.group),
                await end_offsets(topics.bootstrap, topics.output, topics.partitions),
            )
        )
        service = start_service(topics, *options)
        services.append(service)
    return after_kill


async def test_exactly_once_survives_repeated_sigkill(
    topics: Topics, services: list[Service]
) -> None:
    count = 30_000
    await feed_demo(topics, count, seed=11)
    options = ("--guarantee", "exactly-once", "--workers", "2", *FAST_REJOIN)
    kills = await kill_and_restart(topics, services, count, options, kills=3)
    assert len(kills) == 3
    report = await check(topics, count)
    assert services[-1].terminate() == 0, services[-1].log()
    assert report.lost == [], report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.out_of_order == {}, report.summary()
    assert report.unexpected == [], report.summary()
    assert report.outputs == count, report.summary()


async def test_at_least_once_survives_repeated_sigkill_replaying_only_uncommitted(
    topics: Topics, services: list[Service]
) -> None:
    count = 30_000
    await feed_demo(topics, count, seed=12)
    inflight = 4_000
    options = (
        "--workers",
        "2",
        "--commit-interval",
        "0.5",
        "--max-inflight-records",
        str(inflight),
        *FAST_REJOIN,
    )
    kills = await kill_and_restart(topics, services, count, options, kills=3)
    inputs, outputs = await read_run(topics, count)
    assert services[-1].terminate() == 0, services[-1].log()
    report = compare(inputs, outputs)
    assert report.lost == [], report.summary()
    assert report.out_of_order == {}, report.summary()
    # Duplicates only from uncommitted work: whatever a run produced after kill i came
    # from input at or past what was committed when kill i happened.
    source = {ident(r.value): (r.partition, r.offset) for r in inputs}
    replays_of_committed = []
    for record in outputs:
        run = sum(1 for _, ends in kills if ends.get(record.partition, 0) <= record.offset)
        if run == 0:
            continue
        committed, _ = kills[run - 1]
        partition, offset = source[ident(record.value)]
        if offset < committed.get(partition, 0):
            replays_of_committed.append((ident(record.value), offset, committed[partition]))
    assert replays_of_committed == [], replays_of_committed[:5]
    # Each kill replays at most what was in flight plus what finished since the last
    # commit (0.5 s of output, well under 10,000 records here).
    assert report.duplicates <= len(kills) * (inflight + 10_000), report.summary()


async def test_worker_kill_poison_record_and_hang_lose_nothing(
    topics: Topics, services: list[Service]
) -> None:
    count = 4_000
    await feed_demo(topics, count // 2, seed=13)
    poison = orjson.dumps({"sensor_id": "poison", "seq": 0, "poison": True})
    hang = orjson.dumps({"sensor_id": "hang", "seq": 0, "hang": True})
    await send(topics.bootstrap, topics.input, [(b"poison", poison), (b"hang", hang)])
    events = await feed_demo(topics, count // 2, seed=14, first_seq_from=count // 2)
    assert events
    service = start_service(
        topics, "--transform", MISBEHAVE, "--workers", "2", "--batch-timeout", "3"
    )
    services.append(service)
    await wait_progress(topics, count // 8, service)
    # A worker dies mid-batch, for no reason of its own (the poison record may have
    # replaced some already: take one alive now).
    for _ in range(50):
        with contextlib.suppress(ProcessLookupError, IndexError):
            os.kill(worker_pids(service)[-1], signal.SIGKILL)
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("no live worker to kill:\n" + service.log())

    dead = await read_topic(topics.bootstrap, topics.dlq, 2, wait=120)
    reasons = {r.key: dict(r.headers)["stream.error.reason"].decode() for r in dead}
    assert reasons == {b"poison": "worker_crash", b"hang": "worker_timeout"}, service.log()
    report = await check(topics, count)
    assert report.lost == [(k, 0) for k in ("hang", "poison")], report.summary()
    assert report.out_of_order == {}, report.summary()
    assert service.terminate() == 0, service.log()
    assert "restarted as pid" in service.log()


async def test_two_instances_one_restarted_three_times_lose_nothing(
    topics: Topics, services: list[Service]
) -> None:
    count = 12_000
    await feed_demo(topics, count, seed=15)
    options = (
        "--transform",
        SLOW,
        "--workers",
        "1",
        "--max-inflight-records",
        "1000",
        "--batch-max-records",
        "100",
        *FAST_REJOIN,
    )
    steady = start_service(topics, *options)
    services.append(steady)
    bouncing = start_service(topics, *options)
    services.append(bouncing)
    for round_ in range(3):
        await wait_progress(topics, (round_ + 1) * count // 5, steady)
        assert bouncing.terminate() == 0, bouncing.log()
        await asyncio.sleep(1.0)
        bouncing = start_service(topics, *options)
        services.append(bouncing)
        bouncing.wait_for("assigned partitions")
    report = await check(topics, count)
    assert report.lost == [], report.summary()
    assert report.out_of_order == {}, report.summary()
    for service in (steady, bouncing):
        assert service.terminate() == 0, service.log()


async def test_sigterm_under_load_drains_and_a_restart_replays_nothing(
    topics: Topics, services: list[Service]
) -> None:
    count = 20_000
    await feed_demo(topics, count, seed=16)
    options = ("--workers", "2", "--drain-timeout", "20")
    first = start_service(topics, *options)
    services.append(first)
    await wait_progress(topics, count // 4, first)
    started = time.monotonic()
    assert first.terminate(timeout=30) == 0, first.log()
    assert time.monotonic() - started < 20
    second = start_service(topics, *options)
    services.append(second)
    report = await check(topics, count)
    # Ready before its SIGTERM: one sent while it still starts ends it by the signal's
    # default action, before its handlers exist (when the first drained nearly all).
    await asyncio.to_thread(second.wait_for, "assigned partitions")
    assert second.terminate() == 0, second.log()
    assert report.lost == [], report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.out_of_order == {}, report.summary()


async def test_slow_consumer_stays_bounded_and_in_the_group(
    topics: Topics, services: list[Service]
) -> None:
    """A producer ~10x faster than processing: memory stays bounded by the in-flight caps,
    heartbeats keep the membership (one assignment, no rebalance loop), lag is reported."""
    service = start_service(
        topics,
        "--transform",
        SLOW,
        "--workers",
        "1",
        "--max-inflight-records",
        "2000",
        "--batch-max-records",
        "200",
        "--lag-interval",
        "1",
    )
    services.append(service)
    url = metrics_url(service)
    service.wait_for("assigned partitions")
    rss: list[int] = []
    lags: list[float] = []
    for round_ in range(5):  # ~10,000 events/s offered against ~1,000/s processed
        await feed_demo(topics, 10_000, seed=100 + round_, first_seq_from=round_ * 10_000)
        rss.append(rss_of_group(service.process.pid))
        lags.append(await _metric_sum(url, "stream_consumer_lag"))
        await asyncio.sleep(0.5)
    assert lags[-1] > 20_000, lags  # the lag grows and is reported
    assert lags[-1] > lags[0], lags
    assert max(rss) < 600 * 1024 * 1024, rss  # the service and its workers, all together
    assert max(rss[2:]) < min(rss[:2]) * 1.5, rss  # it does not grow with the backlog
    assert service.log().count("assigned partitions") == 1, service.log()
    assert service.terminate() == 0, service.log()


async def _metric_sum(url: str, name: str) -> float:
    status, body = await asyncio.to_thread(get, url)
    assert status == 200
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith((name + "{", name + " "))
    )


# ---- the broker itself goes away --------------------------------------------------------


@pytest.fixture
def killable_broker() -> Iterator[OwnBroker]:
    """A broker of this test's own (it gets killed), from the project's broker script."""
    with own_broker() as broker:
        yield broker


async def test_broker_killed_and_restarted_mid_stream_loses_nothing(
    killable_broker: OwnBroker, services: list[Service]
) -> None:
    address = killable_broker.bootstrap
    name = f"chaos-{os.getpid()}-{int(time.time())}"
    topics = Topics(address, f"{name}-in", f"{name}-out", f"{name}-in.dlq", f"g-{name}", 4)
    await create_topics(
        TopicsSettings(
            bootstrap_servers=address,
            input_topic=topics.input,
            output_topic=topics.output,
            dlq_topic=topics.dlq,
        ),
        4,
        1,
    )
    count = 20_000
    await feed_demo(topics, count, seed=17)
    options = (
        "--transform",
        SLOW,
        "--workers",
        "2",
        "--max-inflight-records",
        "2000",
        "--batch-max-records",
        "200",
        "--connect-timeout",
        "120",
    )
    service = start_service(topics, *options)
    services.append(service)
    await wait_progress(topics, count // 5, service)

    await asyncio.to_thread(killable_broker.script, "kill")
    await asyncio.sleep(30)  # down for 30 s
    await asyncio.to_thread(killable_broker.start)

    # A service may resume by itself or exit non-zero for its supervisor to restart it;
    # either way nothing may be lost. Ours rides out an outage shorter than its delivery
    # timeout (120 s by default) without exiting.
    deadline = time.monotonic() + 120
    while await output_progress(topics) < count and time.monotonic() < deadline:
        if service.process.poll() is not None:
            assert service.process.returncode != 0, "it must not exit 0 with work left"
            service = start_service(topics, *options)
            services.append(service)
        await asyncio.sleep(0.5)
    report = await check(topics, count)
    assert report.lost == [], report.summary() + "\n" + service.log()
    assert report.out_of_order == {}, report.summary()
    assert len(services) == 1, "it should have resumed by itself:\n" + services[0].log()[-3000:]
    assert service.terminate() == 0, service.log()
    held_back = service.log().count("more like it in the last")
    assert service.log().count("Unable connect to node") < 20, "repeated errors are held back"
    assert held_back > 0
