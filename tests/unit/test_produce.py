"""Pacing of ``stream produce`` (``stream.produce._next_chunk``): every event once, in
order, in batches rather than one at a time, and never ahead of ``--rate``."""

from __future__ import annotations

import time

from stream.produce import CHUNK, Event, _next_chunk


def _events(n: int) -> list[Event]:
    return [Event(b"k%d" % (i % 7), b"%d" % i) for i in range(n)]


async def _drain(events: list[Event], rate: float) -> tuple[list[list[Event]], float]:
    source = iter(events)
    chunks: list[list[Event]] = []
    sent = 0
    started = time.monotonic()
    while chunk := await _next_chunk(source, rate, started, sent):
        chunks.append(chunk)
        sent += len(chunk)
    return chunks, time.monotonic() - started


async def test_unpaced_events_come_in_chunks_in_order() -> None:
    events = _events(2 * CHUNK + 5)
    chunks, _ = await _drain(events, 0.0)
    assert [len(c) for c in chunks] == [CHUNK, CHUNK, 5]
    assert [e for c in chunks for e in c] == events


async def test_paced_events_are_batched_and_never_ahead_of_the_rate() -> None:
    rate, count = 2000.0, 1000  # half a second of events
    events = _events(count)
    chunks, seconds = await _drain(events, rate)
    assert [e for c in chunks for e in c] == events
    # The last event is due at (count - 1) / rate: nothing may leave before its time.
    assert seconds >= (count - 1) / rate
    # Batched per tick (about 10 events each at this rate), not one send per event.
    assert len(chunks) < count / 4, len(chunks)


async def test_a_slow_rate_ends_without_waiting_after_the_last_event() -> None:
    chunks, seconds = await _drain(_events(3), 2.0)  # due at 0, 0.5 and 1 s
    assert [len(c) for c in chunks] == [1, 1, 1]
    assert 1.0 <= seconds < 1.4  # not 1.5: the end is seen before waiting for a 4th
