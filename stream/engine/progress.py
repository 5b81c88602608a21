"""What the engine has done so far: records read, written and dead-lettered, in the
metrics and in totals for the summary lines, and when work last finished."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stream.engine.assignment import Partition
from stream.engine.batch import Batch
from stream.flow import InFlight
from stream.hints import DeadLetterStreak
from stream.metrics import Metrics
from transforms.reasons import label

log = logging.getLogger("stream")


@dataclass(slots=True)
class Counts:
    """Totals for the summary lines."""

    read: int = 0
    written: int = 0
    dead_lettered: int = 0


class Progress:
    def __init__(
        self,
        metrics: Metrics,
        input_topic: str,
        output_topic: str,
        dead_letter_topic: str,
        *,
        streak: DeadLetterStreak | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.streak = streak  # warns when record after record is dead-lettered for one reason
        self.clock = clock
        self.wall = wall
        self.counts = Counts()
        self.last_progress = clock()  # clock time work last finished
        self.last_fetch = clock()  # clock time records were last fetched
        self._consumed = metrics.consumed.labels(input_topic)
        self._written = metrics.produced.labels(output_topic)
        self._dead = metrics.produced.labels(dead_letter_topic)

    def fetched(self, _part: Partition, count: int, batch_sizes: list[int]) -> None:
        self._consumed.inc(count)
        self.counts.read += count
        self.last_fetch = self.clock()
        for size in batch_sizes:
            self.metrics.batch_size.observe(size)

    def finished(self, _part: Partition, batch: Batch) -> None:
        count, failed = len(batch), len(batch.errors)
        m = self.metrics
        out = batch.window_out  # a windowed run writes its windows, not one per record
        written = count - failed if out is None else len(out.outputs)
        if out is not None and out.letters:  # windows too large for the output topic
            self._dead.inc(len(out.letters))
            self.counts.dead_lettered += len(out.letters)
        self._written.inc(written)
        self.counts.written += written
        if failed:
            self._dead.inc(failed)
            self.counts.dead_lettered += failed
            for _, reason, _message in batch.errors:
                m.failed.labels(label(reason)).inc()
                m.dead_lettered.labels(label(reason)).inc()
        if self.streak is not None:
            reasons = [reason for _, reason, _ in batch.errors]
            if warning := self.streak.observe(count, reasons, self.clock()):
                log.warning("%s", warning)
        now = self.wall()
        stamps = np.fromiter(batch.timestamps_ms, dtype=np.float64, count=count)
        m.latency.observe_many(np.maximum(0.0, now - stamps / 1000))
        m.last_processed.set(now)
        self.last_progress = self.clock()

    def inflight_changed(self, inflight: InFlight) -> None:
        self.metrics.inflight_messages.set(inflight.records)
        self.metrics.inflight_bytes.set(inflight.bytes)
