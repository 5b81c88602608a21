"""In-flight accounting of the Assignment: what a batch holds counts against the caps
until it finishes, including outputs larger than their inputs and enrichment answers
held on their way to the workers (issue 20, item 4)."""

from __future__ import annotations

import asyncio

from stream.engine.assignment import Assignment
from stream.engine.batch import Batch
from stream.engine.progress import Progress
from stream.flow import InFlight
from stream.kafka.protocols import TopicPartition
from stream.metrics import Metrics
from stream.worker import BatchResult

P0 = TopicPartition("in", 0)


def assignment(inflight: InFlight) -> Assignment:
    metrics = Metrics("identity", "in", "out", "in.dlq")
    return Assignment(inflight, Progress(metrics, "in", "out", "in.dlq"))


async def test_outputs_larger_than_their_inputs_count_in_flight_until_finished() -> None:
    flow = InFlight(1000, 10_000)
    owned = assignment(flow)
    part = owned.add(P0)
    result: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
    values: list[bytes | None] = [b"{}"] * 4
    batch = Batch(part.offsets.track(0, 3, 4), [b"k"] * 4, values, [0, 1, 2, 3], [0] * 4, 8, result)
    owned.track(part, batch)
    assert (flow.records, flow.bytes) == (4, 8)
    result.set_result(BatchResult([b"x" * 3000] * 4, [], 0.0, 0))  # merged answers: 12 kB
    await asyncio.sleep(0)  # the done callback
    assert flow.bytes == 12_000
    assert flow.full  # past the 10 kB cap: fetching stops
    owned.finish(part, batch)
    assert (flow.records, flow.bytes, part.nbytes) == (0, 0, 0)


async def test_a_dropped_partition_gives_back_what_its_outputs_held() -> None:
    flow = InFlight(1000, 1 << 20)
    owned = assignment(flow)
    part = owned.add(P0)
    result: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
    batch = Batch(part.offsets.track(0, 0, 1), [b"k"], [b"{}"], [0], [0], 2, result)
    owned.track(part, batch)
    result.set_result(BatchResult([b"y" * 500], [], 0.0, 0))
    await asyncio.sleep(0)
    assert flow.bytes == 500
    owned.drop(part)
    assert (flow.records, flow.bytes) == (0, 0)


def test_bytes_held_elsewhere_count_against_the_byte_cap() -> None:
    held = [0]
    flow = InFlight(1000, 1000, lambda: held[0])
    flow.add(1, 400)
    assert not flow.full
    held[0] = 600  # enrichment answers on their way to the workers
    assert flow.full
    assert flow.room == 0


async def test_the_in_flight_gauges_follow_tracked_work() -> None:
    """stream_inflight_messages rises when a batch is tracked, not only when one ends."""
    metrics = Metrics("identity", "in", "out", "in.dlq")
    owned = Assignment(InFlight(1000, 1 << 20), Progress(metrics, "in", "out", "in.dlq"))
    part = owned.add(P0)
    result: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
    batch = Batch(
        part.offsets.track(0, 2, 3), [b"k"] * 3, [b"{}"] * 3, [0, 1, 2], [0] * 3, 6, result
    )
    owned.track(part, batch)
    assert metrics.registry.get_sample_value("stream_inflight_messages") == 3
    assert metrics.registry.get_sample_value("stream_inflight_bytes") == 6
    result.cancel()
